"""``fieldtrust demo``: the main job, end to end on this machine."""

from __future__ import annotations


def run_demo() -> int:
    from rich.console import Console

    Console().print("demo: not built yet")
    return 1
