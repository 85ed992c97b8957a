"""OTA campaigns on the ops console: the list, a form to start one (nodes: a firmware release; gateways: an
agent release), and a campaign's page with its rollout per stage (counts and a bar), its targets' status
table, and pause / resume / halt / cancel.

Everything goes through :mod:`cloud.fleet.campaigns` as the API does (targets chosen and the first stage sent
when it is created; the fleet service advances it), but for halting by hand (:mod:`cloud.web.ops.changes`).
A campaign's targets are read a page at a time, so a campaign over 10,000 nodes costs what one over ten does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from psycopg.rows import class_row
from pydantic import ValidationError

from cloud.fleet import campaigns
from cloud.store import downlink, registry
from cloud.web import session
from cloud.web.ops import actions, changes
from cloud.web.session import OpsUser
from cloud.web.templates import render, translator

router = APIRouter()
TargetStatus = Literal["done", "failed", "timeout", "skipped", "sent", "waiting"]
STATUSES: tuple[str, ...] = get_args(TargetStatus)
TARGET_PAGE = 100
Action = Literal["pause", "resume", "halt", "cancel"]


@dataclass(frozen=True)
class Stage:
    """One stage's targets by status (the bar's segments in :data:`STATUSES` order)."""

    index: int
    percent: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(self.counts[s] for s in ("done", "failed", "timeout", "skipped"))

    def segments(self, width: float) -> list[tuple[str, float, float]]:
        """(status, x, width) of the bar's rectangles, over ``width``."""
        out, x = [], 0.0
        for status in STATUSES:
            w = width * self.counts[status] / self.total if self.total else 0.0
            if w:
                out.append((status, round(x, 2), round(w, 2)))
            x += w
        return out


def stages(conn: psycopg.Connection, campaign: campaigns.Campaign) -> list[Stage]:
    counts = {(stage, status): int(n) for stage, status, n in conn.execute(
        "SELECT stage, status, count(*) FROM ft.campaign_targets WHERE campaign_id = %s GROUP BY 1, 2",
        (campaign.id,))}
    return [Stage(i, percent, {s: counts.get((i, s), 0) for s in STATUSES})
            for i, percent in enumerate(campaign.stages)]


def targets(conn: psycopg.Connection, tenant: str, campaign_id: int, status: str | None, after: int | None
            ) -> tuple[list[campaigns.Target], int | None]:
    """A page of targets in rollout order (after position ``after``), and the next page's key."""
    with conn.cursor(row_factory=class_row(campaigns.Target)) as cur:
        rows = cur.execute(
            "SELECT subject_id, stage, position, status, ota_job_id, detail, sent_at, published_at, finished_at"
            " FROM ft.campaign_targets WHERE tenant_id = %s AND campaign_id = %s AND (%s::text IS NULL OR status = %s)"
            " AND position > %s ORDER BY position LIMIT %s",
            (tenant, campaign_id, status, status, -1 if after is None else after, TARGET_PAGE + 1)).fetchall()
    more = len(rows) > TARGET_PAGE
    return rows[:TARGET_PAGE], (rows[TARGET_PAGE - 1].position if more else None)


@router.get("/campaigns")
def campaigns_page(request: Request, user: OpsUser, notice: str | None = None) -> Response:
    with session.tenant_conn(request, user) as conn:
        found = campaigns.list_campaigns(conn, user.tenant_id)
        rollouts = {c.id: stages(conn, c) for c in found}
    return render(request, "ops/campaigns.html", {"user": user, "campaigns": found, "rollouts": rollouts,
                                                  "notice": notice, "can_write": user.principal.can(actions.WRITE)})


def _new_page(request: Request, user: session.PageUser, kind: str, *, values: dict[str, str] | None = None,
              errors: list[str] | None = None, status_code: int = 200) -> Response:
    with session.tenant_conn(request, user) as conn:
        releases = downlink.list_releases(conn) if kind == "node" else []
        farms = [r[0] for r in conn.execute("SELECT id FROM ft.farms WHERE tenant_id = %s ORDER BY id",
                                            (user.tenant_id,))]
    defaults = {"stages": "5, 25, 100", "max_failure_percent": "10", "stage_timeout_hours": "6"}
    return render(request, "ops/campaign_new.html", {
        "user": user, "kind": kind, "releases": releases, "farms": farms, "values": defaults | (values or {}),
        "errors": errors or [], "can_write": user.principal.can(actions.WRITE)}, status_code=status_code)


@router.get("/campaigns/new")
def new_campaign(request: Request, user: OpsUser, kind: Literal["node", "gateway"] = "node") -> Response:
    return _new_page(request, user, kind)


