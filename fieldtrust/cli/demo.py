"""``fieldtrust demo``: the main job, end to end on this machine."""

from __future__ import annotations


def run_demo(seconds: float) -> int:
    from fieldtrust.demo import run_demo as run

    return 0 if run(seconds).ok else 1
