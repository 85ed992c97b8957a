// The virtual ESP32's hardware as MicroPython sees it: the `_board` JS module behind `machine`,
// `network`, `socket` and the UARTs (their Python side is in board_lib/).
//
// What an ESP32 keeps across resets is kept here the same way:
// - SharedState (a SharedArrayBuffer owned by board.mjs's main thread): RTC slow memory, the RTC
//   clock, the watchdog and the last reset cause.  It outlives every interpreter and worker (soft
//   reset, machine.reset(), deep sleep, watchdog reset, Ctrl-C) and is lost only at power-on, when
//   the process starts: the clock then reads 2000-01-01 00:00:00 UTC until NTP sets it.
//   It also lists the host fds the UARTs hold, so the main thread can close those of a worker it ended.
// - Wi-Fi association and open sockets live in the board worker: a soft reset closes the sockets
//   and keeps the association; every hardware reset drops both (and releases the UARTs).
// The outside world (sensor values, Wi-Fi networks in range, host names, the host serial device on the
// RS485 UART's pins) is the environment file the host writes (hardware/virtual_board.py), re-read
// when it changed.
//
// Every function returns plain values or JSON text and never throws: a JS exception would not become
// a Python one; errors come back as MicroPython errno numbers for the Python side to raise.  Numbers
// beyond 32 bits travel as text both ways (the bridge cuts integers to 32 bits).
import crypto from "node:crypto";
import fs from "node:fs";
import { ERRNO, NetBridge } from "./net.mjs";

// machine.reset_cause() values on an ESP32, and the ROM bootloader's line for each.
export const RESET = { PWRON: 1, HARD: 2, WDT: 3, DEEPSLEEP: 4, SOFT: 5 };
const ROM_LINE = {
  1: "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
  2: "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
  3: "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
  4: "rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
  5: "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
};
export const RTC_MEMORY_BYTES = 2048; // MicroPython's RTC.memory() on an ESP32
const UART_SLOTS = 4; // host serial devices the board's UARTs may hold open at once
const UART_POLL_MS = 1;
const POWER_ON_CLOCK_MS = Date.UTC(2000, 0, 1);
const EAI_FAIL = -202; // what an ESP32's getaddrinfo raises for a name it cannot resolve
const WIFI_JOIN_MS = 300; // association and DHCP; a real join takes 1-3 s
const WIFI_GIVE_UP_MS = 2000; // a scan that finds no such network, or a rejected handshake
// network.WLAN.status() values on an ESP32.
export const WIFI_STATUS = {
  IDLE: 1000, CONNECTING: 1001, GOT_IP: 1010, NO_AP_FOUND: 201, WRONG_PASSWORD: 202, BEACON_TIMEOUT: 200,
};

export function romLine(cause) {
  return `ets Jul 29 2019 12:21:46\r\n\r\n${ROM_LINE[cause] ?? ROM_LINE[1]}\r\n`;
}

// State that survives everything but power loss, shared by the main thread and every board worker.
export class SharedState {
  static create() {
    const state = new SharedState(new SharedArrayBuffer(64 + RTC_MEMORY_BYTES));
    state.clockOffsetMs = POWER_ON_CLOCK_MS - Date.now();
    state.cause = RESET.PWRON;
    state.i32.fill(-1, 4); // no UART holds a host fd
    return state;
  }

  constructor(sab) {
    this.sab = sab;
    this.f64 = new Float64Array(sab, 0, 2); // [0] clock offset from the host clock (ms), [1] watchdog fed at
    // [0] watchdog timeout ms (0: off), [1] RTC memory length, [2] cause, [4..] host fds the UARTs hold
    this.i32 = new Int32Array(sab, 16, 4 + UART_SLOTS);
    this.rtc = new Uint8Array(sab, 64, RTC_MEMORY_BYTES);
  }

  // A slot for a UART's host fd (-1 when all are taken): kept here so that the main thread can close
  // the fds of a worker it ended (a reset releases the UARTs).
  claimUart(fd) {
    for (let i = 4; i < 4 + UART_SLOTS; i++) {
      if (Atomics.compareExchange(this.i32, i, -1, fd) === -1) return i - 4;
    }
    return -1;
  }

  uartFd(slot) { return slot >= 0 && slot < UART_SLOTS ? Atomics.load(this.i32, 4 + slot) : -1; }

  releaseUart(slot) {
    const fd = Atomics.exchange(this.i32, 4 + slot, -1);
    if (fd >= 0) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
  }

  releaseUarts() {
    for (let slot = 0; slot < UART_SLOTS; slot++) this.releaseUart(slot);
  }

  uartFds() {
    return Array.from({ length: UART_SLOTS }, (_, slot) => this.uartFd(slot));
  }

  // Closes the fds of uartFds() still in their slots (a worker that is gone held them).
  releaseUartFds(fds) {
    fds.forEach((fd, slot) => {
      if (fd >= 0 && Atomics.compareExchange(this.i32, 4 + slot, fd, -1) === fd) {
        try {
          fs.closeSync(fd);
        } catch {
          // already closed
        }
      }
    });
  }

