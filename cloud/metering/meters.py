"""The meters and the months they are counted in: one list, used by the migration's CHECK, plans and reports.

A month is a UTC calendar month, named ``YYYY-MM`` on the outside and stored as its first day.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Literal, get_args

Meter = Literal["messages_ingested", "bytes_ingested", "readings_stored", "active_devices", "api_calls",
                "data_exported_bytes"]
#: every meter, in report order
METERS: tuple[Meter, ...] = get_args(Meter)
#: counted by the ingest, in its commit transaction
INGEST_METERS: tuple[Meter, ...] = ("messages_ingested", "bytes_ingested", "readings_stored")
#: counted by the API per caller (key = 'api_key:<id>' or 'user:<id>')
API_METERS: tuple[Meter, ...] = ("api_calls", "data_exported_bytes")
#: computed when read (distinct devices seen in the month), never counted
COMPUTED_METERS: tuple[Meter, ...] = ("active_devices",)
UNITS: dict[Meter, str] = {"messages_ingested": "messages", "bytes_ingested": "bytes", "readings_stored": "readings",
                           "active_devices": "devices", "api_calls": "calls", "data_exported_bytes": "bytes"}

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_month(text: str) -> date:
    """``YYYY-MM`` as the month's first day; ValueError naming the expected form."""
    match = _MONTH.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"month must be YYYY-MM (e.g. 2026-03); got {text!r}")
    return date(int(match[1]), int(match[2]), 1)


def month_text(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def current_month(now: datetime | None = None) -> date:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return date(now.year, now.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)
