"""The thread a simulator serves on, and the wake pipe that ends it: one life cycle for every simulator.

A simulator waits in ``select`` on what it serves (a pty, a listening socket) and on the read end
of a pipe.  :meth:`SimulatorThread.stop` writes to that pipe, so any wait ends at once without
polling, then joins the thread before closing what it served: no thread outlives ``stop()``.
:class:`PtySimulator` adds the pseudo-terminal the RS485 line and the serial line sensors share.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Self

from hardware.pty_port import PtyPort

log = logging.getLogger(__name__)


class SimulatorThread(ABC):
    """Start and stop one serving thread; subclasses open, serve and close what it serves."""

    #: the simulator as its error messages name it, e.g. ``bus simulator``
    kind: ClassVar[str]

    def __init__(self) -> None:
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.kind} already started")
        self._open()
        self._wake = os.pipe()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._thread_name(), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._wake is not None
        self._stopping.set()
        os.write(self._wake[1], b"x")
        self._thread.join(5.0)
        self._close()
        for fd in self._wake:
            os.close(fd)
        self._thread = self._wake = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def _wake_fd(self) -> int:
        """Readable once :meth:`stop` has begun: put it in every ``select`` the thread waits in."""
        assert self._wake is not None
        return self._wake[0]

    @abstractmethod
    def _open(self) -> None:
        """Acquire what the thread serves (before the thread starts)."""

    @abstractmethod
    def _thread_name(self) -> str:
        """The serving thread's name (what it serves, once opened)."""

    @abstractmethod
    def _run(self) -> None:
        """Serve until :attr:`_stopping` is set or :attr:`_wake_fd` is readable; never raise."""

    @abstractmethod
    def _close(self) -> None:
        """Release what the thread served (after the thread ended)."""


class PtySimulator(SimulatorThread):
    """A simulator behind a pseudo-terminal: the gateway opens :attr:`port`, the thread holds the other end."""

    def __init__(self) -> None:
        super().__init__()
        self.port = ""
        self._pty: PtyPort | None = None

    def _open(self) -> None:
        self._pty = PtyPort()
        self.port = self._pty.path

    def _close(self) -> None:
        assert self._pty is not None
        self._pty.close()
        self._pty = None

    def _wait_input(self, timeout: float | None) -> bytes | None:
        """Wait at most ``timeout`` s (None: until something happens) for input from the gateway.

        Returns what arrived (``b""`` when the wait ended without input), or None when :meth:`stop`
        woke the thread.  A gateway closing the port is handled here (see :mod:`hardware.pty_port`).
        """
        pty, wake = self._pty, self._wake_fd
        assert pty is not None
        watched = [pty.fd, wake] + ([pty.watch_fd] if pty.watch_fd is not None else [])
        ready, _, _ = select.select(watched, [], [], timeout)
        if wake in ready:
            return None
        if pty.watch_fd is not None and pty.watch_fd in ready:
            pty.handle_watch_events()
        if pty.fd not in ready:
            return b""
        try:
            return os.read(pty.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:  # cannot happen while we hold the slave end; never spin on it
            log.error("%s %s: read failed: %s", self.kind, self.port, exc)
            select.select([wake], [], [], 0.1)
            return b""
