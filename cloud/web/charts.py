"""Server-drawn SVG time series: a line per run of data, gaps left empty, flagged readings marked.

A page gets a :class:`Chart` (coordinates computed here, drawn by ``templates/base/chart.html``): no
chart library, nothing to download but the numbers themselves, and the same picture without scripts.

* A **gap** is a bucket without data (its value is None) or a stretch longer than ``step`` between two
  samples: the line stops before it and starts again after it (never drawn across), and the gap is
  shaded so an empty stretch reads as "no data", not as a flat line.
* A sample standing alone between gaps is drawn as a dot (a line needs two points).
* A **flagged** sample (a reading the gateway or node marked: stale, out of range, clock not synced,
  calibration missing) gets a ring in the warning colour.
* The min-max band of bucketed series is drawn behind the line.

Accessibility is the template's: ``<title>``/``<desc>`` and a data table (:attr:`Chart.rows`) next to
the picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cloud.web.i18n import TIME_ZONE

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 10, 10, 26


@dataclass(frozen=True)
class Sample:
    """One point: a reading or a bucket (value None: no data)."""

    ts: datetime
    value: float | None
    low: float | None = None
    high: float | None = None
    flagged: bool = False


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[str] = field(default_factory=list)
    """SVG path data, one per run of samples without a gap"""
    bands: list[str] = field(default_factory=list)
    """SVG path data of the min-max band of each run"""
    dots: list[tuple[float, float]] = field(default_factory=list)
    """samples alone between gaps"""
    flags: list[tuple[float, float]] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    """x from, x to of each gap"""
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    rows: list[Sample] = field(default_factory=list)
    table: list[Sample] = field(default_factory=list)
    """the data table next to the chart: the samples, or one row per local day for long series"""
    plot: tuple[float, float, float, float] = (0, 0, 0, 0)
    """left, top, right, bottom of the plotting area"""

    @property
    def has_data(self) -> bool:
        return any(s.value is not None for s in self.rows)

    @property
    def gap_count(self) -> int:
        return len(self.gaps)

    @property
    def flagged_count(self) -> int:
        return sum(1 for s in self.rows if s.flagged)

    @property
    def low(self) -> float | None:
        values = [s.low if s.low is not None else s.value for s in self.rows if s.value is not None]
        return min(values) if values else None  # type: ignore[type-var]

    @property
    def high(self) -> float | None:
        values = [s.high if s.high is not None else s.value for s in self.rows if s.value is not None]
        return max(values) if values else None  # type: ignore[type-var]


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering ``low``..``high`` (1, 2 or 5 times a power of ten apart)."""
    if high <= low:  # one value: a range around it, a tenth of its order of magnitude either side
        pad = 10 ** math.floor(math.log10(abs(low))) / 10 if low else 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
        if len(ticks) > 20:
            break
    return ticks


def time_chart(samples: Sequence[Sample], *, start: datetime, end: datetime, step: timedelta,
               x_label: Callable[[datetime], str], y_label: Callable[[float], str],
               width: int = 640, height: int = 200) -> Chart:
    """The chart of ``samples`` (in time order) from ``start`` to ``end``; ``step`` is the spacing expected
    between samples: a longer stretch without one is a gap."""
    left, top, right, bottom = MARGIN_LEFT, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM
    rows = list(samples)
    valued = [s for s in rows if s.value is not None]
    span = (end - start).total_seconds() or 1.0

    def x_of(ts: datetime) -> float:
        return round(left + (right - left) * (ts - start).total_seconds() / span, 1)

    lows = [s.low if s.low is not None else s.value for s in valued]
    highs = [s.high if s.high is not None else s.value for s in valued]
    ticks = nice_ticks(min(lows), max(highs)) if valued else [0.0, 1.0]  # type: ignore[type-var]
    y_min, y_max = ticks[0], ticks[-1]

    def y_of(value: float) -> float:
        return round(bottom - (bottom - top) * (value - y_min) / ((y_max - y_min) or 1.0), 1)

    runs = _runs(rows, step)
    table = daily(rows) if end - start > timedelta(days=2) and step < timedelta(days=1) else rows
    chart = Chart(width=width, height=height, rows=rows, table=table, plot=(left, top, right, bottom))
    for run in runs:
        points = [(x_of(s.ts), y_of(s.value)) for s in run if s.value is not None]
        if len(points) == 1:
            chart.dots.append(points[0])
        else:
            chart.lines.append("M" + " L".join(f"{x},{y}" for x, y in points))
        if any(s.low is not None and s.high is not None and s.low != s.high for s in run) and len(run) > 1:
            upper = [f"{x_of(s.ts)},{y_of(s.high if s.high is not None else s.value)}" for s in run]  # type: ignore[arg-type]
            lower = [f"{x_of(s.ts)},{y_of(s.low if s.low is not None else s.value)}" for s in reversed(run)]  # type: ignore[arg-type]
            chart.bands.append("M" + " L".join(upper + lower) + " Z")
    chart.flags.extend((x_of(s.ts), y_of(s.value)) for s in valued if s.flagged)  # type: ignore[arg-type]
    chart.gaps.extend(_gaps(runs, start, end, step, x_of))
    chart.y_ticks.extend((y_of(t), y_label(t)) for t in ticks)
    chart.x_ticks.extend((x_of(t), x_label(t)) for t in _day_ticks(start, end, right - left))
    return chart