  get clockOffsetMs() { return this.f64[0]; }
  set clockOffsetMs(ms) { this.f64[0] = ms; }
  get cause() { return Atomics.load(this.i32, 2); }
  set cause(c) { Atomics.store(this.i32, 2, c); }

  get watchdogMs() { return Atomics.load(this.i32, 0); }

  startWatchdog(ms) {
    this.f64[1] = Date.now();
    Atomics.store(this.i32, 0, ms);
  }

  feedWatchdog() { this.f64[1] = Date.now(); }

  stopWatchdog() { Atomics.store(this.i32, 0, 0); }

  // True when the watchdog runs and was not fed in time.
  watchdogExpired(now = Date.now()) {
    const ms = this.watchdogMs;
    return ms > 0 && now - this.f64[1] > ms;
  }

  rtcRead() { return Buffer.from(this.rtc.subarray(0, Atomics.load(this.i32, 1))); }

  rtcWrite(buf) {
    this.rtc.set(buf);
    Atomics.store(this.i32, 1, buf.length);
  }
}

// The environment file, parsed again only when it changed.
class Environment {
  constructor(file) {
    this.file = file;
    this.mtime = -1;
    this.text = "{}";
    this.value = {};
    this.version = 0;
  }

  refresh() {
    if (!this.file) return;
    let st;
    try {
      st = fs.statSync(this.file);
    } catch {
      return; // not written yet: the previous state stands
    }
    if (st.mtimeMs === this.mtime) return;
    try {
      const text = fs.readFileSync(this.file, "utf8");
      this.value = JSON.parse(text);
      this.text = text;
      this.version++;
      this.mtime = st.mtimeMs;
    } catch (err) {
      process.stderr.write(`board: environment ${this.file} unreadable, keeping the last one: ${err.message}\n`);
      this.mtime = st.mtimeMs;
    }
  }
}

// The station interface: joins a network in range when the SSID (and a password, if the network has
// one) match; the association survives soft resets.
class Wifi {
  constructor(env) {
    this.env = env;
    this.active = false;
    this.ssid = null;
    this.password = null;
    this.since = 0;
  }

  network() {
    this.env.refresh();
    return (this.env.value.wifi ?? []).find((n) => n.ssid === this.ssid);
  }

  status() {
    if (!this.active || this.ssid === null) return WIFI_STATUS.IDLE;
    const elapsed = Date.now() - this.since;
    const found = this.network();
    if (found === undefined) return elapsed < WIFI_GIVE_UP_MS ? WIFI_STATUS.CONNECTING : WIFI_STATUS.NO_AP_FOUND;
    if (found.password != null && found.password !== this.password) {
      return elapsed < WIFI_GIVE_UP_MS ? WIFI_STATUS.CONNECTING : WIFI_STATUS.WRONG_PASSWORD;
    }
    return elapsed < WIFI_JOIN_MS ? WIFI_STATUS.CONNECTING : WIFI_STATUS.GOT_IP;
  }

  connected() { return this.status() === WIFI_STATUS.GOT_IP; }

  command(op, arg) {
    switch (op) {
      case "active":
        if (arg !== null) {
          this.active = Boolean(arg);
          if (!this.active) this.ssid = null;
        }
        return { active: this.active };
      case "connect":
        if (!this.active) return { errno: ERRNO.EPERM }; // "Wifi Not Started"
        this.ssid = arg.ssid;
        this.password = arg.password ?? null;
        this.since = Date.now();
        return {};
      case "disconnect":
        this.ssid = null;
        return {};
      case "status": {
        const status = this.status();
        return { status, ssid: status === WIFI_STATUS.GOT_IP ? this.ssid : null,
                 rssi: status === WIFI_STATUS.GOT_IP ? (this.network().rssi ?? -60) : null };
      }
      case "scan":
        this.env.refresh();
        return { networks: this.active ? (this.env.value.wifi ?? []) : [] };
      default:
        return { errno: ERRNO.EINVAL };
    }
  }
}

function isLoopback(addr) {
  return /^127\.\d+\.\d+\.\d+$/.test(addr);
}

// Bytes from a host serial device opened non-blocking: null when none are waiting.
function readAvailable(fd, n) {
  const buf = Buffer.alloc(n);
  try {
    const got = fs.readSync(fd, buf, 0, n, null);
    return got > 0 ? buf.subarray(0, got) : null;
  } catch (err) {
    if (err.code === "EAGAIN" || err.code === "EWOULDBLOCK") return null;
    throw err;
  }
}