def campaign_body(fields: dict[str, str]) -> dict[str, Any]:
    """The API's CampaignCreate body from the form (numbers that are not numbers are left for it to refuse)."""
    def number(text: str) -> Any:
        text = text.strip()
        try:
            return float(text) if "." in text else int(text)
        except ValueError:
            return text

    kind = fields.get("kind", "node")
    target = {k: fields.get(f"target_{k}", "").strip() or None for k in ("spec", "firmware", "farm_id")}
    hours, percent = number(fields.get("stage_timeout_hours", "")), number(fields.get("max_failure_percent", ""))
    body: dict[str, Any] = {
        "name": fields.get("name", ""), "kind": kind, "target": {k: v for k, v in target.items() if v},
        "stages": [number(s) for s in fields.get("stages", "").replace("，", ",").split(",") if s.strip()],
        "stage_timeout_s": int(hours * 3600) if isinstance(hours, int | float) else hours,
        "max_failure_rate": percent / 100 if isinstance(percent, int | float) else percent}
    if kind == "node":
        body["firmware_version"] = number(fields.get("firmware_version", ""))
    else:
        body |= {k: fields.get(k, "").strip() or None for k in ("agent_version", "agent_url", "agent_sha256")}
    return body


@router.post("/campaigns")
async def create_campaign(request: Request, user: OpsUser) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 2000}
    refusal = actions.check(request, user, fields.get(session.FORM_FIELD))
    if refusal is not None:
        return refusal
    kind = "gateway" if fields.get("kind") == "gateway" else "node"
    try:
        body = campaigns.CampaignCreate.model_validate(campaign_body(fields))
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else str(e["msg"])
                  for e in exc.errors()]
        return _new_page(request, user, kind, values=fields, errors=errors, status_code=422)
    _, _n = translator(request)
    try:
        kek = session.settings_of(request).kek_bytes()
    except ValueError:
        return _new_page(request, user, kind, values=fields, status_code=503,
                         errors=[_("Keys cannot be used on this server (no key-encryption key is configured).")])
    try:
        with session.tenant_conn(request, user) as conn:
            campaign = campaigns.create_campaign(conn, user.tenant_id, body, kek, actions.by(user), datetime.now(UTC))
            actions.audit(conn, user, "campaign.created", "campaign", str(campaign.id), "",
                          **body.model_dump(exclude_none=True))
    except registry.RegistryError as exc:
        return _new_page(request, user, kind, values=fields, errors=[str(exc)], status_code=422)
    return actions.back(f"/ops/campaigns/{campaign.id}", "/ops/campaigns", "created")


@router.get("/campaigns/{campaign_id}")
def campaign_page(request: Request, campaign_id: int, user: OpsUser,
                  status: Annotated[TargetStatus | None, Query()] = None,
                  after: Annotated[int | None, Query(ge=0)] = None, notice: str | None = None) -> Response:
    with session.tenant_conn(request, user) as conn:
        try:
            campaign = campaigns.get_campaign(conn, user.tenant_id, campaign_id)
        except registry.NotFound:
            return render(request, "base/not_found.html", {"user": user, "area": "ops"}, status_code=404)
        progress = campaigns.progress(conn, campaign_id)
        rollout = stages(conn, campaign)
        rows, next_after = targets(conn, user.tenant_id, campaign_id, status, after)
    return render(request, "ops/campaign.html", {
        "user": user, "campaign": campaign, "progress": progress, "stages": rollout, "targets": rows,
        "status": status, "next_after": next_after, "notice": notice, "statuses": STATUSES,
        "can_write": user.principal.can(actions.WRITE)})


@router.post("/campaigns/{campaign_id}/{action}")
def change_campaign(request: Request, campaign_id: int, action: Action, user: OpsUser, csrf_token: actions.Token,
                    note: actions.Note = "") -> Response:
    refusal = actions.check(request, user, csrf_token)
    if refusal is not None:
        return refusal
    page = f"/ops/campaigns/{campaign_id}"
    try:
        with session.tenant_conn(request, user) as conn:
            if action == "halt":
                reason = note.strip() or f"halted by {actions.by(user)}"
                changes.halt_campaign(conn, user.tenant_id, campaign_id, reason)
            else:
                {"pause": campaigns.pause, "resume": campaigns.resume, "cancel": campaigns.cancel}[action](
                    conn, user.tenant_id, campaign_id)
            past = {"pause": "paused", "resume": "resumed", "halt": "halted", "cancel": "cancelled"}[action]
            actions.audit(conn, user, f"campaign.{past}", "campaign", str(campaign_id), note)
    except registry.NotFound:
        return render(request, "base/not_found.html", {"user": user, "area": "ops"}, status_code=404)
    except registry.Conflict:
        return actions.back(page, page, "not_now")
    return actions.back(page, page, past)
