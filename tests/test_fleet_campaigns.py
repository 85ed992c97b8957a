"""OTA campaigns on a simulated fleet: staged rollout, automatic halt when 30 % of the nodes fail, pause and resume,
timeouts, and gateway agent campaigns.  Nodes answer through their gateway's signed heartbeats, which the fleet
consumer turns into done or failed OTA jobs, as in production; a node's build goes from its birth through the
gateway's intake and heartbeat to the OTA job it completes."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from cloud.downlink import frames, service
from cloud.fleet import campaigns
from cloud.fleet.consumer import FleetConsumer
from cloud.store import registry
from contract import models, topics
from contract.agent_update import parse_agent_update
from contract.telemetry import encode_body, sign, verify
from edge_agent.config import IntakeConfig
from edge_agent.health import HealthReporter, HealthSources
from edge_agent.intake import Intake
from edge_agent.outbox import Outbox
from tests.support.app_db import app_connect
from tests.support.ingest import KEK, NODE_SPEC, Site, register_site

NODES = 20


@pytest.fixture
def fresh_db(module_app_db) -> str:
    return module_app_db.owner_url


def fleet_of_nodes(url: str, n: int = NODES) -> tuple[Site, list[str]]:
    """A site whose tenant has ``n`` nodes (the site's own and ``n - 1`` more) behind its gateway."""
    site = register_site(url, bus_devices=0)
    nodes = [site.node] + [f"{site.node}-{i:02d}" for i in range(1, n)]
    with psycopg.connect(url) as conn:
        for node in nodes[1:]:
            registry.register_device(conn, site.tenant, node, "node", site.farm, site.gw, NODE_SPEC, os.urandom(32),
                                     KEK)
        conn.commit()
    return site, nodes


def release(url: str) -> int:
    """A new firmware release (platform-wide, so each test takes its own build number)."""
    with psycopg.connect(url) as conn:
        build = (conn.execute("SELECT coalesce(max(version), 100) + 1 FROM ft.firmware_releases").fetchone() or [0])[0]
        service.create_release(conn, build, [frames.FirmwareFile("main.py", b"import firmware.main\n"),
                                             frames.FirmwareFile("firmware/cycle.mpy", b"M\x06" + os.urandom(64))],
                               "test")
        conn.commit()
    return build


def heartbeat(site: Site, devices: dict[str, models.DeviceHealth], sw: str = "edge/1.0.0") -> bytes:
    body = models.Health(k="health", gw=site.gw, at=int(time.time() * 1000), sw=sw, uptime_s=5.0, devices=devices)
    return sign(site.gw_key, body.model_dump_json(exclude_none=True).encode())


class SimulatedFleet:
    """The nodes' side: each node sent a manifest installs it (reports the build) or refuses it (reports why)."""

    def __init__(self, url: str, site: Site, failing: set[str]) -> None:
        self.url, self.site, self.failing = url, site, failing
        self.conn = app_connect(url, autocommit=True)
        self.consumer = FleetConsumer(self.conn, KEK)

    def answer(self, build: int, silent: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        with psycopg.connect(self.url) as conn:
            sent = [r[0] for r in conn.execute("SELECT device_id FROM ft.ota_jobs WHERE tenant_id = %s AND version = %s"
                                               " AND status IN ('pending', 'published')", (self.site.tenant, build))]
        devices = {}
        for node in sent:
            if node in silent:
                continue
            if node in self.failing:
                devices[node] = models.DeviceHealth(state="ok", fw="fw/1", refused={"ota_refused.bad_hash": 1})
            else:
                devices[node] = models.DeviceHealth(state="ok", fw=f"fw/{build}")
        outcome = self.consumer.handle(topics.gateway(self.site.tenant, self.site.gw, "health"),
                                       heartbeat(self.site, devices))
        assert outcome == "stored"

    def close(self) -> None:
        self.conn.close()


def create(url: str, tenant: str, now: datetime, **fields: object) -> campaigns.Campaign:
    with app_connect(url, tenant=tenant) as conn:
        made = campaigns.create_campaign(conn, tenant, campaigns.CampaignCreate(**fields), KEK, "ops", now)  # type: ignore[arg-type]
        conn.commit()
    return made


def advance(url: str, campaign: campaigns.Campaign, now: datetime) -> campaigns.Campaign:
    with app_connect(url) as conn:  # platform scope, as the fleet loop
        result = campaigns.advance(conn, campaign, KEK, now)
        conn.commit()
    return result


def targets(url: str, campaign: campaigns.Campaign) -> list[campaigns.Target]:
    with app_connect(url, tenant=campaign.tenant_id) as conn:
        return campaigns.list_targets(conn, campaign.tenant_id, campaign.id)


def test_staged_rollout_halts_when_30_percent_fail(fresh_db: str) -> None:
    site, nodes = fleet_of_nodes(fresh_db)
    build = release(fresh_db)
    now = datetime.now(UTC)
    campaign = create(fresh_db, site.tenant, now, name="fw rollout", kind="node", firmware_version=build,
                      target={"spec": NODE_SPEC.split("@")[0], "farm_id": site.farm}, stages=[10, 50, 100],
                      stage_timeout_s=600, max_failure_rate=0.2)
    order = [t.subject_id for t in targets(fresh_db, campaign)]
    assert sorted(order) == sorted(nodes)
    assert [t.stage for t in targets(fresh_db, campaign)] == [0] * 2 + [1] * 8 + [2] * 10
    # 30 % of the fleet fails: none in the first stage, three in the second
    failing = {order[i] for i in (5, 7, 9, 12, 14, 17)}
    fleet = SimulatedFleet(fresh_db, site, failing)
    try:
        assert [t.status for t in targets(fresh_db, campaign)][:3] == ["sent", "sent", "waiting"]
        fleet.answer(build)
        campaign = advance(fresh_db, campaign, now + timedelta(seconds=10))
        assert campaign.state == "running" and campaign.stage == 1  # stage 1 done: stage 2 sent
        statuses = [t.status for t in targets(fresh_db, campaign)]
        assert statuses[:2] == ["done", "done"] and statuses[2:10] == ["sent"] * 8 and statuses[10:] == ["waiting"] * 10

        fleet.answer(build)
        campaign = advance(fresh_db, campaign, now + timedelta(seconds=20))
    finally:
        fleet.close()
    assert campaign.state == "halted"
    assert campaign.halted_reason and "failure rate 30%" in campaign.halted_reason
    final = {t.subject_id: t for t in targets(fresh_db, campaign)}
    assert {s for s, t in final.items() if t.status == "failed"} == {order[i] for i in (5, 7, 9)}
    assert all(final[order[i]].detail == "refused by the node: bad_hash" for i in (5, 7, 9))
    assert all(final[s].status == "waiting" for s in order[10:])  # the last stage was never sent
    with psycopg.connect(fresh_db) as conn:
        jobs = conn.execute("SELECT count(*) FROM ft.ota_jobs WHERE version = %s", (build,)).fetchone()
    assert jobs == (10,)
    # a halted campaign stays halted until someone resumes it
    assert advance(fresh_db, campaign, now + timedelta(seconds=30)).state == "halted"


def test_rollout_completes_pause_resume_and_timeout(fresh_db: str) -> None:
    site, nodes = fleet_of_nodes(fresh_db, 6)
    build = release(fresh_db)
    now = datetime.now(UTC)
    campaign = create(fresh_db, site.tenant, now, name="small", kind="node", firmware_version=build,
                      stages=[50, 100], stage_timeout_s=300, max_failure_rate=0.5)
    order = [t.subject_id for t in targets(fresh_db, campaign)]
    assert sorted(order) == sorted(nodes)
    fleet = SimulatedFleet(fresh_db, site, failing=set())
    try:
        with app_connect(fresh_db, tenant=site.tenant) as conn:
            paused = campaigns.pause(conn, site.tenant, campaign.id)
            conn.commit()
        assert paused.state == "paused"
        with app_connect(fresh_db) as conn:  # the fleet loop advances running campaigns only
            assert [c.id for c in campaigns.list_campaigns(conn, site.tenant, state="running")] == []
        with app_connect(fresh_db, tenant=site.tenant) as conn:
            campaign = campaigns.resume(conn, site.tenant, campaign.id)
            conn.commit()
        silent = {order[0]}  # one node of stage 1 never answers
        fleet.answer(build, silent=silent)
        campaign = advance(fresh_db, campaign, now + timedelta(seconds=10))
        assert campaign.stage == 0  # waiting for the silent node
        campaign = advance(fresh_db, campaign, campaign.stage_started_at + timedelta(seconds=301))  # type: ignore[operator]
        assert campaign.stage == 1 and targets(fresh_db, campaign)[0].status == "timeout"
        fleet.answer(build)
        campaign = advance(fresh_db, campaign, now + timedelta(seconds=400))
    finally:
        fleet.close()
    assert campaign.state == "done"
    result = [t.status for t in targets(fresh_db, campaign)]
    assert result.count("done") == 5 and result.count("timeout") == 1
    with app_connect(fresh_db, tenant=site.tenant) as conn, pytest.raises(registry.Conflict, match="is done"):
        campaigns.pause(conn, site.tenant, campaign.id)


def test_gateway_agent_campaign(fresh_db: str) -> None:
    site, _ = fleet_of_nodes(fresh_db, 1)
    now = datetime.now(UTC)
    sha = "ab" * 32
    campaign = create(fresh_db, site.tenant, now, name="agent 1.1", kind="gateway", agent_version="1.1.0",
                      agent_url="https://releases.example.org/edge-1.1.0.tar.gz", agent_sha256=sha, stages=[100],
                      stage_timeout_s=600, max_failure_rate=0)
    with app_connect(fresh_db) as conn:
        [(campaign_id, tenant, gw, frame)] = campaigns.unpublished_updates(conn)
        campaigns.mark_published(conn, campaign_id, gw)
        assert campaigns.unpublished_updates(conn) == []
        conn.commit()
    assert (campaign_id, tenant, gw) == (campaign.id, site.tenant, site.gw)
    update = parse_agent_update(verify(frame, site.gw_key))  # signed with the gateway's own key
    assert (update.gw, update.version, update.sha256, update.campaign) == (site.gw, "1.1.0", sha, campaign.id)

    with app_connect(fresh_db, autocommit=True) as conn:  # the gateway comes back running the new release
        consumer = FleetConsumer(conn, KEK)
        assert consumer.handle(topics.gateway(site.tenant, site.gw, "health"),
                               heartbeat(site, {}, sw="edge/1.1.0")) == "stored"
    campaign = advance(fresh_db, campaign, now + timedelta(seconds=5))
    assert campaign.state == "done" and [t.status for t in targets(fresh_db, campaign)] == ["done"]


def test_campaign_checks() -> None:
    with pytest.raises(ValidationError, match="stages must grow and end at 100"):
        campaigns.CampaignCreate(name="x", kind="node", firmware_version=3, stages=[50, 20, 100])
    with pytest.raises(ValidationError, match="needs agent_version, agent_url and agent_sha256"):
        campaigns.CampaignCreate(name="x", kind="gateway", agent_version="1.0")
    with pytest.raises(ValidationError, match="needs firmware_version"):
        campaigns.CampaignCreate(name="x", kind="node")
    assert [campaigns.stage_of(i, 20, [5, 25, 100]) for i in (0, 1, 4, 5, 19)] == [0, 1, 1, 2, 2]
    assert campaigns.stage_of(0, 3, [5, 100]) == 0  # a stage takes at least one target


def test_no_target_is_refused(fresh_db: str) -> None:
    site, _ = fleet_of_nodes(fresh_db, 1)
    build = release(fresh_db)
    with pytest.raises(registry.Invalid, match="no nodes of tenant"):
        create(fresh_db, site.tenant, datetime.now(UTC), name="none", kind="node", firmware_version=build,
               target={"farm_id": f"farm-{uuid.uuid4().hex[:6]}"})


def test_node_ota_job_completes_from_the_build_its_birth_names(fresh_db: str, tmp_path: Path) -> None:
    """The firmware's birth names its build (firmware/cycle.py); the gateway's intake keeps it, its heartbeat
    carries it, and the fleet consumer completes the node's OTA job by it, whatever the version string says."""
    site, _ = fleet_of_nodes(fresh_db, 1)
    build = release(fresh_db)
    now = datetime.now(UTC)
    campaign = create(fresh_db, site.tenant, now, name="by build", kind="node", firmware_version=build,
                      stages=[100], stage_timeout_s=600, max_failure_rate=0)
    assert [t.status for t in targets(fresh_db, campaign)] == ["sent"]

    outbox = Outbox(tmp_path / "outbox.db", 1 << 20)
    intake = Intake(IntakeConfig(), outbox, "intake-test")
    reporter = HealthReporter(site.gw, site.gw_key, "edge/1.0.0", outbox, HealthSources(node_states=intake.node_states),
                              interval_s=60, publish=lambda _frame: True, clock_synced=lambda: True)

    def birth(fw: str, node_build: int) -> bytes:  # as firmware/cycle.py Node._presence builds it
        return sign(site.node_key, encode_body({"v": 1, "k": "birth", "dev": site.node, "at": int(time.time() * 1000),
                                                "sw": fw, "config_version": 0, "build": node_build}))

    with app_connect(fresh_db, autocommit=True) as conn:
        consumer = FleetConsumer(conn, KEK)
        health_topic = topics.gateway(site.tenant, site.gw, "health")
        try:
            assert intake.handle_state(topics.node(site.node, "state"), birth("fw/0.2.0", build - 1)) == "birth"
            assert consumer.handle(health_topic, reporter.frame()) == "stored"
            assert [t.status for t in targets(fresh_db, campaign)] == ["sent"]  # the old build: not done yet
            # after the OTA: a version string that names no build ("fw/0.3.0"), the new build in the birth
            assert intake.handle_state(topics.node(site.node, "state"), birth("fw/0.3.0", build)) == "birth"
            body = reporter.body()
            assert (body.devices[site.node].fw, body.devices[site.node].build) == ("fw/0.3.0", build)
            assert consumer.handle(health_topic, reporter.frame()) == "stored"
        finally:
            outbox.close()
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT status FROM ft.ota_jobs WHERE device_id = %s AND version = %s",
                            (site.node, build)).fetchone() == ("done",)
        assert conn.execute("SELECT firmware_version FROM ft.node_reported WHERE device_id = %s",
                            (site.node,)).fetchone() == (build,)
    assert advance(fresh_db, campaign, now + timedelta(seconds=5)).state == "done"
