"""Usage events of the terminal: whether a farmer is asked, whether their events are kept, keeping them, and the
tenant's service metrics (counts per page and day).

The consent is an ordinary one (:mod:`cloud.consent.store`: purpose ``service_metrics``, data scope ``usage``,
confirmed with the farmer's PIN, listed and withdrawn under "My data").  Events are kept only while such a
consent is active, and each row names the consent it was kept under; without one the events are dropped
unread (the page does not even send them, see cloud/web/static/usage.js, but the server decides).  The
farmer's answer to the question is kept in ``ft.usage_prompts`` so the terminal asks once: a "no" is never
asked again, a "yes" only when its consent has run out (not when the farmer withdrew it).

Pages are kept as route patterns (``/terminal/consents/{consent_id}/revoke``): the metrics say which pages
are used, never which records were looked at (:func:`route_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud.auth.principal import Principal
from cloud.consent import store as consents

PURPOSE = "service_metrics"
SCOPE = "usage"
#: how long a yes lasts before the terminal asks again
CONSENT_DAYS = 365
MAX_EVENTS = 50
Answer = Literal["yes", "no"]


class Event(BaseModel):
    """One event as the page sends it: ``k`` view, click (``t``: the link's or form's path) or leave (``ms``:
    time the page was visible)."""

    model_config = ConfigDict(extra="forbid")
    k: Literal["view", "click", "leave"]
    p: Annotated[str, StringConstraints(pattern=r"^/terminal(/[^\s?#]*)?$", max_length=200)]
    t: Annotated[str, StringConstraints(max_length=500)] | None = None
    ms: Annotated[int, Field(ge=0, le=86_400_000)] | None = None


class Batch(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


@dataclass(frozen=True)
class UsageState:
    """What the terminal does for the signed-in farmer: ask the question, keep events (under ``consent_id``)."""

    ask: bool
    consent_id: str | None

    @property
    def recording(self) -> bool:
        return self.consent_id is not None


def state(conn: psycopg.Connection, principal: Principal) -> UsageState:
    """The farmer's usage state (a farmer principal, in the tenant's scope)."""
    assert principal.farmer_id is not None and principal.tenant_id is not None
    mine = consents.list_consents(conn, principal, principal.farmer_id, purpose=PURPOSE)
    active = next((c for c in mine if c.status == "active" and SCOPE in c.scopes), None)
    if active is not None:
        return UsageState(ask=False, consent_id=active.id)
    row = conn.execute("SELECT answer FROM ft.usage_prompts WHERE tenant_id = %s AND farmer_id = %s",
                       (principal.tenant_id, principal.farmer_id)).fetchone()
    ran_out = bool(mine) and mine[0].status == "expired"
    return UsageState(ask=row is None or (row[0] == "yes" and ran_out), consent_id=None)


def record_answer(conn: psycopg.Connection, principal: Principal, answer: Answer) -> None:
    assert principal.farmer_id is not None and principal.tenant_id is not None
    conn.execute("INSERT INTO ft.usage_prompts (tenant_id, farmer_id, answer, answered_by) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (tenant_id, farmer_id) DO UPDATE SET answer = excluded.answer,"
                 " answered_at = now(), answered_by = excluded.answered_by",
                 (principal.tenant_id, principal.farmer_id, answer, principal.id))


def route_of(routes: Sequence[APIRoute], path: str, *, prefix: str = "/terminal", method: str | None = "GET"
             ) -> str | None:
    """The route pattern of ``path`` among ``routes`` (the pages' routes, ``app.state.page_routes`` as
    :func:`cloud.web.app.mount` sets it) under ``prefix`` (and answering ``method``), or None."""
    for route in routes:
        if (route.path.startswith(prefix) and (method is None or method in (route.methods or ()))
                and route.path_regex.match(path)):
            return route.path
    return None


class BadEvents(ValueError):
    """Events that cannot be kept as sent (a page that is not the terminal's)."""


def keep(conn: psycopg.Connection, routes: Sequence[APIRoute], principal: Principal, usage: UsageState,
         batch: Batch, *, assisted: bool, now: datetime | None = None) -> int:
    """Store ``batch`` under the farmer's active consent; the number of rows kept (0 without a consent)."""
    if usage.consent_id is None:
        return 0
    rows = []
    for n, event in enumerate(batch.events):
        page = route_of(routes, event.p)
        if page is None:
            raise BadEvents(f"events[{n}].p: {event.p!r} is not a page of the terminal")
        target = None
        if event.k == "click":
            if not event.t:
                raise BadEvents(f"events[{n}].t: a click names the path it leads to")
            target = route_of(routes, event.t.split("?", 1)[0], prefix="/", method=None) or "other"
        if event.k == "leave" and event.ms is None:
            raise BadEvents(f"events[{n}].ms: a leave event says how long the page was shown")
        rows.append((principal.tenant_id, principal.farmer_id, usage.consent_id, event.k, page, target,
                     event.ms if event.k == "leave" else None, assisted, now or datetime.now(UTC)))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ft.usage_events (tenant_id, farmer_id, consent_id, kind, page, target,"
                        " duration_ms, assisted, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return len(rows)


# -- the tenant's service metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageCount:
    page: str
    views: int
    clicks: int
    farmers: int
    mean_seconds: float | None
    """mean time the page was shown, from its leave events"""
    day: date | None = None
    """None: over the whole period"""


@dataclass(frozen=True)
class Metrics:
    since: date
    until: date
    """exclusive"""
    totals: list[PageCount]
    """per page over the period, most viewed first"""
    days: list[PageCount]
    """per day and page"""

    def views_per_day(self) -> list[tuple[date, int]]:
        """Views of every day of the period, days without any as 0."""
        per_day: dict[date, int] = {}
        for row in self.days:
            assert row.day is not None
            per_day[row.day] = per_day.get(row.day, 0) + row.views
        return [(d, per_day.get(d, 0)) for d in (self.since + timedelta(days=i)
                                                 for i in range((self.until - self.since).days))]


_COUNTS = ("page, count(*) FILTER (WHERE kind = 'view'), count(*) FILTER (WHERE kind = 'click'),"
           " count(DISTINCT farmer_id), avg(duration_ms) FILTER (WHERE kind = 'leave') / 1000.0")


def metrics(conn: psycopg.Connection, tenant: str, since: date, until: date, tz: str) -> Metrics:
    """Views, clicks, farmers and mean time on page per page, over local days (``tz``) [since, until) and per day."""
    where = ("FROM ft.usage_events WHERE tenant_id = %(t)s AND at >= (%(since)s::date)::timestamp AT TIME ZONE %(tz)s"
             " AND at < (%(until)s::date)::timestamp AT TIME ZONE %(tz)s")
    params = {"tz": tz, "t": tenant, "since": since, "until": until}
    totals = conn.execute(f"SELECT {_COUNTS} {where} GROUP BY page ORDER BY 2 DESC, page", params).fetchall()
    days = conn.execute(f"SELECT {_COUNTS}, (at AT TIME ZONE %(tz)s)::date {where} GROUP BY 6, page ORDER BY 6, page",
                        params).fetchall()

    def count(row: tuple) -> PageCount:
        page, views, clicks, farmers, seconds = row[:5]
        return PageCount(page, int(views), int(clicks), int(farmers), float(seconds) if seconds is not None else None,
                         row[5] if len(row) > 5 else None)

    return Metrics(since, until, [count(r) for r in totals], [count(r) for r in days])
