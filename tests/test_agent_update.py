"""A gateway agent update end to end: the fleet service publishes a campaign's signed update over the real broker,
the real agent (a subprocess running ``fieldtrust edge run`` from the current release) receives it on its cloud
connection and hands it over, the updater installs the new release beside it, switches, and switches back when
the new release's heartbeat file never appears; the agent, back on the old release, beats again and does not hand
the failed release over a second time."""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from cloud.fleet import campaigns
from cloud.fleet.service import FleetOptions, FleetService
from contract import models, topics
from contract.telemetry import MAX_BATCH_FRAME_BYTES, verify
from edge_agent import __version__
from edge_agent.config import load_config
from edge_agent.updater import HeartbeatFile, ProcessRestart, ReleaseLayout, Updater, UpdateSpool, run_pending
from fieldtrust import processes
from tests.support.app_db import app_connect
from tests.support.ingest import KEK, register_site, settings
from tests.support.releases import ReleaseServer
from tests.support.waiting import wait_until

#: a release of the real agent: the source tree's, started from the release directory
REAL_AGENT = {"agent.py": "import sys\nfrom fieldtrust.cli.main import app\n"
                          "app(['edge', 'run', '--config', sys.argv[1]], prog_name='fieldtrust')\n"}
#: a release that dies at start: no heartbeat ever
BROKEN_AGENT = {"agent.py": "import sys\nsys.exit(3)\n"}


class Heartbeats:
    """The gateway's heartbeats as the broker carries them, verified with its key."""

    def __init__(self, host: str, port: int, topic: str, key: bytes) -> None:
        self.seen: list[models.Health] = []
        self._key = key
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"hb-{uuid.uuid4().hex[:8]}")
        self._client.on_message = lambda _c, _u, msg: self._keep(msg.payload)
        self._client.on_connect = lambda c, *_a: c.subscribe(topic, qos=0)
        self._client.connect(host, port)
        self._client.loop_start()

    def _keep(self, frame: bytes) -> None:
        body = models.parse(verify(frame, self._key, MAX_BATCH_FRAME_BYTES), expect="health")  # bodies omit Nones
        assert isinstance(body, models.Health)
        self.seen.append(body)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def releases():
    server = ReleaseServer()
    yield server
    server.close()


def test_campaign_update_is_installed_and_switched_back(fresh_db: str, shared_broker: tuple[str, int],
                                                        releases: ReleaseServer, tmp_path: Path) -> None:
    host, port = shared_broker
    site = register_site(fresh_db, bus_devices=0)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": {"id": site.gw, "tenant": site.tenant, "key_hex": site.gw_key.hex(),
                    "data_dir": str(tmp_path / "data")},
        "intake": {"enabled": False},
        "nodes": {"relay": False},
        "uplink": {"broker": {"host": host, "port": port}, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "health": {"interval_s": 0.5},
        "logging": {"file": str(tmp_path / "agent.log")},
    }))
    cfg = load_config(config)
    layout = ReleaseLayout(tmp_path / "opt")
    runner = ProcessRestart(layout, lambda current: [sys.executable, str(current / "agent.py"), str(config)],
                            spawn=processes.spawn)
    beat = HeartbeatFile(cfg.heartbeat_path)
    spool = UpdateSpool(cfg.update_dir)
    heartbeats = Heartbeats(host, port, topics.gateway(site.tenant, site.gw, "health"), site.gw_key)
    fleet: FleetService | None = None
    update_topic = topics.gateway(site.tenant, site.gw, "update")
    try:
        # the gateway runs the real agent from release 1.0.0 (judged healthy by its own heartbeat file)
        first = Updater(layout, runner, beat, health_timeout_s=60).apply(
            releases.publish("1.0.0", REAL_AGENT, gw=site.gw))
        assert (first.result, layout.current_version()) == ("updated", "1.0.0"), first

        # the cloud: a campaign for a broken release 1.1.0; the fleet service signs and publishes it (retained)
        broken = releases.publish("1.1.0", BROKEN_AGENT, gw=site.gw)
        with app_connect(fresh_db, tenant=site.tenant) as conn:
            campaign = campaigns.create_campaign(conn, site.tenant, campaigns.CampaignCreate(
                name="agent 1.1.0", kind="gateway", agent_version="1.1.0", agent_url=broken.url,
                agent_sha256=broken.sha256, stages=[100], stage_timeout_s=600, max_failure_rate=0),
                KEK, "ops", datetime.now(UTC))
            conn.commit()
        fleet = FleetService(settings(fresh_db, f"mqtt://{host}:{port}"),
                             FleetOptions(client_id=f"fleet-upd-{uuid.uuid4().hex[:8]}", interval_s=0.2)).start()
        assert wait_until(lambda: fleet is not None and fleet.status.updates_published >= 1, timeout=20)

        # the agent received it on its cloud connection and left it for the updater
        assert wait_until(spool.pending.exists, timeout=20)
        outcome = run_pending(spool, Updater(layout, runner, beat, health_timeout_s=4), site.gw_key, site.gw)
        rolled_back_at = time.time()
        assert outcome is not None and outcome.result == "rolled_back", outcome
        assert "no heartbeat within 4 s" in outcome.detail and "back on 1.0.0" in outcome.detail
        assert layout.current_version() == "1.0.0" and layout.installed() == ["1.0.0", "1.1.0"]
        assert layout.failed_versions() == ["1.1.0"]
        last = spool.last_outcome()
        assert last is not None and (last["result"], last["sha256"], last["campaign"]) == (
            "rolled_back", broken.sha256, campaign.id)

        # back on 1.0.0 the agent beats again, and the retained 1.1.0 that comes with its new connection is
        # recognised as the release that failed: not handed over again
        assert wait_until(lambda: beat.beat_since(rolled_back_at), timeout=30)
        assert wait_until(lambda: any(h.counters.get("update.failed_before", 0) >= 1 for h in heartbeats.seen),
                          timeout=30), [{k: v for k, v in h.counters.items() if k.startswith("update")}
                                        for h in heartbeats.seen[-3:]]
        assert not spool.pending.exists()
        assert all(h.sw == f"edge/{__version__}" for h in heartbeats.seen)
    finally:
        if fleet is not None:
            fleet.stop()
        heartbeats.close()
        runner.stop()
        cleaner = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"clean-{uuid.uuid4().hex[:8]}")
        cleaner.connect(host, port)
        cleaner.loop_start()
        cleaner.publish(update_topic, b"", qos=1, retain=True).wait_for_publish(5)
        cleaner.disconnect()
        cleaner.loop_stop()
    assert os.path.islink(layout.current)
