"""What the application page shows beyond the credit service's view: the farm's soil series over the
assessed season (gaps as gaps, buckets with flagged readings marked) and the application's audit trail.

The chart is a staff read of the farmer's data: it goes through the consent gate
(:func:`cloud.consent.check.use_data`, purpose ``credit_assessment``, scope ``soil``) and is audited like the
assessment's own reads; without that consent the page says so and draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import psycopg

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.consent import check as consent_check
from cloud.consent.errors import ConsentRequired
from cloud.credit.data import PURPOSE
from cloud.credit.records import Application
from cloud.credit.service import TARGET
from cloud.store import registry, series
from cloud.web import charts, readings
from cloud.web.i18n import Formats

CHART_STEP = timedelta(hours=6)
CHART_METRICS = (("soil_moisture", "%", 0), ("soil_temperature", "°C", 1), ("air_temperature", "°C", 1))


@dataclass(frozen=True)
class SeasonChart:
    metric: str
    unit: str
    digits: int
    chart: charts.Chart


def season_charts(conn: psycopg.Connection, principal: Principal, app: Application, fmt: Formats
                  ) -> list[SeasonChart] | None:
    """The farm's series over the application's season, or None when the farmer did not consent to it."""
    try:
        with conn.transaction():
            consent_check.use_data(conn, principal, app.farmer_id, PURPOSE, "soil", TARGET, app.id,
                                   tenant_id=app.tenant_id)
    except ConsentRequired as refusal:
        consent_check.record_refusal(conn, refusal)
        return None
    devices = [d.id for d in registry.list_devices(conn, app.tenant_id, app.farm_id)]
    out = []
    for metric, unit, digits in CHART_METRICS:
        try:
            points = series.farm_series(conn, app.farm_id, metric, app.season_start, app.season_end, CHART_STEP)
        except series.NotFound:
            continue
        if not any(p.value is not None for p in points):
            continue
        flagged = readings.flagged_buckets(conn, devices, metric, app.season_start, app.season_end, CHART_STEP)
        samples = [charts.Sample(p.ts, p.value, p.min, p.max, flagged=bool(flagged.get(p.ts))) for p in points]
        out.append(SeasonChart(metric, unit, digits, charts.time_chart(
            samples, start=app.season_start, end=app.season_end, step=CHART_STEP, x_label=fmt.day,
            y_label=partial(_label, fmt, digits))))
    return out


def _label(fmt: Formats, digits: int, value: float) -> str:
    return fmt.number(value, digits)


def audit_trail(conn: psycopg.Connection, app: Application, limit: int = 200) -> list[log.AuditEntry]:
    """The application's audit entries, oldest first."""
    entries = log.search(conn, app.tenant_id, log.Filters(target_type=TARGET, target_id=app.id), limit=limit)
    return list(reversed(entries))
