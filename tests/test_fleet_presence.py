"""Presence through the real broker: a gateway's birth, heartbeats, last will and silence, as the fleet service
stores them (as ft_app, under row-level security); forged and misplaced messages change nothing."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.fleet import presence
from cloud.fleet.consumer import firmware_build
from cloud.fleet.service import FleetOptions, FleetService
from contract import models, topics
from contract.telemetry import sign
from tests.support.app_db import app_connect
from tests.support.ingest import Site, register_site, settings
from tests.support.waiting import wait_until


def presence_frame(site: Site, kind: str, key: bytes | None = None, sw: str = "edge/1.0.0") -> bytes:
    body = models.Presence(k=kind, gw=site.gw, at=int(time.time() * 1000), sw=sw)  # type: ignore[arg-type]
    return sign(key or site.gw_key, body.model_dump_json(exclude_none=True).encode())


def heartbeat_frame(site: Site, devices: dict[str, models.DeviceHealth], depth: int = 3,
                    gw: str | None = None) -> bytes:
    body = models.Health(k="health", gw=gw or site.gw, at=int(time.time() * 1000), sw="edge/1.0.0", uptime_s=12.0,
                         disk_free_mb=900.0, outbox=models.OutboxHealth(depth=depth, oldest_age_s=4.0, dropped=0,
                                                                        bytes=2048),
                         devices=devices)
    return sign(site.gw_key, body.model_dump_json(exclude_none=True).encode())


def gateway_client(host: str, port: int, will: tuple[str, bytes] | None = None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-gw-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv311)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    return client


def state(url: str, tenant: str, kind: str, sid: str) -> presence.SubjectState | None:
    with app_connect(url, tenant=tenant) as conn:
        return presence.get_state(conn, tenant, kind, sid)  # type: ignore[arg-type]


@pytest.fixture
def site(fresh_db: str) -> Site:
    return register_site(fresh_db, bus_devices=1)


@pytest.fixture
def fleet(fresh_db: str, shared_broker: tuple[str, int]):
    host, port = shared_broker
    options = FleetOptions(client_id=f"fleet-test-{uuid.uuid4().hex[:8]}", interval_s=0.2, gateway_timeout_s=1.5)
    service = FleetService(settings(fresh_db, f"mqtt://{host}:{port}"), options).start()
    assert service.status.subscribed
    yield service
    service.stop()


def test_birth_heartbeat_will_and_timeout(fresh_db: str, site: Site, fleet: FleetService,
                                          shared_broker: tuple[str, int]) -> None:
    host, port = shared_broker
    state_topic = topics.gateway(site.tenant, site.gw, "state")
    health_topic = topics.gateway(site.tenant, site.gw, "health")
    client = gateway_client(host, port, will=(state_topic, presence_frame(site, "will")))
    try:
        client.publish(state_topic, presence_frame(site, "birth"), qos=1, retain=True).wait_for_publish(5)
        assert wait_until(lambda: (s := state(fresh_db, site.tenant, "gateway", site.gw)) is not None and s.online)
        gw = state(fresh_db, site.tenant, "gateway", site.gw)
        assert gw is not None and gw.presence == "birth" and gw.software == "edge/1.0.0"

        node = models.DeviceHealth(last_good_ms=int(time.time() * 1000), state="ok", battery=3650.0,
                                   battery_unit="mV", rssi=-71.0, fw="fw/7")
        stranger = models.DeviceHealth(state="ok", battery=1.0)
        client.publish(health_topic, heartbeat_frame(site, {site.node: node, "not-registered": stranger}), qos=1)
        assert wait_until(lambda: state(fresh_db, site.tenant, "device", site.node) is not None)
        dev = state(fresh_db, site.tenant, "device", site.node)
        assert dev is not None and dev.online and dev.battery == 3650.0 and dev.rssi == -71.0
        assert dev.software == "fw/7" and dev.gateway_id == site.gw
        assert state(fresh_db, site.tenant, "device", "not-registered") is None
        gw = state(fresh_db, site.tenant, "gateway", site.gw)
        assert gw is not None and gw.outbox_depth == 3 and gw.disk_free_mb == 900.0
        with psycopg.connect(fresh_db) as conn:  # the node's build went to the downlink's reported state
            assert conn.execute("SELECT firmware_version FROM ft.node_reported WHERE device_id = %s",
                                (site.node,)).fetchone() == (7,)

        # a forged heartbeat (another key) and one naming another gateway than its topic change nothing
        forged = sign(b"k" * 32, heartbeat_frame(site, {}, depth=99)[81:-1])
        client.publish(health_topic, forged, qos=1).wait_for_publish(5)
        client.publish(health_topic, heartbeat_frame(site, {}, depth=98, gw="gw-other"), qos=1).wait_for_publish(5)
        assert fleet.consumer is not None
        assert wait_until(lambda: fleet.consumer.counts["bad_signature"] >= 1
                          and fleet.consumer.counts["gateway_mismatch"] >= 1)
        gw = state(fresh_db, site.tenant, "gateway", site.gw)
        assert gw is not None and gw.outbox_depth == 3

        # the connection is lost without a DISCONNECT: the broker publishes the will
        client.socket().close()
        assert wait_until(lambda: (s := state(fresh_db, site.tenant, "gateway", site.gw)) is not None
                          and s.presence == "will")
        assert not state(fresh_db, site.tenant, "gateway", site.gw).online  # type: ignore[union-attr]
    finally:
        client.loop_stop()

    # back with heartbeats only, then silent: declared offline after the heartbeat timeout
    client = gateway_client(host, port)
    try:
        client.publish(health_topic, heartbeat_frame(site, {}), qos=1).wait_for_publish(5)
        assert wait_until(lambda: (s := state(fresh_db, site.tenant, "gateway", site.gw)) is not None and s.online)
        assert state(fresh_db, site.tenant, "gateway", site.gw).presence == "heartbeat"  # type: ignore[union-attr]
        assert wait_until(lambda: (s := state(fresh_db, site.tenant, "gateway", site.gw)) is not None
                          and s.presence == "timeout", timeout=10)
        assert fleet.status.role == "owner" and fleet.status.went_offline >= 1
        with app_connect(fresh_db, tenant=site.tenant) as conn:
            points = presence.history(conn, site.tenant, "gateway", site.gw, presence.history_bucket(
                gw.updated_at) - presence.HISTORY_BUCKET)  # type: ignore[union-attr]
        assert points and not points[-1].online and points[-1].heartbeats >= 3
    finally:
        client.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(5)  # leave no retained message
        client.disconnect()
        client.loop_stop()


def test_other_tenant_sees_no_fleet_state(fresh_db: str, site: Site) -> None:
    """Row-level security: another tenant's transaction sees none of the rows the consumer wrote."""
    from cloud.store import registry

    with app_connect(fresh_db) as conn:  # platform scope, as the consumer
        presence.record_presence(conn, site.tenant, site.gw, models.Presence(
            k="birth", gw=site.gw, at=int(time.time() * 1000), sw="edge/1"))
        conn.commit()
    with psycopg.connect(fresh_db) as conn:
        registry.register_tenant(conn, "t-other-" + site.tenant, "Other")
        conn.commit()
    with app_connect(fresh_db, tenant="t-other-" + site.tenant) as conn:
        assert conn.execute("SELECT count(*) FROM ft.fleet_state").fetchone() == (0,)
    assert state(fresh_db, site.tenant, "gateway", site.gw) is not None


@pytest.mark.parametrize(("fw", "build"), [("fw/17", 17), ("fw/0.3.0+17", 17), ("fw/0.3.0-b4", 4), ("fw/0.2.0", None),
                                           (None, None), ("", None)])
def test_firmware_build(fw: str | None, build: int | None) -> None:
    assert firmware_build(fw) == build
