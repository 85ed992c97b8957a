#!/usr/bin/env node
// A virtual ESP32's serial console: real MicroPython (the official WebAssembly port) behind its REPL,
// speaking on stdin/stdout exactly what a board speaks on its USB serial line, so `mpremote` works.
//
//   node board.mjs --fs DIR
//
// DIR is the board's flash: copied into /flash (the working directory) at every boot and written back
// after every input that may have changed it, so files copied with `mpremote cp` survive a soft reset.
// The port's own REPL handles the friendly and raw REPL; this bridge adds what it lacks:
// - soft reset (Ctrl-D): a fresh interpreter (empty heap and globals), "MPY: soft reboot", boot.py,
//   main.py (friendly REPL only, as on a board), then the REPL in the mode it was in;
// - raw-paste mode (Ctrl-E A Ctrl-A in the raw REPL): the port's own one waits on a blocking stdin read
//   and stalls, so the bridge runs the protocol (window flow control) and feeds the whole code at once;
// - cooked output (\n sent as \r\n, as a board's UART driver does; this port prints bare \n);
// - POSIX error numbers: this build raises Emscripten's (OSError 44 for ENOENT); tracebacks are
//   rewritten to the numbers a board prints, which `mpremote fs` maps back to its errors.
// - machine.reset() and machine.soft_reset() (what `mpremote reset` calls); file sizes in os.ilistdir;
// - Ctrl-C while a program runs: see Supervisor.
// The process exits when stdin closes: the parent is gone.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const FLASH = "/flash";
const PASTE_WINDOW = 2048;
const INTERRUPT_GRACE_MS = 500;
const CTRL_A = 0x01, CTRL_B = 0x02, CTRL_C = 0x03, CTRL_D = 0x04, CTRL_E = 0x05;
// Emscripten's errno values for the errors file operations raise, by name (its ERRNO_CODES table).
const EMSCRIPTEN_ERRNO = {
  EPERM: 63, ENOENT: 44, EIO: 29, EBADF: 8, EAGAIN: 6, ENOMEM: 48, EACCES: 2, EBUSY: 10, EEXIST: 20,
  EXDEV: 75, ENODEV: 43, ENOTDIR: 54, EISDIR: 31, EINVAL: 28, ENFILE: 41, EMFILE: 33, EFBIG: 22,
  ENOSPC: 51, EROFS: 69, ENAMETOOLONG: 37, ENOSYS: 52, ENOTEMPTY: 55, EOPNOTSUPP: 138,
};
const TO_POSIX = new Map(Object.entries(EMSCRIPTEN_ERRNO).map(([name, n]) => [n, os.constants.errno[name]]));
const OSERROR = "OSError: ";

// Runs a file from the flash in __main__'s globals, printing its traceback as a board does.
const RUN_FILE = `
def _board_run(name):
    import os, sys
    try:
        os.stat(name)
    except OSError:
        return
    try:
        exec(open(name).read(), globals())
    except BaseException as exc:
        sys.print_exception(exc)
`;

// This port's os.ilistdir gives (name, type, inode) only; a board's flash filesystem adds the size,
// which `mpremote fs ls` shows.
const ILISTDIR_WITH_SIZE = `
import os
def _ilistdir(path=".", _plain=os.ilistdir, _stat=os.stat):
    for entry in _plain(path):
        size = _stat(path.rstrip("/") + "/" + entry[0])[6] if entry[1] == 0x8000 else 0
        yield (entry[0], entry[1], entry[2], size)
os.ilistdir = _ilistdir
del os, _ilistdir
`;

// The part of `machine` that mpremote calls (`mpremote reset`): resets go through the bridge.
const MACHINE_PY = `import _board


def reset():
    _board.request_reset(True)
    raise SystemExit


def soft_reset():
    _board.request_reset(False)
    raise SystemExit
`;

function parseArgs(argv) {
  if (argv.length !== 2 || argv[0] !== "--fs") {
    process.stderr.write("usage: node board.mjs --fs DIR\n");
    process.exit(2);
  }
  fs.mkdirSync(argv[1], { recursive: true });
  return path.resolve(argv[1]);
}

