"""From raw readings to values worth sending: median of N, linear calibration, delta + heartbeat.

A node wakes, reads each sensor N times and keeps the median (one spike from a noisy ADC or a
disturbed probe does not reach the cloud), applies the per-metric linear calibration from its
signed config, and sends a metric only when it moved by more than its delta or when its
heartbeat is due, to save radio time and battery.

Only some sensors need a field calibration to mean anything: a capacitive soil probe or a raw ADC
input gives millivolts that only the probe's two-point calibration turns into a quantity.  Parts
that report physical units themselves (DS18B20, SHT3x, a Modbus device decoded with its spec, a
divider of known ratio) are used as they come; a config entry for one is applied as a correction,
and its absence is no flaw.  A sensor says which it is (``sensor(..., needs_calibration=True)``), and may
carry its driver's own quality flags (``flags()``, e.g. a Modbus point out of the spec's range).
"""

import json

from contract.telemetry import Q_CALIBRATION_MISSING
from firmware.drivers.errors import DriverError


def median(values):
    """Median of a non-empty sequence of numbers (mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def sample_median(read, n):
    """Call ``read()`` ``n`` times; ``(median of the good readings or None, list of failure reasons)``."""
    good = []
    failures = []
    for _ in range(n):
        try:
            good.append(read())
        except DriverError as exc:
            failures.append(exc.reason)
    return (median(good) if good else None), failures


def sensor(metric, unit, read, samples=None, needs_calibration=False, flags=None):
    """One sensor of a node, as ``Node`` reads it: a tuple (small on the heap), in this order.

    ``read()`` returns one value or raises ``DriverError``; ``samples`` is how many reads make the
    median (None: the config's ``samples``); ``needs_calibration`` is True when the value needs a field
    calibration from the config (flagged ``Q_CALIBRATION_MISSING`` without one); ``flags()``, when
    given, returns the driver's quality flags for the value just read, ORed into the record's.
    """
    return (metric, unit, read, samples, needs_calibration, flags)


def calibrate(metric, raw, calibration, needed=True):
    """``(value, quality)``: ``raw * scale + offset`` from ``calibration[metric]``; without an entry the
    raw value, flagged ``Q_CALIBRATION_MISSING`` only when the sensor ``needed`` one."""
    if raw is None:
        return None, 0
    entry = calibration.get(metric)
    if entry is None:
        return raw, Q_CALIBRATION_MISSING if needed else 0
    return raw * entry.get("scale", 1) + entry.get("offset", 0), 0


class DeltaReporter:
    """Decides which metrics to send: changed by at least their delta, or heartbeat due.

    The state (last value sent and when, per metric) is small and kept in RTC memory across deep
    sleep through ``to_bytes``/``from_bytes``; after a power loss it starts empty and everything is
    sent once.
    """

    def __init__(self, deltas, heartbeat_s, state=None):
        self.deltas = deltas
        self.heartbeat_s = heartbeat_s
        self.state = state if state is not None else {}

    def due(self, metric, value, now_s):
        last = self.state.get(metric)
        if last is None or now_s - last[1] >= self.heartbeat_s:
            return True
        if value is None or last[0] is None:
            return (value is None) != (last[0] is None)  # a sensor failing or coming back is news
        delta = self.deltas.get(metric)
        if delta is None:
            return value != last[0]  # no delta configured: every change is news
        return abs(value - last[0]) >= delta

    def sent(self, metric, value, now_s):
        self.state[metric] = [value, now_s]

    def to_bytes(self):
        return json.dumps(self.state).encode()

    @classmethod
    def from_bytes(cls, data, deltas, heartbeat_s):
        """Restore from RTC memory; unreadable state means 'nothing sent yet', never a crash."""
        try:
            state = json.loads(bytes(data).decode())
        except (ValueError, UnicodeError):
            state = None
        if not isinstance(state, dict):
            state = None
        return cls(deltas, heartbeat_s, state)
