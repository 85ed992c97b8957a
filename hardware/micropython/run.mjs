#!/usr/bin/env node
// Runs one script on real MicroPython (the official WebAssembly port) with the project's modules
// installed in its /lib: a virtual board, so the code the firmware imports is tested without an ESP32.
//
//   node run.mjs [--module NAME=PATH]... (SCRIPT.py | -c CODE)
//
// --module contract.telemetry=/abs/contract/telemetry.py installs that file as /lib/contract/telemetry.py.
// The script's stdout and stderr stream through line by line; the exit status is the script's
// (sys.exit(n) gives n, an uncaught exception gives 1 and its traceback on stderr, bad usage gives 2).
//
// MicroPython runs in a worker thread so that this main thread stays free to watch its lifeline:
// when stdin is a pipe and it closes, the parent is gone and the process exits at once, even while
// the script is stuck in a busy loop.  (Parent death also arrives as SIGTERM, whose default action
// ends the process; no handler is installed for it on purpose.)
import fs from "node:fs";
import path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const USAGE = "usage: node run.mjs [--module NAME=PATH]... (SCRIPT.py | -c CODE)";
const EXIT_USAGE = 2;
const EXIT_ORPHANED = 129; // 128 + SIGHUP: the same status a hang-up would give
const FLUSH_BYTES = 4096;

function fail(message) {
  process.stderr.write(`run.mjs: ${message}\n${USAGE}\n`);
  process.exit(EXIT_USAGE);
}

function parseArgs(argv) {
  const job = { modules: [], source: null, filename: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${arg} needs a value`));
    if (arg === "--module") {
      const spec = value();
      const eq = spec.indexOf("=");
      const name = spec.slice(0, eq);
      if (eq < 1 || !/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(name)) {
        fail(`--module wants NAME=PATH with a dotted module name, got ${JSON.stringify(spec)}`);
      }
      job.modules.push({ file: `/lib/${name.replaceAll(".", "/")}.py`, source: readText(spec.slice(eq + 1)) });
    } else if (arg === "-c") {
      job.source = value();
      job.filename = "<string>";
      if (i + 1 !== argv.length) fail("-c CODE must come last");
    } else if (!arg.startsWith("-") && i + 1 === argv.length) {
      job.source = readText(arg);
      job.filename = path.basename(arg);
    } else {
      fail(`unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  if (job.source === null) fail("no script given");
  return job;
}

function readText(file) {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    return fail(`cannot read ${file}: ${err.message}`);
  }
}

function watchLifeline() {
  const stat = fs.fstatSync(0);
  if (!stat.isFIFO() && !stat.isSocket()) return; // a terminal or /dev/null is no lifeline
  process.stdin.on("data", () => {}); // input is not used; reading is what notices the close
  process.stdin.on("end", () => process.exit(EXIT_ORPHANED));
  process.stdin.on("error", () => process.exit(EXIT_ORPHANED));
}

function supervise(job) {
  watchLifeline();
  const worker = new Worker(new URL(import.meta.url), { workerData: job });
  worker.on("message", (msg) => {
    if (msg.kind === "out") process.stdout.write(msg.data);
    else if (msg.kind === "err") process.stderr.write(msg.data);
    else if (msg.kind === "exit") process.exit(msg.status);
  });
  worker.on("error", (err) => {
    process.stderr.write(`run.mjs: MicroPython worker failed: ${err.stack ?? err}\n`);
    process.exit(1);
  });
}

// Collects MicroPython's byte-at-a-time output and hands it to the main thread a line at a time.
function stream(kind) {
  let buf = new Uint8Array(FLUSH_BYTES);
  let len = 0;
  const flush = () => {
    if (len === 0) return;
    parentPort.postMessage({ kind, data: buf.subarray(0, len) }, [buf.buffer]);
    buf = new Uint8Array(FLUSH_BYTES);
    len = 0;
  };
  const put = (bytes) => {
    for (const b of bytes) {
      buf[len++] = b;
      if (b === 10 || len === FLUSH_BYTES) flush();
    }
  };
  return { put, flush };
}

// Runs the script as __main__ and turns SystemExit into an exit status, as CPython's interpreter does.
const PY_MAIN = `
import sys
def _fieldtrust_run(src, name):
    try:
        exec(compile(src, name, "exec"), {"__name__": "__main__", "__file__": name})
    except SystemExit as exc:
        code = exc.args[0] if exc.args else None
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        print(code, file=sys.stderr)
        return 1
    return 0
_fieldtrust_status = _fieldtrust_run(_fieldtrust_src, _fieldtrust_name)
`;

async function board(job) {
  const { loadMicroPython } = await import("@micropython/micropython-webassembly-pyscript");
  const out = stream("out");
  const err = stream("err");
  const exit = (status) => {
    out.flush();
    err.flush();
    parentPort.postMessage({ kind: "exit", status });
  };
  // This port's heap grows on demand (split heap), so it cannot stand in for an ESP32's RAM limit.
  const mp = await loadMicroPython({ linebuffer: false, stdout: out.put, stderr: err.put });
  for (const mod of job.modules) {
    mp.FS.mkdirTree(path.posix.dirname(mod.file));
    mp.FS.writeFile(mod.file, mod.source);
  }
  mp.globals.set("_fieldtrust_src", job.source);
  mp.globals.set("_fieldtrust_name", job.filename);
  try {
    mp.runPython(PY_MAIN);
  } catch (exc) {
    err.put(new TextEncoder().encode(exc.message ?? String(exc)));
    exit(1);
    return;
  }
  exit(mp.globals.get("_fieldtrust_status"));
}

if (isMainThread) {
  supervise(parseArgs(process.argv.slice(2)));
} else {
  await board(workerData);
}