// Console output: bytes are collected and written synchronously, so they reach the line while code runs.
class Console {
  constructor() {
    this.pending = [];
    this.held = ""; // a line that may be an OSError with an Emscripten errno, until its end decides
    this.lineStart = true;
    this.last = 0;
    this.drop = 0; // bytes still to swallow (the raw REPL's "OK" after a raw paste)
    this.muted = false;
  }

  put(b) {
    if (this.muted) return;
    if (this.drop > 0) {
      this.drop--;
      return;
    }
    if (this.held || this.lineStart) {
      const text = this.held + String.fromCharCode(b);
      if (OSERROR.startsWith(text) || /^OSError: \d+$/.test(text)) {
        this.held = text;
        return;
      }
      if (this.held) {
        const match = /^OSError: (\d+)$/.exec(this.held);
        const posix = match && (b === 13 || b === 10) ? TO_POSIX.get(Number(match[1])) : undefined;
        this.raw(Buffer.from(posix === undefined ? this.held : `${OSERROR}${posix}`, "latin1"));
        this.held = "";
      }
    }
    if (b === 10 && this.last !== 13) this.pending.push(13); // a board's UART output is cooked: \n -> \r\n
    this.pending.push(b);
    this.last = b;
    this.lineStart = b === 10;
    if (b === 10 || this.pending.length >= 1024) this.flush();
  }

  text(s) {
    for (const b of Buffer.from(s, "latin1")) this.put(b);
  }

  raw(buf) {
    this.pending.push(...buf);
  }

  flush() {
    if (this.pending.length === 0) return;
    const buf = Buffer.from(this.pending);
    this.pending = [];
    let off = 0;
    while (off < buf.length) {
      try {
        off += fs.writeSync(1, buf, off);
      } catch (err) {
        if (err.code !== "EAGAIN") process.exit(1); // stdout gone: the parent is gone
      }
    }
  }
}

class Board {
  constructor(flashDir, out) {
    this.flashDir = flashDir;
    this.out = out;
    this.mp = null;
    this.raw = false; // which REPL the user is in (survives soft resets)
    this.rawLineEmpty = true;
    this.probe = []; // bytes of a possible raw-paste request (Ctrl-E A Ctrl-A)
    this.paste = null; // raw-paste data while receiving it
    this.pasteCredit = 0;
    this.synced = new Map(); // flash path -> content last written to the host folder
    this.resetRequest = null; // true (hard) or false (soft) once machine.reset()/soft_reset() ran
  }