// The `_board` module for one board worker.  hooks: flush() console output, saveFlash(), post(msg) to
// the main thread, softReset() to ask for a soft reset when the running code ends.
export function boardModule({ state, uid, envFile, hooks }) {
  const env = new Environment(envFile);
  const wifi = new Wifi(env);
  let net = null; // started at the first socket call
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const uartRx = new Map(); // UART slot -> bytes read from the device, not yet taken
  let lastSync = 0;

  const syncFlash = (force) => {
    const now = Date.now();
    if (force || now - lastSync > 200) {
      lastSync = now;
      hooks.flush();
      hooks.saveFlash();
    }
  };
  const halt = () => {
    for (;;) Atomics.wait(nap, 0, 0); // until the main thread ends this worker
  };
  const allowed = (addr) => {
    const hosts = env.value.hosts ?? {};
    return isLoopback(addr) || Object.values(hosts).includes(addr);
  };
  const json = (value) => JSON.stringify(value);

  return {
    uid: () => uid,
    random: (n) => crypto.randomBytes(n).toString("hex"), // the chip's hardware RNG (os.urandom)
    env_version: () => {
      env.refresh();
      return env.version;
    },
    env: () => env.text,
    // Wall-clock ms as decimal text: the JS-to-Python bridge cuts integers to 32 bits.
    clock_ms: () => String(Math.floor(Date.now() + state.clockOffsetMs)),
    set_clock_ms: (ms) => {
      state.clockOffsetMs = Number(ms) - Date.now();
    },
    rtc_read: () => state.rtcRead().toString("hex"),
    rtc_write: (hex) => {
      state.rtcWrite(Buffer.from(hex, "hex"));
    },
    reset_cause: () => state.cause,
    sleep_ms: (ms) => {
      syncFlash(false);
      if (ms > 0) Atomics.wait(nap, 0, 0, ms);
    },
    wdt_start: (ms) => state.startWatchdog(ms),
    wdt_feed: () => state.feedWatchdog(),
    // A hardware reset: the main thread ends this worker and starts the board again after delay_ms
    // (deep sleep) or at once; nothing after this call runs, as on the chip.
    hard_reset: (cause, delayMs) => {
      syncFlash(true);
      if (net !== null) net.call({ op: "close_all" });
      state.releaseUarts();
      hooks.post({ kind: "reset", cause, delayMs });
      halt();
    },
    soft_reset: () => hooks.softReset(),
    // UARTs: a host serial device (e.g. the pty of a simulated Modbus bus) wired to the UART's TX and RX
    // pins in the environment; -1 when nothing is wired there (writes go nowhere, reads time out).
    uart_open: (tx, rx) => {
      env.refresh();
      const wired = (env.value.uart ?? []).find((u) => u.tx === tx && u.rx === rx);
      if (wired === undefined) return -1;
      let fd;
      try {
        fd = fs.openSync(wired.device, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
      } catch (err) {
        process.stderr.write(`board: UART device ${wired.device}: ${err.message}\n`);
        return -1;
      }
      const slot = state.claimUart(fd);
      if (slot < 0) fs.closeSync(fd);
      else uartRx.set(slot, Buffer.alloc(0));
      return slot;
    },
    uart_close: (slot) => {
      if (slot < 0) return;
      state.releaseUart(slot);
      uartRx.delete(slot);
    },
    uart_write: (slot, hex) => {
      const fd = state.uartFd(slot);
      const data = Buffer.from(hex, "hex");
      let off = 0;
      while (fd >= 0 && off < data.length) {
        try {
          off += fs.writeSync(fd, data, off);
        } catch (err) {
          if (err.code !== "EAGAIN") return -ERRNO.EIO;
          Atomics.wait(nap, 0, 0, UART_POLL_MS);
        }
      }
      return data.length;
    },
    // Up to n bytes, waiting at most timeoutMs for all of them (null: none came).
    uart_read: (slot, n, timeoutMs) => {
      const fd = state.uartFd(slot);
      const deadline = Date.now() + timeoutMs;
      let held = uartRx.get(slot) ?? Buffer.alloc(0);
      for (;;) {
        const got = fd >= 0 ? readAvailable(fd, 4096) : null;
        if (got !== null) held = Buffer.concat([held, got]);
        if (held.length >= n || Date.now() >= deadline) break;
        Atomics.wait(nap, 0, 0, UART_POLL_MS);
      }
      const out = held.subarray(0, n);
      if (fd >= 0) uartRx.set(slot, held.subarray(n));
      return out.length ? out.toString("hex") : null;
    },
    uart_any: (slot) => {
      const fd = state.uartFd(slot);
      if (fd < 0) return 0;
      let held = uartRx.get(slot) ?? Buffer.alloc(0);
      const got = readAvailable(fd, 4096);
      if (got !== null) held = Buffer.concat([held, got]);
      uartRx.set(slot, held);
      return held.length;
    },
    close_sockets: () => {
      if (net !== null) net.call({ op: "close_all" });
    },
    wifi: (op, arg) => json(wifi.command(op, arg === undefined || arg === null ? null : JSON.parse(arg))),
    resolve: (name) => {
      if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return json({ addr: name });
      if (!wifi.connected()) return json({ errno: EAI_FAIL });
      env.refresh();
      const hosts = { localhost: "127.0.0.1", ...(env.value.hosts ?? {}) };
      return json(name in hosts ? { addr: hosts[name] } : { errno: EAI_FAIL });
    },
    net: (requestJson) => {
      const request = JSON.parse(requestJson);
      if (request.op === "connect" || request.op === "sendto") {
        if (!wifi.connected() || !allowed(request.host)) return json({ errno: ERRNO.EHOSTUNREACH });
        syncFlash(false);
      }
      if (net === null) net = new NetBridge();
      return json(net.call(request));
    },
  };
}
