"""What the terminal calls dry, wet, cold or hot, and a low battery: the thresholds behind its plain words.

One band per metric: below ``low`` the soil is *dry* (moisture) or *cold* (temperature), above ``high``
*waterlogged* or *hot*.  The numbers are general guidance for field crops on loam (volumetric water
content of a 7-in-1 or capacitive probe), not agronomic advice for a particular crop or soil; a tenant's
own thresholds would replace them here.  A reading older than :data:`STALE_AFTER` says nothing about now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Condition = Literal["dry", "wet", "cold", "hot", "ok", "no_data"]

STALE_AFTER = timedelta(hours=6)
#: a node's battery is low below 3.4 V (LiFePO4 / Li-ion cells near their end)
BATTERY_LOW_V = 3.4


@dataclass(frozen=True)
class Band:
    metric: str
    low: float
    high: float
    below: Condition
    above: Condition


SOIL_MOISTURE = Band("soil_moisture", 20.0, 45.0, "dry", "wet")
SOIL_TEMPERATURE = Band("soil_temperature", 10.0, 35.0, "cold", "hot")
BANDS = (SOIL_MOISTURE, SOIL_TEMPERATURE)


def classify(band: Band, value: float) -> Condition:
    if value < band.low:
        return band.below
    if value > band.high:
        return band.above
    return "ok"


@dataclass(frozen=True)
class State:
    """A condition and since when it holds (the first bucket of the current streak)."""

    condition: Condition
    since: datetime | None = None
    value: float | None = None
    at: datetime | None = None


def current_state(band: Band, points: Sequence[tuple[datetime, float | None]], now: datetime) -> State:
    """The condition of the last bucket with data, and since when it has held without a break in condition
    (buckets without data in between do not break a streak; they say nothing)."""
    known = [(ts, value) for ts, value in points if value is not None]
    if not known or now - known[-1][0] > STALE_AFTER:
        return State("no_data", at=known[-1][0] if known else None)
    last_ts, last_value = known[-1]
    condition = classify(band, last_value)
    since = last_ts
    for ts, value in reversed(known):
        if classify(band, value) != condition:
            break
        since = ts
    return State(condition, since, last_value, last_ts)


def battery_low(value: float | None, unit: str | None) -> bool:
    """Whether a node's battery reading (in V or mV, as the node sent it) is low."""
    if value is None:
        return False
    volts = value / 1000 if (unit or "").lower() == "mv" or value > 100 else value
    return volts < BATTERY_LOW_V
