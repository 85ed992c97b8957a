#!/usr/bin/env node
// A virtual ESP32: real MicroPython (the official WebAssembly port) behind its REPL, speaking on
// stdin/stdout exactly what a board speaks on its USB serial line, so `mpremote` works, with the
// ESP32's hardware modules (machine, onewire, ds18x20, esp32, esp, network, socket, ntptime: their
// Python side in board_lib/, the hardware behind them in board_hw.mjs and net.mjs).
//
//   node board.mjs --fs DIR --id HEX12 [--env FILE] [--host-file NAME]...
//
// DIR is the board's flash, mounted at / as on an ESP32: copied in at every boot and written back
// after every input that may have changed it, before every sleep, socket connect and reset, so files
// copied with `mpremote cp` or written by the firmware survive resets.  --host-file names files in
// DIR that belong to the host (the board neither sees nor deletes them).  --id is the chip's base MAC
// (machine.unique_id()).  FILE is the environment the host writes: sensor values, Wi-Fi networks in
// range, host names, the serial device on the RS485 UART (see board_hw.mjs, hardware/virtual_board.py).
// The port's own REPL handles the friendly and raw REPL; this bridge adds what it lacks:
// - soft reset (Ctrl-D, machine.soft_reset(), SystemExit out of main.py): a fresh interpreter (empty
//   heap and globals), "MPY: soft reboot", boot.py, main.py (friendly REPL only, as on a board), then
//   the REPL in the mode it was in;
// - hard resets (machine.reset(), the watchdog, waking from machine.deepsleep()): a fresh worker, the
//   ROM bootloader's reset line, boot.py and main.py, the friendly REPL; RTC memory and clock kept;
// - raw-paste mode (Ctrl-E A Ctrl-A in the raw REPL): the port's own one waits on a blocking stdin read
//   and stalls, so the bridge runs the protocol (window flow control) and feeds the whole code at once;
// - cooked output (\n sent as \r\n, as a board's UART driver does; this port prints bare \n);
// - POSIX error numbers: this build raises Emscripten's (OSError 44 for ENOENT); tracebacks are
//   rewritten to the numbers a board prints, which `mpremote fs` maps back to its errors.
// - file sizes in os.ilistdir; sleeps that do not spin the host's CPU;
// - Ctrl-C while a program runs or the board sleeps: see Supervisor.
// The process exits when stdin closes: the parent is gone.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { RESET, SharedState, boardModule, romLine } from "./board_hw.mjs";

const FLASH = "/";
const ROM_DIR = "/dev/board"; // the board's built-in modules: importable, never part of the flash
const BOARD_LIB = new URL("./board_lib/", import.meta.url);
const SYSTEM_DIRS = ["/home/web_user", "/home", "/tmp", "/proc/self/fd", "/proc/self", "/proc"]; // not on a board
const HIDDEN_AT_ROOT = new Set(["dev"]); // the port's devices (and ROM_DIR): not flash
const PASTE_WINDOW = 2048;
const INTERRUPT_GRACE_MS = 500;
const WATCHDOG_POLL_MS = 100;
const CTRL_A = 0x01, CTRL_B = 0x02, CTRL_C = 0x03, CTRL_D = 0x04, CTRL_E = 0x05;
// Emscripten's errno values for the errors file operations raise, by name (its ERRNO_CODES table).
const EMSCRIPTEN_ERRNO = {
  EPERM: 63, ENOENT: 44, EIO: 29, EBADF: 8, EAGAIN: 6, ENOMEM: 48, EACCES: 2, EBUSY: 10, EEXIST: 20,
  EXDEV: 75, ENODEV: 43, ENOTDIR: 54, EISDIR: 31, EINVAL: 28, ENFILE: 41, EMFILE: 33, EFBIG: 22,
  ENOSPC: 51, EROFS: 69, ENAMETOOLONG: 37, ENOSYS: 52, ENOTEMPTY: 55, EOPNOTSUPP: 138,
};
const TO_POSIX = new Map(Object.entries(EMSCRIPTEN_ERRNO).map(([name, n]) => [n, os.constants.errno[name]]));
const OSERROR = "OSError: ";