  // kind: "power-on", "soft" (Ctrl-D, soft_reset), "hard" (machine.reset) or "interrupted" (see Supervisor).
  async boot(kind) {
    const { loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript");
    const put = (bytes) => {
      for (const b of bytes) this.out.put(b);
    };
    if (kind === "soft") this.out.text("MPY: soft reboot\r\n");
    if (kind === "interrupted") this.out.text("KeyboardInterrupt: program stopped by restarting the board\r\n");
    if (kind === "hard") this.raw = false; // a hard reset comes up in the friendly REPL
    this.resetRequest = null;
    this.mp = await loadMicroPython({ linebuffer: false, stdout: put, stderr: put });
    this.mp.registerJsModule("_board", { request_reset: (isHard) => { this.resetRequest = Boolean(isHard); } });
    this.mp.FS.mkdirTree("/lib");
    this.mp.FS.writeFile("/lib/machine.py", MACHINE_PY);
    this.loadFlash();
    this.mp.runPython(`import os, sys\nos.chdir("${FLASH}")\nsys.path.append("${FLASH}/lib")\ndel os, sys\n`);
    this.mp.runPython(ILISTDIR_WITH_SIZE);
    this.mp.runPython(RUN_FILE);
    if (kind !== "interrupted") this.runFile("boot.py");
    if (kind !== "interrupted" && !this.raw) this.runFile("main.py");
    this.mp.runPython("del _board_run");
    this.saveFlash();
    this.out.muted = this.raw; // in the raw REPL a board prints only the raw banner after a reset
    this.mp.replInit();
    this.out.muted = false;
    if (this.raw) this.mp.replProcessChar(CTRL_A);
    this.rawLineEmpty = true;
    this.out.flush();
  }

  runFile(name) {
    this.mp.runPython(`_board_run("${name}")`);
  }

  loadFlash() {
    const walk = (host, dest) => {
      this.mp.FS.mkdirTree(dest);
      for (const entry of fs.readdirSync(host, { withFileTypes: true })) {
        const from = path.join(host, entry.name);
        const to = path.posix.join(dest, entry.name);
        if (entry.isDirectory()) walk(from, to);
        else if (entry.isFile()) {
          const data = fs.readFileSync(from);
          this.mp.FS.writeFile(to, data);
          this.synced.set(to, data);
        }
      }
    };
    this.synced.clear();
    walk(this.flashDir, FLASH);
  }

  // Mirrors /flash into the host folder: changed files written, removed ones deleted.
  saveFlash() {
    const seen = new Set();
    const walk = (dir) => {
      for (const name of this.mp.FS.readdir(dir)) {
        if (name === "." || name === "..") continue;
        const full = path.posix.join(dir, name);
        const host = path.join(this.flashDir, path.posix.relative(FLASH, full));
        if (this.mp.FS.isDir(this.mp.FS.stat(full).mode)) {
          fs.mkdirSync(host, { recursive: true });
          seen.add(full);
          walk(full);
          continue;
        }
        const data = Buffer.from(this.mp.FS.readFile(full));
        seen.add(full);
        const last = this.synced.get(full);
        if (last === undefined || !last.equals(data)) {
          fs.writeFileSync(host, data);
          this.synced.set(full, data);
        }
      }
    };
    walk(FLASH);
    for (const full of [...this.synced.keys()]) {
      if (seen.has(full)) continue;
      fs.rmSync(path.join(this.flashDir, path.posix.relative(FLASH, full)), { force: true });
      this.synced.delete(full);
    }
    this.removeHostExtras(this.flashDir, seen);
  }

  removeHostExtras(hostDir, seen) {
    for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
      const host = path.join(hostDir, entry.name);
      const full = path.posix.join(FLASH, path.relative(this.flashDir, host).split(path.sep).join("/"));
      if (!entry.isDirectory()) continue;
      if (!seen.has(full)) fs.rmSync(host, { recursive: true, force: true });
      else this.removeHostExtras(host, seen);
    }
  }

  // One byte from the serial line; returns a promise when it caused a soft reset.
  handle(b) {
    if (this.paste !== null) return this.pasteByte(b);
    if (this.raw && this.rawLineEmpty && (this.probe.length > 0 || b === CTRL_E)) {
      this.probe.push(b);
      const want = [CTRL_E, 0x41, CTRL_A];
      if (this.probe.every((x, i) => x === want[i])) {
        if (this.probe.length < want.length) return null;
        this.probe = [];
        this.paste = [];
        this.pasteCredit = PASTE_WINDOW;
        this.out.raw(Buffer.from([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8]));
        this.out.flush();
        return null;
      }
      const held = this.probe;
      this.probe = [];
      for (const x of held) {
        const reset = this.feed(x);
        if (reset) return reset;
      }
      return null;
    }
    return this.feed(b);
  }

  pasteByte(b) {
    if (b !== CTRL_D) {
      this.paste.push(b);
      if (--this.pasteCredit === 0) {
        this.pasteCredit = PASTE_WINDOW;
        this.out.raw(Buffer.from([CTRL_A]));
        this.out.flush();
      }
      return null;
    }
    const code = this.paste;
    this.paste = null;
    this.out.raw(Buffer.from([CTRL_D]));
    this.out.flush();
    for (const x of code) this.mp.replProcessChar(x);
    this.out.drop = 2; // the raw REPL acknowledges its Ctrl-D with "OK"; the paste already had its ack
    return this.feed(CTRL_D);
  }

