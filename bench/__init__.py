"""Benchmarks: each prints figures and ratios measured in the same run (``python -m bench.<name>``).

The result protocol shared by every module, so that one command (``fieldtrust bench all``, see
``bench/runner.py``) can run them all and print one table: each module has
``run(quick: bool) -> list[Figure]``, ``quick`` meaning small sizes (the whole suite in a few minutes,
for checking that it works, not for timing).  A :class:`Figure` carries its value, the baseline
measured in the same run (when the figure has one), the ratio of the two, and the target with
whether it was met.  ``python -m bench.<name>`` keeps printing each module's own detailed report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: what a target is compared with: the figure's value, or its ratio to the baseline
TargetOn = Literal["value", "ratio"]


@dataclass(frozen=True)
class Figure:
    """One measured figure, with its same-run baseline and its target."""

    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline: float | None = None
    #: the target, compared with ``value`` or with ``ratio`` (``target_on``); None: no target
    target: float | None = None
    target_on: TargetOn = "value"
    #: False when smaller is better (latencies, seconds, memory): the target is then an upper bound
    higher_is_better: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.unit:
            raise ValueError(f"a figure needs a name and a unit: {self!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"figure {self.name!r}: value {self.value!r} is not a finite number")
        if (self.baseline is None) != (self.baseline_name is None):
            raise ValueError(f"figure {self.name!r}: a baseline needs both its name and its value")
        if self.target_on == "ratio" and self.baseline is None:
            raise ValueError(f"figure {self.name!r}: a target on the ratio needs a baseline")

    @property
    def ratio(self) -> float | None:
        """value / baseline (None without a baseline, or with a zero one)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        """Whether the target is met; None when the figure has no target."""
        if self.target is None:
            return None
        measured = self.value if self.target_on == "value" else self.ratio
        if measured is None:
            return False
        return measured >= self.target if self.higher_is_better else measured <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        """The inverse of :meth:`as_dict` (``ratio`` and ``passed`` are recomputed, not trusted)."""
        fields = {k: v for k, v in data.items() if k not in ("ratio", "passed")}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ValueError(f"not a figure: {data!r} ({exc})") from None
