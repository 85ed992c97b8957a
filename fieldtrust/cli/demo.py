"""``fieldtrust demo``: the main job, end to end on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fieldtrust.demo import DemoBroker


def run_demo(seconds: float, broker: DemoBroker = "auto") -> int:
    from fieldtrust.demo import run_demo as run

    return 0 if run(seconds, broker=broker).ok else 1
