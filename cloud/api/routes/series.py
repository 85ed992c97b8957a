"""Time series of a device or a farm (raw readings or gap-filled buckets) and a device's latest values."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cloud.api.deps import AdminDep, ConnDep
from cloud.api.models import SeriesPublic
from cloud.store import registry, series
from cloud.store.rollups import HOUR

router = APIRouter(prefix="/tenants/{tenant}", tags=["series"], dependencies=[AdminDep])

DEFAULT_SPAN = timedelta(days=1)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_BUCKET = re.compile(r"^(\d{1,7})([smhd])$")

Start = Annotated[datetime | None, Query(description="ISO 8601 with a time zone; default: a day before end")]
End = Annotated[datetime | None, Query(description="ISO 8601 with a time zone, exclusive; default: now")]
BucketParam = Annotated[str | None, Query(
    description="'raw', or a length such as 15m, 1h, 1d; default: chosen by the range", examples=["1h"])]
Metric = Annotated[str, Query(min_length=1, max_length=100, examples=["soil_moisture"])]
Unit = Annotated[str | None, Query(max_length=50, description="needed only when the metric exists in several units")]
Fill = Annotated[Literal["null", "previous"], Query(description="gaps: null, or the previous bucket's numbers")]


def parse_bucket(text: str | None) -> Literal["raw"] | timedelta | None:
    if text is None or text == "raw":
        return text  # type: ignore[return-value]
    match = _BUCKET.match(text)
    if match is None:
        raise series.SeriesError(f"bucket must be 'raw' or a number and s, m, h or d (such as 1h); got {text!r}")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    return (start or end - DEFAULT_SPAN), end


def _label(step: Literal["raw"] | timedelta) -> str:
    return step if isinstance(step, str) else f"{int(step.total_seconds())}s"


@router.get("/devices/{device_id}/series", response_model=SeriesPublic, summary="A device's metric over time")
def device_series(tenant: str, device_id: str, metric: Metric, conn: ConnDep, start: Start = None, end: End = None,
                  bucket: BucketParam = None, unit: Unit = None, fill: Fill = "null") -> SeriesPublic:
    registry.get_device(conn, tenant, device_id)
    start, end = _range(start, end)
    step = parse_bucket(bucket) or series.choose_bucket(start, end)
    points = series.series(conn, device_id, metric, start, end, step, fill, unit=unit)
    return SeriesPublic(metric=metric, start=start, end=end, bucket=_label(step),
                         points=points)


@router.get("/farms/{farm_id}/series", response_model=SeriesPublic,
            summary="A farm's metric over time: per bucket the mean of its devices' means")
def farm_series(tenant: str, farm_id: str, metric: Metric, conn: ConnDep, start: Start = None, end: End = None,
                bucket: BucketParam = None, unit: Unit = None, fill: Fill = "null") -> SeriesPublic:
    registry.get_farm(conn, tenant, farm_id)
    start, end = _range(start, end)
    step = parse_bucket(bucket) or series.choose_bucket(start, end)
    if step == "raw":
        if bucket == "raw":
            raise series.SeriesError("a farm series is bucketed: ask for a length such as 1h")
        step = HOUR  # a short range: hourly buckets, as the store chooses for farms
    points = series.farm_series(conn, farm_id, metric, start, end, step, fill, unit=unit)
    return SeriesPublic(metric=metric, start=start, end=end, bucket=_label(step),
                         points=points)


@router.get("/devices/{device_id}/latest", response_model=list[series.Latest],
            summary="The most recent reading of each of a device's metrics")
def device_latest(tenant: str, device_id: str, conn: ConnDep) -> list[series.Latest]:
    registry.get_device(conn, tenant, device_id)
    return series.latest(conn, device_id)
