"""A virtual ESP32 on a pseudo-terminal: real MicroPython behind its REPL, for the real ``mpremote``.

Technicians' tools (``mpremote connect /dev/ttyUSB0 cp ...``, provisioning) talk to a board over its
USB serial line.  :class:`VirtualBoard` gives them one without hardware: a pty whose far end is
``hardware/micropython/board.mjs``, the official MicroPython 1.27 WebAssembly port run by Node.js
behind the board's REPL (friendly, raw and raw-paste; Ctrl-D soft reset that re-runs boot.py and
main.py).  The board's flash is a host folder, so copied files survive resets and can be inspected.

This thread only shuttles bytes between the pty and Node's stdin/stdout; Node exits when its stdin
closes, and :func:`fieldtrust.processes.spawn` ends it if this process dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import tempfile
from pathlib import Path

from fieldtrust.processes import spawn, stop
from hardware.micropython_runner import RUNNER_DIR, micropython_available
from hardware.pty_port import PtyPort
from hardware.sim_thread import SimulatorThread

log = logging.getLogger(__name__)

BOARD_SCRIPT = RUNNER_DIR / "board.mjs"


class BoardUnavailable(RuntimeError):
    """Node.js or the pinned MicroPython npm package is missing."""


class VirtualBoard(SimulatorThread):
    """A MicroPython board on :attr:`port`; its flash is ``flash_dir`` (a temporary folder when None)."""

    kind = "virtual board"

    def __init__(self, flash_dir: Path | str | None = None) -> None:
        super().__init__()
        self.port = ""
        self._flash_arg = Path(flash_dir) if flash_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.flash_dir: Path | None = None
        self._pty: PtyPort | None = None
        self.node: subprocess.Popen | None = None
        #: bytes the board wrote while nothing read the port (the pty buffer was full), as a UART loses them
        self.bytes_dropped = 0

    def _open(self) -> None:
        reason = micropython_available()
        if reason is not None:
            raise BoardUnavailable(reason)
        if self._flash_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fieldtrust-board-")
            self.flash_dir = Path(self._tmp.name)
        else:
            self.flash_dir = self._flash_arg
            self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._pty = PtyPort()
        self.port = self._pty.path
        self.node = spawn(["node", str(BOARD_SCRIPT), "--fs", str(self.flash_dir)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for stream in (self.node.stdout, self.node.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)

    def _thread_name(self) -> str:
        return f"virtual-board {self.port}"

    def _run(self) -> None:
        try:
            self._shuttle()
        except Exception:  # never let the thread die silently; the board is then unusable, say so
            log.exception("%s %s: stopped serving", self.kind, self.port)

    def _shuttle(self) -> None:
        pty, node = self._pty, self.node
        assert pty is not None and node is not None and node.stdout and node.stderr and node.stdin
        out_fd, err_fd, in_fd = node.stdout.fileno(), node.stderr.fileno(), node.stdin.fileno()
        watched = [pty.fd, out_fd, err_fd, self._wake_fd] + ([pty.watch_fd] if pty.watch_fd is not None else [])
        while not self._stopping.is_set():
            ready, _, _ = select.select(watched, [], [])
            if self._wake_fd in ready:
                return
            if pty.watch_fd is not None and pty.watch_fd in ready:
                pty.handle_watch_events()
            if pty.fd in ready:
                data = _read(pty.fd)
                if data:
                    os.write(in_fd, data)
            if out_fd in ready:
                data = _read(out_fd)
                if data is None:
                    log.error("%s %s: MicroPython exited with status %s", self.kind, self.port, node.wait())
                    return
                self._to_port(data)
            if err_fd in ready:
                data = _read(err_fd)
                if data:
                    log.warning("%s %s: %s", self.kind, self.port, data.decode(errors="replace").rstrip())
                elif data is None:
                    watched.remove(err_fd)

    def _to_port(self, data: bytes) -> None:
        assert self._pty is not None
        try:
            written = os.write(self._pty.fd, data)
        except BlockingIOError:
            written = 0
        self.bytes_dropped += len(data) - written

    def _close(self) -> None:
        if self.node is not None:
            if self.node.stdin is not None:
                with contextlib.suppress(OSError):
                    self.node.stdin.close()
            stop(self.node)
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _read(fd: int) -> bytes | None:
    """What is ready on ``fd``: ``b""`` when nothing (yet), None at end of file."""
    try:
        data = os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return b""
    return data or None
