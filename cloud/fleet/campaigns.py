"""OTA campaigns: one release to many nodes or gateways, in stages, halted when too many fail.

A campaign picks its targets once, when it is created (nodes by spec, firmware and farm; gateways by
farm and agent version), orders them by a hash of their ids (a stable order that mixes farms), and
gives each a stage: stage *i* takes the targets up to ``stages[i]`` percent of them (at least one).
The fleet loop calls :func:`advance` for every running campaign:

1. what the targets sent so far report: a node's OTA job (cloud.store.downlink; the fleet consumer
   completes or fails it from heartbeats), a gateway's agent version in its heartbeat; a target
   still unfinished when its stage has run ``stage_timeout_s`` has timed out;
2. the failure rate (failed + timed out, over the targets sent, skipped ones aside) above
   ``max_failure_rate`` halts the campaign: nothing more is sent, what was sent stays;
3. a stage whose targets have all finished opens the next one (its targets are sent), or ends the
   campaign after the last.

Sending a node creates its OTA job through :func:`cloud.downlink.service.create_ota_job` (signed
for the node, published by the downlink publisher); a node that already runs the release or a newer
one is skipped.  Sending a gateway signs a :class:`contract.agent_update.AgentUpdate` with the
gateway's key and keeps the frame on the target; the fleet service publishes it (retained) on the
gateway's ``update`` topic and records when.  Paused campaigns send nothing and time nothing out;
resuming restarts the current stage's clock.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloud.downlink import service as downlink_service
from cloud.store import downlink as downlink_store
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, Invalid, NotFound, RegistryError, key_for
from contract.agent_update import AgentUpdate, AgentVersion
from contract.telemetry import sign

log = logging.getLogger(__name__)

AGENT_SOFTWARE_PREFIX = "edge/"  # what a gateway's heartbeat says it runs: "edge/<version>"
_FINISHED = ("done", "failed", "timeout", "skipped")


class CampaignTarget(BaseModel):
    """Which devices: every condition given must hold (none: all nodes, or all gateways, of the tenant)."""

    model_config = ConfigDict(extra="forbid")
    spec: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None, description="nodes: a spec model, or model@version")
    firmware: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="what they run now: a node's firmware as reported or registered, "
                                  "a gateway's agent version")
    farm_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: Literal["node", "gateway"]
    firmware_version: int | None = Field(default=None, ge=1, description="kind node: the firmware release (build)")
    agent_version: AgentVersion | None = Field(default=None, description="kind gateway: the agent release")
    agent_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)] | None = None
    agent_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    target: CampaignTarget = CampaignTarget()
    stages: list[Annotated[int, Field(ge=1, le=100)]] = Field(default=[5, 25, 100], min_length=1, max_length=20,
                                                             description="cumulative percentages, the last 100")
    stage_timeout_s: int = Field(default=6 * 3600, ge=1, le=30 * 86400)
    max_failure_rate: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignCreate:
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)) or self.stages[-1] != 100:
            raise ValueError("stages must grow and end at 100 (e.g. [5, 25, 100])")
        agent = (self.agent_version, self.agent_url, self.agent_sha256)
        if self.kind == "node":
            if self.firmware_version is None or any(v is not None for v in agent):
                raise ValueError("a node campaign needs firmware_version and no agent_* fields")
        else:
            if any(v is None for v in agent) or self.firmware_version is not None:
                raise ValueError("a gateway campaign needs agent_version, agent_url and agent_sha256, "
                                 "and no firmware_version")
            if self.target.spec is not None:
                raise ValueError("target.spec selects nodes; a gateway campaign cannot use it")
        return self


@dataclass(frozen=True)
class Campaign:
    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str
    name: str
    kind: str
    firmware_version: int | None
    agent_version: str | None
    agent_url: str | None
    agent_sha256: str | None
    target: dict[str, Any]
    stages: list[int]
    stage_timeout_s: int
    max_failure_rate: float
    state: str
    """running, paused, halted, done or cancelled"""
    stage: int
    """index into stages of the stage in progress"""
    stage_started_at: datetime | None
    halted_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(frozen=True)
class Target:
    __pydantic_config__ = ROW_SCHEMA
    subject_id: str
    stage: int
    position: int
    status: str
    """waiting, sent, done, failed, timeout or skipped"""
    ota_job_id: int | None
    detail: str
    sent_at: datetime | None
    published_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Progress:
    """A campaign's targets counted by status, and its failure rate so far."""

    counts: dict[str, int]
    failure_rate: float


_CAMPAIGN = ("SELECT id, tenant_id, name, kind, firmware_version, agent_version, agent_url, agent_sha256, target,"
             " stages, stage_timeout_s, max_failure_rate, state, stage, stage_started_at, halted_reason, created_at,"
             " created_by, updated_at FROM ft.campaigns")