// Runs a file from the flash in __main__'s globals, printing its traceback as a board does; True when
// it ended with SystemExit (which soft-resets a board).
const RUN_FILE = `
def _board_run(name):
    import os, sys
    try:
        os.stat(name)
    except OSError:
        return False
    try:
        exec(open(name).read(), globals())
    except SystemExit:
        return True
    except BaseException as exc:
        sys.print_exception(exc)
    return False
`;

const USAGE = "usage: node board.mjs --fs DIR --id HEX12 [--env FILE] [--host-file NAME]...";

function parseArgs(argv) {
  const opts = { flashDir: null, uid: null, envFile: null, hostFiles: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === "--fs") opts.flashDir = path.resolve(value);
    else if (flag === "--id") opts.uid = value.toLowerCase();
    else if (flag === "--env") opts.envFile = path.resolve(value);
    else if (flag === "--host-file") opts.hostFiles.push(value);
    else usage(`unknown option ${flag}`);
  }
  if (opts.flashDir === null) usage("--fs DIR is required");
  if (!/^[0-9a-f]{12}$/.test(opts.uid ?? "")) usage(`--id wants 12 hex digits (6 bytes), got ${opts.uid}`);
  fs.mkdirSync(opts.flashDir, { recursive: true });
  return opts;
}

