// Real TCP sockets for the virtual board's `socket` module, called synchronously from MicroPython.
//
// The WebAssembly MicroPython has no sockets, and its interpreter thread cannot wait for Node's event
// loop (a socket call must return before the Python code goes on).  So the sockets live in a worker
// thread of their own (`net.mjs` run as a worker); the interpreter thread posts one request over a
// MessagePort and sleeps in `Atomics.wait` until that worker bumps a shared counter, then takes the
// answer with `receiveMessageOnPort`.  Every wait has the socket's timeout; every failure comes back
// as MicroPython's errno value (what an ESP32's `socket` raises): never an exception across threads.
//
// Requests: TCP {op: "connect", host, port, timeout_ms} -> {id}; {op: "send", id, data (hex)} -> {n};
// {op: "recv", id, n, timeout_ms} -> {data (hex, "" at end of stream)}; UDP {op: "udp"} -> {id};
// {op: "sendto", id, host, port, data} -> {n}; {op: "recv", ...} -> {data, host, port} (one datagram,
// cut to n bytes); both {op: "close", id}; {op: "close_all"} (a board reset closes every socket).
// timeout_ms null: wait without end; 0: do not wait.  Answers with an error are {errno}.
import dgram from "node:dgram";
import net from "node:net";
import {
  MessageChannel, Worker, isMainThread, parentPort, receiveMessageOnPort, workerData,
} from "node:worker_threads";

// MicroPython's own errno numbers (its `errno` module on the board and on an ESP32 alike).
export const ERRNO = {
  EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EINVAL: 22, EPIPE: 32, ENOTCONN: 107,
  ECONNABORTED: 103, ECONNRESET: 104, ETIMEDOUT: 110, ECONNREFUSED: 111, EHOSTUNREACH: 113,
  EALREADY: 114, EINPROGRESS: 115,
};
const RX_PAUSE_BYTES = 64 * 1024; // stop reading from the peer beyond this, as a full TCP window would

function errnoOf(err) {
  const known = ERRNO[err?.code];
  if (known !== undefined) return known;
  if (err?.code === "ENETUNREACH") return ERRNO.EHOSTUNREACH;
  return ERRNO.EIO;
}

// Interpreter side: one bridge per board worker; `call` blocks this thread until the answer is in.
export class NetBridge {
  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1; // no listener on purpose: answers are taken with receiveMessageOnPort
    this.counter = new Int32Array(new SharedArrayBuffer(4));
    this.worker = new Worker(new URL(import.meta.url), {
      workerData: { port: port2, counter: this.counter },
      transferList: [port2],
    });
    this.worker.unref();
  }

  call(request) {
    let seen = Atomics.load(this.counter, 0);
    this.port.postMessage(request);
    for (;;) {
      const got = receiveMessageOnPort(this.port);
      if (got !== undefined) return got.message;
      Atomics.wait(this.counter, 0, seen, 1000);
      seen = Atomics.load(this.counter, 0);
    }
  }
}

// Socket side: the sockets, their received bytes and whoever waits for them.
class Sockets {
  constructor() {
    this.open = new Map(); // id -> state
    this.nextId = 1;
  }

  async handle(req) {
    switch (req.op) {
      case "connect": return this.connect(req);
      case "udp": return this.udp();
      case "sendto": return this.sendto(req);
      case "send": return this.send(req);
      case "recv": return this.recv(req);
      case "close": return this.close(req.id);
      case "close_all":
        for (const id of [...this.open.keys()]) this.close(id);
        return {};
      default: return { errno: ERRNO.EINVAL };
    }
  }

  connect({ host, port, timeout_ms }) {
    return new Promise((resolve) => {
      const sock = net.connect({ host, port });
      const state = { sock, rx: [], rxBytes: 0, eof: false, errno: null, wake: null };
      let timer = null;
      const done = (answer) => {
        if (timer !== null) clearTimeout(timer);
        sock.removeListener("connect", onConnect);
        resolve(answer);
      };
      const onConnect = () => {
        const id = this.nextId++;
        this.open.set(id, state);
        done({ id });
      };
      sock.once("connect", onConnect);
      sock.on("error", (err) => {
        state.errno = errnoOf(err);
        if (!this.isOpen(state)) done({ errno: state.errno });
        state.wake?.();
      });
      sock.on("data", (chunk) => {
        state.rx.push(chunk);
        state.rxBytes += chunk.length;
        if (state.rxBytes > RX_PAUSE_BYTES) sock.pause();
        state.wake?.();
      });
      sock.on("end", () => {
        state.eof = true;
        state.wake?.();
      });
      sock.on("close", () => {
        state.eof = true;
        state.wake?.();
      });
      if (timeout_ms !== null && timeout_ms !== undefined) {
        timer = setTimeout(() => {
          sock.destroy();
          done({ errno: timeout_ms === 0 ? ERRNO.EINPROGRESS : ERRNO.ETIMEDOUT });
        }, timeout_ms);
      }
    });
  }

