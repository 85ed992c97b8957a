"""Run code on real MicroPython from CPython: a virtual board for the code the firmware imports.

The message contract (``contract/telemetry.py``, ``contract/topics.py``) must run unchanged on the
node; testing it under CPython alone would miss what MicroPython lacks (``hmac``, ``zip(strict=)``,
...).  This module drives the official MicroPython WebAssembly port through Node.js
(``hardware/micropython/run.mjs``; install with ``npm ci --prefix hardware/micropython``), with the
project's modules copied into the board's ``/lib``.  That build uses 64-bit floats and a heap that
grows on demand, so it checks language and library compatibility, not an ESP32's float32 printing
or RAM limit.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fieldtrust.processes import spawn, stop

RUNNER_DIR = Path(__file__).resolve().parent / "micropython"
RUNNER_SCRIPT = RUNNER_DIR / "run.mjs"
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
INSTALL_HINT = "npm ci --prefix hardware/micropython"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACT_MODULES: dict[str, Path] = {
    "contract.telemetry": _PROJECT_ROOT / "contract" / "telemetry.py",
    "contract.topics": _PROJECT_ROOT / "contract" / "topics.py",
}
MAX_SCRIPT_BYTES = 100_000  # passed on the command line; Linux caps one argument at 128 KiB


class MicroPythonUnavailable(RuntimeError):
    """Node.js or the pinned MicroPython npm package is not installed here."""


@dataclass(frozen=True)
class CompletedRun:
    """What one script printed on the virtual board, and how it ended (``sys.exit`` status; 1 on error)."""

    stdout: str
    returncode: int
    stderr: str = ""


def micropython_available() -> str | None:
    """None when scripts can run; otherwise the reason they cannot, with the command that fixes it."""
    if shutil.which("node") is None:
        return "Node.js (node) is not on PATH; MicroPython's WebAssembly port needs it"
    pinned = json.loads((RUNNER_DIR / "package.json").read_text())["dependencies"][NPM_PACKAGE]
    installed_manifest = RUNNER_DIR / "node_modules" / NPM_PACKAGE / "package.json"
    if not installed_manifest.is_file():
        return f"npm package {NPM_PACKAGE} is not installed: run `{INSTALL_HINT}`"
    installed = json.loads(installed_manifest.read_text()).get("version")
    if installed != pinned:
        return f"npm package {NPM_PACKAGE} is {installed}, package.json pins {pinned}: run `{INSTALL_HINT}`"
    return None


def run_micropython(
    script: str,
    modules: dict[str, Path] | None = None,
    timeout: float = 10.0,
) -> CompletedRun:
    """Run ``script`` as ``__main__`` under MicroPython with ``modules`` (dotted name -> source file) importable.

    ``modules`` defaults to the contract's MicroPython-safe modules.  Raises MicroPythonUnavailable
    when the runtime is missing, TimeoutError (after ending the process) when the script outlives
    ``timeout`` seconds, ValueError for a script too long to pass.
    """
    reason = micropython_available()
    if reason is not None:
        raise MicroPythonUnavailable(reason)
    if len(script.encode()) > MAX_SCRIPT_BYTES:
        raise ValueError(f"script is {len(script.encode())} bytes; the limit is {MAX_SCRIPT_BYTES}")
    cmd = ["node", str(RUNNER_SCRIPT)]
    for name, path in (CONTRACT_MODULES if modules is None else modules).items():
        cmd += ["--module", f"{name}={Path(path).resolve()}"]
    cmd += ["-c", script]
    # stdin stays open as the runner's lifeline: it exits as soon as this end closes.
    proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = _read_until_exit(proc, timeout)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        stop(proc)
    return CompletedRun(out.decode(errors="replace"), proc.returncode, err.decode(errors="replace"))


def _read_until_exit(proc: subprocess.Popen, timeout: float) -> tuple[bytes, bytes]:
    """Collect stdout and stderr until both close and the process ends, within ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            events = sel.select(remaining) if remaining > 0 else []
            if not events:
                partial = b"".join(chunks[proc.stdout.fileno()]).decode(errors="replace")
                raise TimeoutError(f"MicroPython script still running after {timeout}s; stdout so far: {partial!r}")
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fileobj)
    proc.wait(max(deadline - time.monotonic(), 0.1))
    return b"".join(chunks[proc.stdout.fileno()]), b"".join(chunks[proc.stderr.fileno()])