function usage(problem) {
  process.stderr.write(`board.mjs: ${problem}\n${USAGE}\n`);
  process.exit(2);
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
  // opts: flashDir, uid, envFile, hostFiles; state: SharedState; post(msg) to the main thread.
  constructor(opts, out, state, post) {
    this.flashDir = opts.flashDir;
    this.hostFiles = new Set(opts.hostFiles);
    this.out = out;
    this.mp = null;
    this.raw = false; // which REPL the user is in (survives soft resets)
    this.rawLineEmpty = true;
    this.probe = []; // bytes of a possible raw-paste request (Ctrl-E A Ctrl-A)
    this.paste = null; // raw-paste data while receiving it
    this.pasteCredit = 0;
    this.synced = new Map(); // flash path -> content last written to the host folder
    this.softResetRequested = false; // machine.soft_reset() ran
    this.hw = boardModule({
      state, uid: opts.uid, envFile: opts.envFile,
      hooks: {
        flush: () => out.flush(),
        saveFlash: () => this.saveFlash(),
        post,
        softReset: () => { this.softResetRequested = true; },
      },
    });
    this.cause = state.cause;
  }

  // kind: "power-on" or "hard" (the worker's first boot after a hardware reset), "soft" (Ctrl-D,
  // soft_reset) or "interrupted" (a Ctrl-C ended the previous worker: see Supervisor).
  async boot(kind) {
    const { loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript");
    const put = (bytes) => {
      for (const b of bytes) this.out.put(b);
    };
    for (;;) {
      if (kind === "power-on" || kind === "hard") this.out.text(romLine(this.cause));
      if (kind === "soft") this.out.text("MPY: soft reboot\r\n");
      if (kind === "interrupted") this.out.text("KeyboardInterrupt: program stopped by restarting the board\r\n");
      this.softResetRequested = false;
      this.hw.close_sockets();
      this.mp = await loadMicroPython({ linebuffer: false, stdout: put, stderr: put });
      this.mp.registerJsModule("_board", this.hw);
      for (const dir of SYSTEM_DIRS) this.mp.FS.rmdir(dir);
      this.mp.FS.mkdirTree(ROM_DIR);
      for (const name of fs.readdirSync(BOARD_LIB)) {
        if (name.endsWith(".py")) this.mp.FS.writeFile(`${ROM_DIR}/${name}`, fs.readFileSync(new URL(name, BOARD_LIB)));
      }
      this.loadFlash();
      this.mp.runPython(`import os, sys\nos.chdir("${FLASH}")\nsys.path.append("${ROM_DIR}")\nimport _boot\ndel os, sys, _boot\n`);
      this.mp.runPython(RUN_FILE);
      let exited = kind !== "interrupted" && this.runFile("boot.py");
      if (!exited && kind !== "interrupted" && !this.raw) exited = this.runFile("main.py");
      this.mp.runPython("del _board_run");
      this.saveFlash();
      if (!exited && !this.softResetRequested) break;
      kind = "soft"; // SystemExit out of boot.py or main.py, or machine.soft_reset(): a soft reset
    }
    this.out.muted = this.raw; // in the raw REPL a board prints only the raw banner after a reset
    this.mp.replInit();
    this.out.muted = false;
    if (this.raw) this.mp.replProcessChar(CTRL_A);
    this.rawLineEmpty = true;
    this.out.flush();
  }

  runFile(name) {
    return this.mp.runPython(`_board_run("${name}")`);
  }

  isHostFile(hostPath) {
    return path.dirname(hostPath) === this.flashDir && this.hostFiles.has(path.basename(hostPath));
  }

  loadFlash() {
    const walk = (host, dest) => {
      this.mp.FS.mkdirTree(dest);
      for (const entry of fs.readdirSync(host, { withFileTypes: true })) {
        const from = path.join(host, entry.name);
        const to = path.posix.join(dest, entry.name);
        if (dest === FLASH && HIDDEN_AT_ROOT.has(entry.name)) continue;
        if (entry.isDirectory()) walk(from, to);
        else if (entry.isFile() && !this.isHostFile(from)) {
          const data = fs.readFileSync(from);
          this.mp.FS.writeFile(to, data);
          this.synced.set(to, data);
        }
      }
    };
    this.synced.clear();
    walk(this.flashDir, FLASH);
    this.watchWrites();
  }

  // Notes what the running code changes, so that saving the flash touches only that: file writes by
  // path, anything else (rename, remove, mkdir) as a change of the tree.
  watchWrites() {
    const FS = this.mp.FS;
    this.written = new Set();
    this.treeChanged = false;
    const wrap = (name, note) => {
      const original = FS[name];
      FS[name] = function (...args) {
        note(...args);
        return original.apply(this, args);
      };
    };
    wrap("write", (stream) => this.written.add(stream.path));
    wrap("open", (where, flags) => {
      const writing = typeof flags === "string" ? flags !== "r" : (flags & 3) !== 0;
      if (writing) this.treeChanged = true; // may create or truncate a file
    });
    for (const name of ["unlink", "rename", "rmdir", "mkdir", "truncate", "ftruncate", "symlink"]) {
      wrap(name, () => { this.treeChanged = true; });
    }
  }

  // Mirrors the flash into the host folder: changed files written, removed ones deleted.
  saveFlash() {
    if (this.mp === null || (!this.treeChanged && this.written.size === 0)) return;
    if (!this.treeChanged) {
      for (const full of this.written) this.saveFile(full);
      this.written.clear();
      return;
    }
    this.treeChanged = false;
    this.written.clear();
    const seen = new Set();
    const walk = (dir) => {
      for (const name of this.mp.FS.readdir(dir)) {
        if (name === "." || name === ".." || (dir === FLASH && HIDDEN_AT_ROOT.has(name))) continue;
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

  saveFile(full) {
    if (!full.startsWith(FLASH) || HIDDEN_AT_ROOT.has(full.split("/")[1])) return;
    let data;
    try {
      data = Buffer.from(this.mp.FS.readFile(full));
    } catch {
      return; // removed since: the next tree walk deletes it
    }
    const last = this.synced.get(full);
    if (last === undefined || !last.equals(data)) {
      fs.writeFileSync(path.join(this.flashDir, path.posix.relative(FLASH, full)), data);
      this.synced.set(full, data);
    }
  }

  removeHostExtras(hostDir, seen) {
    for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
      const host = path.join(hostDir, entry.name);
      const full = path.posix.join(FLASH, path.relative(this.flashDir, host).split(path.sep).join("/"));
      if (!entry.isDirectory() || (hostDir === this.flashDir && HIDDEN_AT_ROOT.has(entry.name))) continue;
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
    if (this.softResetRequested || status !== 0) return this.boot("soft");
    return null;
  }
}

// Worker side: the board itself; it reports "idle" (and its REPL mode) whenever all input is handled.
async function runBoard(data) {
  const out = new Console();
  const board = new Board(data, out, new SharedState(data.state), (msg) => parentPort.postMessage(msg));
  board.raw = data.raw;
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
  await board.boot(data.kind);
  pumping = false;
  run();
}

// Main thread: owns stdin, the board's shared state and its resets.
// - The interpreter cannot see Ctrl-C while a program runs (no VM hook in this port), so a Ctrl-C that
//   finds the board still busy after INTERRUPT_GRACE_MS ends the worker and starts a fresh interpreter
//   in the same REPL mode: the program stops (its globals are lost, unlike on a board).
// - A hardware reset (machine.reset(), deep sleep, the watchdog) ends the worker and starts a new one,
//   after the sleep for a deep sleep.  Serial input during deep sleep is lost, as on a sleeping chip,
//   except Ctrl-C: it wakes the board into the REPL, as a dev kit's reset line would let a tool do.
class Supervisor {
  constructor(opts) {
    this.opts = opts;
    this.state = SharedState.create();
    this.raw = false;
    this.timer = null; // runs while a Ctrl-C waits for the busy board; input meanwhile is held
    this.held = [];
    this.asleep = false;
    this.wakeTimer = null;
    this.start("power-on");
    setInterval(() => this.checkWatchdog(), WATCHDOG_POLL_MS);
  }

  start(kind) {
    if (kind !== "interrupted") this.raw = false; // a reset comes up in the friendly REPL
    this.worker = new Worker(new URL(import.meta.url), {
      workerData: { ...this.opts, raw: this.raw, kind, state: this.state.sab },
    });
    this.worker.on("message", (msg) => {
      if (msg.kind === "reset") this.hardReset(msg.cause, msg.delayMs);
      else this.idle(msg);
    });
    this.worker.on("error", (err) => {
      process.stderr.write(`board.mjs: MicroPython worker failed: ${err.stack ?? err}\n`);
      process.exit(1);
    });
  }

  idle(msg) {
    this.raw = msg.raw;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
      this.release();
    }
  }

  input(chunk) {
    if (this.asleep) {
      const cut = chunk.indexOf(CTRL_C) + 1;
      if (cut === 0) return; // lost, as on a sleeping chip
      this.wake();
      if (cut < chunk.length) this.input(chunk.subarray(cut)); // a tool's next request: kept for the REPL
      return;
    }
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

  endWorker() {
    const old = this.worker;
    const held = this.state.uartFds();
    old.removeAllListeners();
    old.on("error", () => {}); // whatever it was doing when ended is of no interest
    old.once("exit", () => this.state.releaseUartFds(held)); // the host fds it held, once it cannot use them
    old.terminate();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  interrupt() {
    this.endWorker();
    this.start("interrupted");
    this.release();
  }

  // delayMs: 0 resets at once, > 0 sleeps that long first, < 0 sleeps until Ctrl-C.
  hardReset(cause, delayMs) {
    const interrupted = this.timer !== null; // a Ctrl-C reached the board as it went to sleep
    const held = this.held;
    this.endWorker();
    this.held = [];
    this.state.stopWatchdog();
    this.state.cause = cause;
    if (delayMs === 0) {
      this.start("hard");
      return;
    }
    this.asleep = true;
    if (interrupted) {
      this.wake();
      for (const chunk of held) this.input(chunk);
      return;
    }
    if (delayMs > 0) {
      this.wakeTimer = setTimeout(() => {
        this.asleep = false;
        this.wakeTimer = null;
        this.start("hard");
      }, delayMs);
    }
  }

  wake() {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    this.asleep = false;
    this.state.cause = RESET.HARD;
    this.start("interrupted");
  }

  checkWatchdog() {
    if (this.asleep || !this.state.watchdogExpired()) return;
    writeOut("\r\nE (0) task_wdt: Task watchdog got triggered: the watchdog was not fed in time\r\n");
    this.hardReset(RESET.WDT, 0);
  }
}

function writeOut(text) {
  const buf = Buffer.from(text, "latin1");
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off);
    } catch (err) {
      if (err.code !== "EAGAIN") process.exit(1);
    }
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