  udp() {
    const sock = dgram.createSocket("udp4");
    const state = { sock, udp: true, rx: [], rxBytes: 0, eof: false, errno: null, wake: null };
    sock.on("message", (msg, rinfo) => {
      if (state.rx.length < 16) state.rx.push({ msg, rinfo }); // a full receive queue drops, as lwIP does
      state.wake?.();
    });
    sock.on("error", (err) => {
      state.errno = errnoOf(err);
      state.wake?.();
    });
    const id = this.nextId++;
    this.open.set(id, state);
    return { id };
  }

  sendto({ id, host, port, data }) {
    const state = this.open.get(id);
    if (state === undefined || !state.udp) return { errno: ERRNO.EBADF };
    const buf = Buffer.from(data, "hex");
    state.sock.send(buf, port, host);
    return { n: buf.length };
  }

  isOpen(state) {
    for (const s of this.open.values()) if (s === state) return true;
    return false;
  }

  send({ id, data }) {
    const state = this.open.get(id);
    if (state === undefined) return { errno: ERRNO.EBADF };
    if (state.errno !== null) return { errno: state.errno };
    if (state.sock.destroyed || state.sock.writableEnded) return { errno: ERRNO.ENOTCONN };
    const buf = Buffer.from(data, "hex");
    state.sock.write(buf);
    return { n: buf.length };
  }

  recv({ id, n, timeout_ms }) {
    const state = this.open.get(id);
    if (state === undefined) return { errno: ERRNO.EBADF };
    const take = () => {
      if (state.udp) {
        if (state.rx.length === 0) return state.errno !== null ? { errno: state.errno } : null;
        const { msg, rinfo } = state.rx.shift();
        return { data: msg.subarray(0, n).toString("hex"), host: rinfo.address, port: rinfo.port };
      }
      if (state.rxBytes > 0) {
        const all = Buffer.concat(state.rx);
        const out = all.subarray(0, n);
        const rest = all.subarray(n);
        state.rx = rest.length ? [rest] : [];
        state.rxBytes = rest.length;
        if (state.rxBytes <= RX_PAUSE_BYTES && state.sock.isPaused()) state.sock.resume();
        return { data: out.toString("hex") };
      }
      if (state.errno !== null) return { errno: state.errno };
      if (state.eof) return { data: "" };
      return null;
    };
    const now = take();
    if (now !== null) return now;
    if (timeout_ms === 0) return { errno: ERRNO.EAGAIN };
    return new Promise((resolve) => {
      let timer = null;
      state.wake = () => {
        const answer = take();
        if (answer === null) return;
        state.wake = null;
        if (timer !== null) clearTimeout(timer);
        resolve(answer);
      };
      if (timeout_ms !== null && timeout_ms !== undefined) {
        timer = setTimeout(() => {
          state.wake = null;
          resolve({ errno: ERRNO.ETIMEDOUT });
        }, timeout_ms);
      }
    });
  }

  close(id) {
    const state = this.open.get(id);
    if (state === undefined) return {};
    this.open.delete(id);
    if (state.udp) state.sock.close();
    else state.sock.destroy();
    return {};
  }
}

function serve({ port, counter }) {
  const sockets = new Sockets();
  port.on("message", async (req) => {
    let answer;
    try {
      answer = await sockets.handle(req);
    } catch (err) {
      process.stderr.write(`net.mjs: ${req.op} failed: ${err.stack ?? err}\n`);
      answer = { errno: ERRNO.EIO };
    }
    port.postMessage(answer);
    Atomics.add(counter, 0, 1);
    Atomics.notify(counter, 0);
  });
}

if (!isMainThread && workerData?.counter instanceof Int32Array && workerData.port) serve(workerData);