_TARGET = ("SELECT subject_id, stage, position, status, ota_job_id, detail, sent_at, published_at, finished_at"
           " FROM ft.campaign_targets")


# -- creating -------------------------------------------------------------------------------------------


def select_targets(conn: psycopg.Connection, tenant: str, kind: str, target: CampaignTarget) -> list[str]:
    """Ids of the tenant's nodes or gateways that match ``target``."""
    if kind == "node":
        rows = conn.execute(
            "SELECT d.id FROM ft.devices d LEFT JOIN ft.fleet_state s ON s.subject_kind = 'device'"
            " AND s.subject_id = d.id WHERE d.tenant_id = %(t)s AND d.kind = 'node'"
            " AND (%(spec)s::text IS NULL OR d.spec_key = %(spec)s OR d.spec_key LIKE %(spec)s || '@%%')"
            " AND (%(farm)s::text IS NULL OR d.farm_id = %(farm)s)"
            " AND (%(fw)s::text IS NULL OR coalesce(s.software, d.firmware_version) = %(fw)s)",
            {"t": tenant, "spec": target.spec, "farm": target.farm_id, "fw": target.firmware}).fetchall()
    else:
        software = None if target.firmware is None else AGENT_SOFTWARE_PREFIX + target.firmware
        rows = conn.execute(
            "SELECT g.id FROM ft.gateways g LEFT JOIN ft.fleet_state s ON s.subject_kind = 'gateway'"
            " AND s.subject_id = g.id WHERE g.tenant_id = %(t)s AND (%(farm)s::text IS NULL OR g.farm_id = %(farm)s)"
            " AND (%(sw)s::text IS NULL OR s.software = %(sw)s)",
            {"t": tenant, "farm": target.farm_id, "sw": software}).fetchall()
    return [r[0] for r in rows]


def stage_of(position: int, total: int, stages: Sequence[int]) -> int:
    """The stage that sends the target at ``position`` (0-based) of ``total``."""
    for index, percent in enumerate(stages):
        if position < max(1, math.ceil(total * percent / 100)):
            return index
    return len(stages) - 1


def create_campaign(conn: psycopg.Connection, tenant: str, body: CampaignCreate, kek: bytes, created_by: str,
                    now: datetime) -> Campaign:
    """Store the campaign and its targets and send its first stage (one transaction)."""
    with conn.transaction():
        if body.kind == "node":
            downlink_store.get_release(conn, body.firmware_version)  # type: ignore[arg-type]
        ids = select_targets(conn, tenant, body.kind, body.target)
        if not ids:
            raise Invalid(f"no {body.kind}s of tenant {tenant!r} match the target {body.target.model_dump()}")
        row = conn.execute(
            "INSERT INTO ft.campaigns (tenant_id, name, kind, firmware_version, agent_version, agent_url,"
            " agent_sha256, target, stages, stage_timeout_s, max_failure_rate, stage_started_at, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (tenant, body.name, body.kind, body.firmware_version, body.agent_version, body.agent_url,
             body.agent_sha256, Jsonb(body.target.model_dump(exclude_none=True)), body.stages, body.stage_timeout_s,
             body.max_failure_rate, now, created_by)).fetchone()
        assert row is not None
        campaign_id = row[0]
        ordered = sorted(ids, key=lambda i: hashlib.sha256(f"{campaign_id}:{i}".encode()).digest())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ft.campaign_targets (campaign_id, tenant_id, subject_id, stage, position)"
                            " VALUES (%s, %s, %s, %s, %s)",
                            [(campaign_id, tenant, sid, stage_of(n, len(ordered), body.stages), n)
                             for n, sid in enumerate(ordered)])
        campaign = get_campaign(conn, tenant, campaign_id)
        _send_stage(conn, campaign, kek, now)
    return get_campaign(conn, tenant, campaign_id)


# -- reading --------------------------------------------------------------------------------------------


def get_campaign(conn: psycopg.Connection, tenant: str, campaign_id: int) -> Campaign:
    rows = _all(conn, Campaign, _CAMPAIGN + " WHERE tenant_id = %s AND id = %s", (tenant, campaign_id))
    if not rows:
        raise NotFound(f"campaign {campaign_id} not found in tenant {tenant!r}")
    return rows[0]


def list_campaigns(conn: psycopg.Connection, tenant: str | None, *, state: str | None = None) -> list[Campaign]:
    """A tenant's campaigns, newest first (``tenant`` None: every one the scope shows)."""
    return _all(conn, Campaign, _CAMPAIGN + " WHERE (%s::text IS NULL OR tenant_id = %s)"
                " AND (%s::text IS NULL OR state = %s) ORDER BY id DESC", (tenant, tenant, state, state))


