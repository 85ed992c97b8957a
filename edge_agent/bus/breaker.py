"""A per-device circuit breaker: stop spending bus time on a device that does not answer.

Closed: every poll goes out.  After ``failures`` consecutive failed reads it opens: the device is
skipped until a back-off elapses (``base_s``, doubling per failed probe, at most ``max_s``), then
one probe read decides: success closes it, failure re-opens it with the next back-off.  The others
on the bus keep their schedule meanwhile, because a skipped device costs no line time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Breaker:
    failures: int
    base_s: float
    max_s: float
    consecutive: int = 0
    opened: int = 0  # failed probes since the breaker last opened (drives the back-off)
    open_until: float | None = None  # monotonic time of the next probe while open

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allows(self, now: float) -> bool:
        """May a read go out now (closed, or open and due for its probe)?"""
        return self.open_until is None or now >= self.open_until

    def backoff_s(self) -> float:
        return min(self.max_s, self.base_s * 2 ** max(0, self.opened - 1))

    def success(self) -> bool:
        """Record a good read; True if this closed an open breaker (the device recovered)."""
        recovered = self.open_until is not None
        self.consecutive = 0
        self.opened = 0
        self.open_until = None
        return recovered

    def failure(self, now: float) -> bool:
        """Record a failed read; True if this opened the breaker (the device just went down)."""
        self.consecutive += 1
        if self.open_until is not None:  # a failed probe: wait longer
            self.opened += 1
            self.open_until = now + self.backoff_s()
            return False
        if self.consecutive >= self.failures:
            self.opened = 1
            self.open_until = now + self.backoff_s()
            return True
        return False
