"""Child processes that end with their parent: every process the project starts goes through here.

On Linux each child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a
crashed test run or demo leaves no orphan behind; :func:`stop` ends a child politely, then firmly.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    os.setpgrp()  # its own process group, so stop() also reaches grandchildren


def spawn(cmd: Sequence[str], **kwargs: object) -> subprocess.Popen:
    """Start ``cmd`` as a child that is terminated when this process dies."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(cmd), preexec_fn=_die_with_parent, **kwargs)  # type: ignore[call-overload]


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Terminate ``proc`` and its process group; kill it if it does not exit within ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def kill9(proc: subprocess.Popen) -> None:
    """``kill -9`` the child (fault tests): no clean-up runs in it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def running(cmd: Sequence[str], **kwargs: object) -> Iterator[subprocess.Popen]:
    proc = spawn(cmd, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Block until something accepts connections on ``host:port``; raise TimeoutError if not."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
