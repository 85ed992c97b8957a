"""Is the wall clock synchronised?  Asked of the kernel, the one place that knows.

Readings are stamped with the wall clock when they are read, and a stamp from an unsynchronised
clock (a gateway without a real-time clock, booted without network) must say so
(``Q_CLOCK_UNSYNCED``).  NTP daemons (chrony, ntpd, systemd-timesyncd) tell the kernel how good
the clock is; ``adjtimex(2)`` with no modes set reads that without privileges:

* the return value is ``TIME_ERROR`` (5) while the clock is unsynchronised,
* the ``STA_UNSYNC`` status bit is set until a daemon first disciplines the clock,
* ``maxerror`` (µs) grows by 500 ppm while no daemon updates it.

The clock counts as synchronised when none of these says otherwise and ``maxerror`` is below
:data:`MAX_ERROR_US`.  ``FIELDTRUST_ASSUME_CLOCK_SYNCED=1`` (or ``0``) overrides the answer, for
systems where ``adjtimex`` is unavailable (containers with a strict seccomp profile, non-Linux)
or for tests; without the override such systems report "not synchronised".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_OVERRIDE = "FIELDTRUST_ASSUME_CLOCK_SYNCED"
STA_UNSYNC = 0x0040
TIME_ERROR = 5
#: an error bound above this (µs) counts as not synchronised: stamps are milliseconds, polls minutes
MAX_ERROR_US = 1_000_000

_long = ctypes.c_long


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", _long), ("tv_usec", _long)]


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (Linux, glibc and musl)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", _long), ("freq", _long), ("maxerror", _long),
        ("esterror", _long), ("status", ctypes.c_int), ("constant", _long), ("precision", _long),
        ("tolerance", _long), ("time", _Timeval), ("tick", _long), ("ppsfreq", _long), ("jitter", _long),
        ("shift", ctypes.c_int), ("stabil", _long), ("jitcnt", _long), ("calcnt", _long), ("errcnt", _long),
        ("stbcnt", _long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11),
    ]


def kernel_clock_state() -> tuple[int, int, int] | None:
    """``(adjtimex return value, status bits, maxerror µs)``, or None where adjtimex is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        tx = _Timex()  # modes = 0: read only
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state, tx.status, tx.maxerror


def clock_synced() -> bool:
    """True when the kernel says the wall clock is synchronised (or the environment says to assume so)."""
    override = os.environ.get(ENV_OVERRIDE, "").strip()
    if override in ("1", "0"):
        return override == "1"
    state = kernel_clock_state()
    if state is None:
        return False
    ret, status, maxerror = state
    return ret != TIME_ERROR and not status & STA_UNSYNC and maxerror < MAX_ERROR_US
