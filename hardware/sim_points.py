"""What a simulated device's points hold now: a test's pin, else the signal each point is bound to.

The Modbus device and the serial line sensor measure the same weather the same way; only how
they put a value on the wire differs (registers, a text line).  A ``stuck`` fault freezes the
instant the values are taken at; pins are not clamped to the point's range (tests probe ranges too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from device_specs.schema import DataType, DeviceSpec, Point
from hardware.faults import FaultSet
from hardware.signal_binding import Binding, bind
from hardware.signals import SignalModel, stable_key

Value = float | str | bool


class SimulatedPoints:
    """The points of one device of model ``spec``, its weather from ``signals`` (default ``SignalModel(seed)``).

    ``fault_seed`` seeds its :class:`FaultSet` and ``noise_scope`` its sensor noise, so two devices
    of one farm see the same weather through their own noise and faults.
    """

    def __init__(self, spec: DeviceSpec, seed: int, clock: Callable[[], float], signals: SignalModel | None, *,
                 fault_seed: int, noise_scope: str) -> None:
        super().__init__()
        self.spec = spec
        self.seed = seed
        self.clock = clock
        self.signals = signals or SignalModel(seed)
        self.faults = FaultSet(seed=fault_seed, clock=clock)
        self.started_at = clock()  # uptime counters count from here
        self._lock = threading.Lock()
        self._pins: dict[str, Value] = {}
        self._bindings: dict[str, Binding] = {p.metric: bind(p, spec.category) for p in spec.points}
        self._noise_keys = {p.metric: stable_key(f"{noise_scope}/{p.metric}") for p in spec.points}

    def pin(self, metric: str, value: Value) -> None:
        """Report ``value`` for ``metric`` from now on (not clamped to the range: tests probe that too)."""
        self.spec.point(metric)  # KeyError names the model and metric
        with self._lock:
            self._pins[metric] = value

    def unpin(self, metric: str) -> None:
        with self._lock:
            self._pins.pop(metric, None)

    def value(self, metric: str) -> Value:
        """The physical value the gateway gets for ``metric`` if it reads now."""
        return self._value(self.spec.point(metric), self._instant())

    def _value(self, p: Point, t: float) -> Value:
        """The value of ``p`` at ``t`` as the device reports it: here the pin or the measurement."""
        pinned = self._pinned(p.metric)
        return self._measured(p, t) if pinned is None else pinned

    def _instant(self) -> float:
        stuck_at = self.faults.stuck_at
        return self.clock() if stuck_at is None else stuck_at

    def _pinned(self, metric: str) -> Value | None:
        with self._lock:
            return self._pins.get(metric)

    def _measured(self, p: Point, t: float) -> Value:
        """What the point's signal says at ``t``, in the point's unit and clamped to its range."""
        if p.type == DataType.STRING:
            return self._text(p)
        binding = self._bindings[p.metric]
        if p.type == DataType.BITS:
            return binding.signal.name == "irrigating" and self.signals.irrigating(t)
        value = binding.value(self.signals, t, self._noise_keys[p.metric], p.range, self.started_at)
        return min(p.range[1], max(p.range[0], value)) if p.range is not None else value

    def _text(self, p: Point) -> str:
        """A text point's content: the model name."""
        return self.spec.model