  feed(b) {
    const wasRaw = this.raw;
    const status = this.mp.replProcessChar(b);
    if (wasRaw) {
      if (b === CTRL_B) this.raw = false;
      this.rawLineEmpty = b === CTRL_A || b === CTRL_C || b === CTRL_D;
    } else if (b === CTRL_A) {
      this.raw = true; // Ctrl-A on a blank friendly line (what mpremote sends after "\r")
      this.rawLineEmpty = true;
    }
    this.out.flush();
    if (this.resetRequest !== null) return this.boot(this.resetRequest ? "hard" : "soft");
    if (status !== 0) return this.boot("soft");
    return null;
  }
}

// Worker side: the board itself; it reports "idle" (and its REPL mode) whenever all input is handled.
async function runBoard({ flashDir, raw, interrupted }) {
  const out = new Console();
  const board = new Board(flashDir, out);
  board.raw = raw;
  const queue = [];
  let pumping = true; // until booted: input waits in the queue
  const pump = async () => {
    if (pumping) return;
    pumping = true;
    while (queue.length > 0) {
      const chunk = queue.shift();
      let touched = false;
      for (const b of chunk) {
        const reset = board.handle(b);
        if (reset) await reset;
        touched ||= b === CTRL_D || b === 13 || b === 10;
      }
      out.flush();
      if (touched) board.saveFlash();
    }
    pumping = false;
    parentPort.postMessage({ kind: "idle", raw: board.raw });
  };
  const run = () => pump().catch((err) => {
    process.stderr.write(`board.mjs: ${err.stack ?? err}\n`);
    process.exit(1);
  });
  parentPort.on("message", (chunk) => {
    queue.push(chunk);
    run();
  });
  await board.boot(interrupted ? "interrupted" : "power-on");
  pumping = false;
  run();
}

// Main thread: owns stdin.  The interpreter cannot see Ctrl-C while a program runs (no VM hook in this
// port), so a Ctrl-C that finds the board still busy after INTERRUPT_GRACE_MS ends the worker and starts
// a fresh interpreter in the same REPL mode: the program stops (its globals are lost, unlike on a board).
class Supervisor {
  constructor(flashDir) {
    this.flashDir = flashDir;
    this.raw = false;
    this.timer = null; // runs while a Ctrl-C waits for the busy board; input meanwhile is held
    this.held = [];
    this.start(false);
  }

  start(interrupted) {
    this.worker = new Worker(new URL(import.meta.url), {
      workerData: { flashDir: this.flashDir, raw: this.raw, interrupted },
    });
    this.worker.on("message", (msg) => {
      this.raw = msg.raw;
      if (this.timer !== null) {
        clearTimeout(this.timer);
        this.timer = null;
        this.release();
      }
    });
    this.worker.on("error", (err) => {
      process.stderr.write(`board.mjs: MicroPython worker failed: ${err.stack ?? err}\n`);
      process.exit(1);
    });
  }

  input(chunk) {
    if (this.timer !== null) {
      this.held.push(chunk);
      return;
    }
    const cut = chunk.indexOf(CTRL_C) + 1; // what follows a Ctrl-C waits for the board to answer it
    this.worker.postMessage(cut === 0 ? chunk : chunk.subarray(0, cut));
    if (cut === 0) return;
    this.timer = setTimeout(() => this.interrupt(), INTERRUPT_GRACE_MS);
    if (cut < chunk.length) this.held.push(chunk.subarray(cut));
  }

  release() {
    const held = this.held;
    this.held = [];
    for (const chunk of held) this.input(chunk);
  }

  interrupt() {
    this.timer = null;
    this.worker.removeAllListeners();
    this.worker.terminate();
    this.start(true);
    this.release();
  }
}

function main() {
  const supervisor = new Supervisor(parseArgs(process.argv.slice(2)));
  process.stdin.on("data", (chunk) => supervisor.input(chunk));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
}

if (isMainThread) main();
else await runBoard(workerData);
