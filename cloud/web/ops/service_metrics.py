"""The tenant's service metrics on the ops console: how the village terminals are used, from the usage events
farmers consented to (cloud/web/usage): views, clicks, farmers and mean time per page, over a period and per
day, with a chart of views per day.  Needs ``usage:read`` (ops and tenant admins hold it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.web import charts, session
from cloud.web.i18n import TIME_ZONE, Formats
from cloud.web.ops import actions
from cloud.web.session import OpsUser
from cloud.web.templates import language_of, render
from cloud.web.usage import events

router = APIRouter()
SCOPE = "usage:read"
DAY = timedelta(days=1)


@router.get("/service-metrics")
def service_metrics(request: Request, user: OpsUser, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Response:
    if not user.principal.can(SCOPE):
        return actions.refused(request, user, "role")
    until = datetime.now(UTC).astimezone(TIME_ZONE).date() + DAY
    since = until - days * DAY
    with session.tenant_conn(request, user) as conn:
        found = events.metrics(conn, user.tenant_id, since, until, str(TIME_ZONE))
    fmt = Formats(language_of(request))
    start = datetime.combine(since, datetime.min.time(), TIME_ZONE)
    samples = [charts.Sample(datetime.combine(d, datetime.min.time(), TIME_ZONE), float(n))
               for d, n in found.views_per_day()]
    chart = charts.time_chart(samples, start=start, end=start + days * DAY, step=DAY, x_label=fmt.day,
                              y_label=lambda v: fmt.number(v, 0), width=640, height=200)
    return render(request, "ops/service_metrics.html", {"user": user, "metrics": found, "chart": chart,
                                                        "days": days})
