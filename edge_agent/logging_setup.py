"""Logging for the agent: stderr (journald) always, a rotating file when configured, and rate limits.

A gateway runs for months on an SD card: a log that grows without bound fills it, and a field
that sends garbage every second must not write a line every second.  ``LogLimiter`` lets one
line through per key and interval; the suppressed count is reported with the next line.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import Callable

from edge_agent.config import LoggingConfig

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: keys remembered by a LogLimiter before it forgets all of them (bounds its memory)
MAX_KEYS = 1024


def setup_logging(cfg: LoggingConfig) -> None:
    """Configure the root logger from ``cfg``; replaces handlers set by an earlier call."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    if cfg.file is not None:
        cfg.file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            cfg.file, maxBytes=cfg.max_bytes, backupCount=cfg.backups, encoding="utf-8"
        )
        rotating.setFormatter(formatter)
        root.addHandler(rotating)
    root.setLevel(cfg.level)


class LogLimiter:
    """Let one message per key through every ``interval_s``; count what was held back."""

    def __init__(self, interval_s: float = 300.0, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._last: dict[object, tuple[float, int]] = {}

    def allow(self, key: object) -> int | None:
        """None to stay quiet; otherwise the number of messages suppressed since the last one let through."""
        now = self._monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0
