"""A pseudo-terminal pair that stands in for a USB-RS485 adapter, and survives masters reopening it.

Linux ptys carry bytes, not bits: the kernel silently drops PARENB from a pty's settings, and
glibc's ``tcsetattr`` then reports EINVAL whenever nothing *else* changed.  So a master that
asks for 8E1 can open the port only if the pty's current settings differ from its request in
some other way (speed, for instance).  This module keeps that true: the pty starts raw at 50
baud (a speed no master asks for), and every time a master closes the port (seen through
inotify) the settings go back to that state, so the next open with parity succeeds.  Masters
that re-apply identical settings right after opening (pymodbus's serial client does) still get
EINVAL with parity E/O and must open a pty with parity N; the simulator's own parity setting
is what times the line.

Both ends stay open for the pair's life, so the master may close and reopen the port freely.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import termios
import tty

_IN_CLOSE = 0x00000008 | 0x00000010  # IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
_EVENT = struct.Struct("iIII")


class PtyPort:
    """Both ends of a pty: :attr:`fd` is ours, :attr:`path` is what the master opens."""

    def __init__(self) -> None:
        self.fd, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.fd, False)
        self.reset_settings()
        self.watch_fd = _watch_closes(self.path)

    def reset_settings(self) -> None:
        """Raw, 8 data bits, no parity, 50 baud: bytes pass unchanged and any real master setting differs."""
        tty.setraw(self._slave)
        attrs = termios.tcgetattr(self._slave)
        attrs[2] = (attrs[2] & ~(termios.PARENB | termios.PARODD | termios.CSTOPB)) | termios.CLOCAL
        attrs[4] = attrs[5] = termios.B50
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)

    def handle_watch_events(self) -> None:
        """Read pending inotify events; after a master closed the port, restore the settings."""
        if self.watch_fd is None:
            return
        try:
            data = os.read(self.watch_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        closed = False
        for offset in _offsets(data):
            _, mask, _, _ = _EVENT.unpack_from(data, offset)
            closed |= bool(mask & _IN_CLOSE)
        if closed:
            with contextlib.suppress(termios.error, OSError):
                self.reset_settings()

    def close(self) -> None:
        for fd in (self.watch_fd, self.fd, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.watch_fd = None


def _offsets(data: bytes) -> list[int]:
    out, offset = [], 0
    while offset + _EVENT.size <= len(data):
        out.append(offset)
        offset += _EVENT.size + _EVENT.unpack_from(data, offset)[3]
    return out


def _watch_closes(path: str) -> int | None:
    """An inotify fd reporting closes of ``path``, or None where inotify is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, path.encode(), _IN_CLOSE) < 0:
        os.close(fd)
        return None
    return fd
