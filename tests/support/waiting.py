"""Waiting in tests for something another thread or process does, with a deadline instead of a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """True as soon as ``cond()`` is, looking every ``step`` s; False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