def list_targets(conn: psycopg.Connection, tenant: str, campaign_id: int) -> list[Target]:
    get_campaign(conn, tenant, campaign_id)
    return _all(conn, Target, _TARGET + " WHERE tenant_id = %s AND campaign_id = %s ORDER BY position",
                (tenant, campaign_id))


def progress(conn: psycopg.Connection, campaign_id: int) -> Progress:
    counts = dict.fromkeys(("waiting", "sent", *_FINISHED), 0) | dict(conn.execute(
        "SELECT status, count(*) FROM ft.campaign_targets WHERE campaign_id = %s GROUP BY status",
        (campaign_id,)).fetchall())
    sent = sum(counts[s] for s in ("sent", "done", "failed", "timeout"))
    failed = counts["failed"] + counts["timeout"]
    return Progress(counts, failed / sent if sent else 0.0)


# -- controlling ----------------------------------------------------------------------------------------


def pause(conn: psycopg.Connection, tenant: str, campaign_id: int) -> Campaign:
    return _set_state(conn, tenant, campaign_id, "paused", ("running",))


def resume(conn: psycopg.Connection, tenant: str, campaign_id: int) -> Campaign:
    """Run a paused or halted campaign again; the current stage's clock starts anew."""
    return _set_state(conn, tenant, campaign_id, "running", ("paused", "halted"))


def cancel(conn: psycopg.Connection, tenant: str, campaign_id: int) -> Campaign:
    return _set_state(conn, tenant, campaign_id, "cancelled", ("running", "paused", "halted"))


def _set_state(conn: psycopg.Connection, tenant: str, campaign_id: int, state: str, allowed: tuple[str, ...]
               ) -> Campaign:
    campaign = get_campaign(conn, tenant, campaign_id)
    if campaign.state not in allowed:
        raise Conflict(f"campaign {campaign_id} is {campaign.state}; it can be made {state} only when "
                       f"{' or '.join(allowed)}")
    conn.execute("UPDATE ft.campaigns SET state = %s, halted_reason = CASE WHEN %s = 'running' THEN NULL"
                 " ELSE halted_reason END, stage_started_at = CASE WHEN %s = 'running' THEN now()"
                 " ELSE stage_started_at END, updated_at = now() WHERE id = %s", (state, state, state, campaign_id))
    return get_campaign(conn, tenant, campaign_id)


# -- the fleet loop's step ------------------------------------------------------------------------------


def advance(conn: psycopg.Connection, campaign: Campaign, kek: bytes, now: datetime) -> Campaign:
    """One step of a running campaign (see the module docstring); call in a transaction."""
    _refresh(conn, campaign, now)
    result = progress(conn, campaign.id)
    if result.failure_rate > campaign.max_failure_rate:
        reason = (f"failure rate {result.failure_rate:.0%} above the limit {campaign.max_failure_rate:.0%} "
                  f"in stage {campaign.stage + 1} of {len(campaign.stages)} "
                  f"({result.counts['failed']} failed, {result.counts['timeout']} timed out)")
        conn.execute("UPDATE ft.campaigns SET state = 'halted', halted_reason = %s, updated_at = now()"
                     " WHERE id = %s", (reason, campaign.id))
        log.warning("campaign %d of tenant %s halted: %s", campaign.id, campaign.tenant_id, reason)
        return get_campaign(conn, campaign.tenant_id, campaign.id)
    open_now = conn.execute("SELECT count(*) FROM ft.campaign_targets WHERE campaign_id = %s AND stage <= %s"
                            " AND status IN ('waiting', 'sent')", (campaign.id, campaign.stage)).fetchone()
    if open_now is not None and open_now[0] == 0:
        if campaign.stage + 1 >= len(campaign.stages):
            conn.execute("UPDATE ft.campaigns SET state = 'done', updated_at = now() WHERE id = %s", (campaign.id,))
        else:
            conn.execute("UPDATE ft.campaigns SET stage = stage + 1, stage_started_at = %s, updated_at = now()"
                         " WHERE id = %s", (now, campaign.id))
            _send_stage(conn, get_campaign(conn, campaign.tenant_id, campaign.id), kek, now)
    return get_campaign(conn, campaign.tenant_id, campaign.id)


