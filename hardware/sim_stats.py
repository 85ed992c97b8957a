"""Counters a simulator keeps about the requests it saw and the answers it gave (thread-safe)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class SimStats:
    """What a bus or TCP simulator did, for tests, benchmarks and the CLI's status line.

    ``requests``: frames received.  ``ignored``: frames for a unit nobody has, with a bad CRC,
    a wrong length or a broken MBAP header.  ``broadcasts``: unit-0 requests (never answered).
    ``silenced``: requests a device left unanswered because of a fault (no-answer, offline).
    ``answered``: responses sent, of which ``exceptions`` were exception responses,
    ``crc_errors_sent`` had a corrupted CRC and ``garbage_sent`` were replaced or preceded by
    noise.  ``connections``: TCP connections accepted.
    """

    requests: int = 0
    answered: int = 0
    exceptions: int = 0
    crc_errors_sent: int = 0
    garbage_sent: int = 0
    ignored: int = 0
    broadcasts: int = 0
    silenced: int = 0
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