def daily(rows: Sequence[Sample]) -> list[Sample]:
    """One sample per local day: the mean of the day's values, its lowest and highest, flagged if any was
    (a day with no value at all stays a row without data)."""
    days: dict[datetime, list[Sample]] = {}
    for sample in rows:
        local = sample.ts.astimezone(TIME_ZONE)
        days.setdefault(local.replace(hour=0, minute=0, second=0, microsecond=0), []).append(sample)
    out = []
    for day, samples in days.items():
        valued = [s for s in samples if s.value is not None]
        if not valued:
            out.append(Sample(day, None))
            continue
        lows = [s.low if s.low is not None else s.value for s in valued]
        highs = [s.high if s.high is not None else s.value for s in valued]
        out.append(Sample(day, sum(s.value for s in valued) / len(valued), min(lows), max(highs),  # type: ignore[misc]
                          flagged=any(s.flagged for s in samples)))
    return out


def _runs(rows: Sequence[Sample], step: timedelta) -> list[list[Sample]]:
    """Samples with values, split wherever a sample has no value or the next is more than ``step`` away."""
    runs: list[list[Sample]] = []
    current: list[Sample] = []
    for sample in rows:
        if sample.value is None:
            if current:
                runs.append(current)
            current = []
            continue
        if current and sample.ts - current[-1].ts > step * 1.5:
            runs.append(current)
            current = []
        current.append(sample)
    if current:
        runs.append(current)
    return runs


def _gaps(runs: list[list[Sample]], start: datetime, end: datetime, step: timedelta,
          x_of: Callable[[datetime], float]) -> list[tuple[float, float]]:
    """The stretches without data: before the first run, between runs, after the last (a sample covers
    ``step`` from its time; stretches shorter than half a step are jitter, not gaps)."""
    edges: list[tuple[datetime, datetime]] = []
    cursor = start
    for run in runs:
        if run[0].ts - cursor > step / 2:
            edges.append((cursor, run[0].ts))
        cursor = run[-1].ts + step
    if end - cursor > step / 2:
        edges.append((cursor, end))
    return [(x_of(a), x_of(b)) for a, b in edges if x_of(b) > x_of(a)]


def _day_ticks(start: datetime, end: datetime, plot_width: float) -> list[datetime]:
    """Local midnights within the range, thinned so labels do not collide (about 70 px each)."""
    first = start.astimezone(TIME_ZONE).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    days = max(1, int((end - start) / timedelta(days=1)))
    every = max(1, math.ceil(days / max(1, plot_width // 70)))
    ticks = []
    day = first
    while day < end:
        ticks.append(day)
        day += timedelta(days=every)
    return ticks


def map_positions(coordinates: Sequence[tuple[float, float]], width: int, height: int, pad: int = 16
                  ) -> list[tuple[float, float]]:
    """(latitude, longitude) pairs to x, y in a ``width`` x ``height`` box: an equirectangular projection
    scaled to the points' extent (no tiles: a village's farms are a few kilometres apart)."""
    if not coordinates:
        return []
    mid_lat = math.radians(sum(lat for lat, _ in coordinates) / len(coordinates))
    xs = [lon * math.cos(mid_lat) for _, lon in coordinates]
    ys = [lat for lat, _ in coordinates]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1e-6
    scale = min(width - 2 * pad, height - 2 * pad) / span
    x0 = pad + ((width - 2 * pad) - (max(xs) - min(xs)) * scale) / 2
    y0 = pad + ((height - 2 * pad) - (max(ys) - min(ys)) * scale) / 2
    return [(round(x0 + (x - min(xs)) * scale, 1), round(y0 + (max(ys) - y) * scale, 1)) for x, y in zip(xs, ys,
                                                                                                        strict=True)]