def _refresh(conn: psycopg.Connection, campaign: Campaign, now: datetime) -> None:
    if campaign.kind == "node":
        conn.execute(
            "UPDATE ft.campaign_targets t SET status = CASE j.status WHEN 'superseded' THEN 'skipped' ELSE j.status"
            " END, detail = CASE WHEN j.status = 'superseded' THEN 'a newer OTA job replaced it' ELSE j.detail END,"
            " finished_at = coalesce(j.finished_at, %s) FROM ft.ota_jobs j WHERE t.campaign_id = %s"
            " AND t.status = 'sent' AND j.id = t.ota_job_id AND j.status IN ('done', 'failed', 'superseded')",
            (now, campaign.id))
    else:
        conn.execute(
            "UPDATE ft.campaign_targets t SET status = 'done', finished_at = %s FROM ft.fleet_state s"
            " WHERE t.campaign_id = %s AND t.status = 'sent' AND s.subject_kind = 'gateway'"
            " AND s.subject_id = t.subject_id AND s.software = %s AND s.last_seen_at >= t.sent_at",
            (now, campaign.id, AGENT_SOFTWARE_PREFIX + (campaign.agent_version or "")))
    if campaign.stage_started_at is not None:
        conn.execute(
            "UPDATE ft.campaign_targets SET status = 'timeout', finished_at = %s,"
            " detail = 'no success reported within the stage timeout' WHERE campaign_id = %s AND status = 'sent'"
            " AND %s >= %s::timestamptz + %s * interval '1 second'",
            (now, campaign.id, now, campaign.stage_started_at, campaign.stage_timeout_s))


def _send_stage(conn: psycopg.Connection, campaign: Campaign, kek: bytes, now: datetime) -> None:
    waiting = [r[0] for r in conn.execute(
        "SELECT subject_id FROM ft.campaign_targets WHERE campaign_id = %s AND stage <= %s AND status = 'waiting'"
        " ORDER BY position", (campaign.id, campaign.stage))]
    for subject in waiting:
        status, job_id, frame, detail = _send_one(conn, campaign, subject, kek, now)
        conn.execute("UPDATE ft.campaign_targets SET status = %s, ota_job_id = %s, frame = %s, detail = %s,"
                     " sent_at = %s, finished_at = CASE WHEN %s IN ('skipped', 'failed') THEN %s END"
                     " WHERE campaign_id = %s AND subject_id = %s",
                     (status, job_id, frame, detail, now, status, now, campaign.id, subject))


def _send_one(conn: psycopg.Connection, campaign: Campaign, subject: str, kek: bytes, now: datetime
              ) -> tuple[str, int | None, bytes | None, str]:
    """(status, OTA job id, update frame, detail) of sending the release to one target."""
    if campaign.kind == "node":
        assert campaign.firmware_version is not None
        _config, running, _at = downlink_store.reported(conn, campaign.tenant_id, subject)
        if running is not None and running >= campaign.firmware_version:
            return "skipped", None, None, f"runs build {running} already"
        try:
            job = downlink_service.create_ota_job(conn, campaign.tenant_id, subject, campaign.firmware_version, kek,
                                                  f"campaign:{campaign.id}")
        except RegistryError as exc:  # no gateway, every key revoked, removed meanwhile: it cannot be sent
            return "failed", None, None, f"cannot send: {exc}"
        return "sent", job.id, None, ""
    epoch_row = conn.execute("SELECT max(epoch) FROM ft.keys WHERE owner_kind = 'gateway' AND owner_id = %s"
                             " AND revoked_at IS NULL", (subject,)).fetchone()
    key = None if epoch_row is None or epoch_row[0] is None else key_for(
        conn, "gateway", subject, epoch_row[0], kek, tenant=campaign.tenant_id)
    if key is None:
        return "failed", None, None, "cannot send: the gateway has no usable key"
    update = AgentUpdate(gw=subject, version=campaign.agent_version, url=campaign.agent_url,  # type: ignore[arg-type]
                         sha256=campaign.agent_sha256, issued=int(time.time() * 1000),  # type: ignore[arg-type]
                         campaign=campaign.id)
    return "sent", None, sign(key, update.model_dump_json().encode()), ""


def unpublished_updates(conn: psycopg.Connection) -> list[tuple[int, str, str, bytes]]:
    """(campaign id, tenant, gateway, frame) of gateway updates sent but not yet published to the broker."""
    rows = conn.execute(
        "SELECT t.campaign_id, t.tenant_id, t.subject_id, t.frame FROM ft.campaign_targets t"
        " JOIN ft.campaigns c ON c.id = t.campaign_id WHERE t.status = 'sent' AND t.frame IS NOT NULL"
        " AND t.published_at IS NULL AND c.state = 'running' ORDER BY t.sent_at").fetchall()
    return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]


def mark_published(conn: psycopg.Connection, campaign_id: int, gateway_id: str) -> None:
    conn.execute("UPDATE ft.campaign_targets SET published_at = now() WHERE campaign_id = %s AND subject_id = %s",
                 (campaign_id, gateway_id))


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
