"""Faults a simulated device can show, switchable while it runs, and the CLI's way of naming them.

A field device misbehaves in a handful of ways that a gateway must survive: it stays silent,
answers late, answers with a broken CRC or with line noise, reports a frozen value, or drops
off the bus and comes back.  A :class:`FaultSet` holds one device's current faults; the bus and
TCP simulators consult it on every request.  Random decisions (which answer gets a bad CRC)
come from one seeded generator, so a run is repeatable.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable

FAULT_SYNTAX = "no-answer | late:MS | crc:RATE | garbage:RATE | stuck | flap:OFF_S/ON_S"


class FaultSet:
    """One device's faults; every attribute may be changed from any thread at any time.

    ``no_answer``: never answer.  ``late_ms``: extra delay before answering.  ``crc_error_rate``
    and ``garbage_rate``: probability (0..1) that an answer carries a corrupted CRC, or line
    noise instead of / before it.  ``stuck``: values freeze at the moment it is set.
    ``offline_for_s``/``online_for_s``: when both are positive the device is online for
    ``online_for_s``, then gone for ``offline_for_s``, and so on, counted from when they were set.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rng = random.Random(seed)
        self._no_answer = False
        self._late_ms = 0.0
        self._crc_error_rate = 0.0
        self._garbage_rate = 0.0
        self._stuck_at: float | None = None
        self._offline_for_s = 0.0
        self._online_for_s = 0.0
        self._flap_from = 0.0

    # -- plain switches ---------------------------------------------------------------------
    @property
    def no_answer(self) -> bool:
        return self._no_answer

    @no_answer.setter
    def no_answer(self, value: bool) -> None:
        self._no_answer = bool(value)

    @property
    def late_ms(self) -> float:
        return self._late_ms

    @late_ms.setter
    def late_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"late_ms must be >= 0; got {value}")
        self._late_ms = float(value)

    @property
    def crc_error_rate(self) -> float:
        return self._crc_error_rate

    @crc_error_rate.setter
    def crc_error_rate(self, value: float) -> None:
        self._crc_error_rate = _rate("crc_error_rate", value)

    @property
    def garbage_rate(self) -> float:
        return self._garbage_rate

    @garbage_rate.setter
    def garbage_rate(self, value: float) -> None:
        self._garbage_rate = _rate("garbage_rate", value)

    # -- frozen values ----------------------------------------------------------------------
    @property
    def stuck(self) -> bool:
        return self._stuck_at is not None

    @stuck.setter
    def stuck(self, value: bool) -> None:
        with self._lock:
            if value and self._stuck_at is None:
                self._stuck_at = self._clock()
            elif not value:
                self._stuck_at = None

    @property
    def stuck_at(self) -> float | None:
        """The time whose values a stuck device keeps answering, or None."""
        return self._stuck_at

    # -- going away and coming back -----------------------------------------------------------
    @property
    def offline_for_s(self) -> float:
        return self._offline_for_s

    @offline_for_s.setter
    def offline_for_s(self, value: float) -> None:
        self.flap(value, self._online_for_s)

    @property
    def online_for_s(self) -> float:
        return self._online_for_s

    @online_for_s.setter
    def online_for_s(self, value: float) -> None:
        self.flap(self._offline_for_s, value)

    def flap(self, offline_for_s: float, online_for_s: float) -> None:
        """Go away for ``offline_for_s`` after every ``online_for_s`` online, starting now (0, 0: stop)."""
        if offline_for_s < 0 or online_for_s < 0:
            raise ValueError(f"flap periods must be >= 0; got {offline_for_s}/{online_for_s}")
        with self._lock:
            self._offline_for_s = float(offline_for_s)
            self._online_for_s = float(online_for_s)
            self._flap_from = self._clock()

    def online(self, now: float | None = None) -> bool:
        """Whether the device is on the bus at ``now`` (flapping only; ``no_answer`` is separate)."""
        off, on = self._offline_for_s, self._online_for_s
        if off <= 0:
            return True
        if on <= 0:
            return False
        t = (self._clock() if now is None else now) - self._flap_from
        return t % (on + off) < on

    # -- per-answer dice ------------------------------------------------------------------------
    def roll(self, rate: float) -> bool:
        """True with probability ``rate``, from the seeded generator."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def noise(self, response: bytes) -> bytes:
        """3 to 12 seeded random bytes of line noise, instead of ``response`` or before it (a coin toss)."""
        with self._lock:
            garbage = self._rng.randbytes(self._rng.randint(3, 12))
            return garbage + response if self._rng.random() < 0.5 else garbage

    def clear(self) -> None:
        """Back to a healthy device."""
        self.no_answer = False
        self.late_ms = 0.0
        self.crc_error_rate = 0.0
        self.garbage_rate = 0.0
        self.stuck = False
        self.flap(0.0, 0.0)

    def describe(self) -> str:
        """The active faults in CLI syntax, ``-`` when healthy."""
        parts = []
        if self._no_answer:
            parts.append("no-answer")
        if self._late_ms:
            parts.append(f"late:{self._late_ms:g}")
        if self._crc_error_rate:
            parts.append(f"crc:{self._crc_error_rate:g}")
        if self._garbage_rate:
            parts.append(f"garbage:{self._garbage_rate:g}")
        if self.stuck:
            parts.append("stuck")
        if self._offline_for_s:
            parts.append(f"flap:{self._offline_for_s:g}/{self._online_for_s:g}")
        return " ".join(parts) or "-"

    def apply(self, text: str) -> None:
        """Switch on one fault named in CLI syntax (see FAULT_SYNTAX); ValueError names what is wrong."""
        name, _, arg = text.strip().partition(":")
        name = name.lower()
        if name in ("no-answer", "stuck"):
            if arg:
                raise ValueError(f"fault {name!r} takes no argument; got {text!r}")
            if name == "stuck":
                self.stuck = True
            else:
                self.no_answer = True
            return
        if name == "flap":
            m = re.fullmatch(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", arg)
            if not m or float(m[2]) <= 0:
                raise ValueError(f"fault flap needs OFF_S/ON_S with ON_S > 0, e.g. flap:5/30; got {text!r}")
            self.flap(float(m[1]), float(m[2]))
            return
        if name not in ("late", "crc", "garbage"):
            raise ValueError(f"unknown fault {text!r}; expected {FAULT_SYNTAX}")
        try:
            number = float(arg)
        except ValueError:
            raise ValueError(f"fault {name} needs a number, e.g. {name}:{100 if name == 'late' else 0.1}; "
                             f"got {text!r}") from None
        if name == "late":
            self.late_ms = number
        elif name == "crc":
            self.crc_error_rate = number
        else:
            self.garbage_rate = number


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within 0..1; got {value}")
    return float(value)
