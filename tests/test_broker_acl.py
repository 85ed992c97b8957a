"""Broker access control: the files `fieldtrust cloud broker-config` writes, loaded by a real Mosquitto.

A private Mosquitto (never the shared one) runs with the generated password and ACL files; real
MQTT 5 clients show that a gateway cannot publish as, or read, another gateway, cannot forge
receipts, that the ingest credential receives uplinks through its shared subscription, and that the fleet
credential reads every gateway's heartbeats and presence and writes agent updates that only their gateway reads.
"""

from __future__ import annotations

import base64
import queue
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from cloud import broker_acl, keys
from cloud.store import registry
from contract import topics
from fieldtrust import processes
from fieldtrust.cli.main import app
from fieldtrust.services.mosquitto import PrivateMosquitto

KEK = bytes(32)
TENANT = "coop-acl"


def test_password_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.touch()
    proc = processes.spawn(["mosquitto_passwd", "-b", str(path), "alice", "s3cret pass"], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    user, theirs = path.read_text().strip().split(":", 1)
    _, seven, iterations, salt, _ = theirs.split("$")
    assert (user, seven) == ("alice", "7")
    ours = broker_acl.hash_password("s3cret pass", salt=base64.b64decode(salt), iterations=int(iterations))
    assert ours == theirs
    assert broker_acl.hash_password("s3cret pass") != broker_acl.hash_password("s3cret pass")  # salted


def test_acl_file_grants_each_gateway_only_its_own_topics() -> None:
    accounts = [
        broker_acl.BrokerAccount("ingest", "$7$1$x$y", "ingest"),
        broker_acl.BrokerAccount("gw-a", "$7$1$x$y", "gateway", "t1", "gw-a"),
    ]
    acl = broker_acl.render_acl_file(accounts)
    gw_block = acl.split("user gw-a\n")[1]
    assert gw_block.splitlines() == [
        "topic write ft/v1/t1/gw/gw-a/up", "topic write ft/v1/t1/gw/gw-a/health", "topic write ft/v1/t1/gw/gw-a/state",
        "topic read ft/v1/t1/gw/gw-a/receipt", "topic read ft/v1/t1/gw/gw-a/config",
        "topic read ft/v1/t1/gw/gw-a/update",
        "topic read ft/v1/t1/gw/gw-a/node/+/+", "topic read ft/v1/t1/gw/gw-a/file/+",
    ]
    assert "topic read ft/v1/+/gw/+/up" in acl and "topic write ft/v1/+/gw/+/receipt" in acl
    fleet = broker_acl.render_acl_file([broker_acl.BrokerAccount("fleet", "$7$1$x$y", "fleet")])
    assert fleet.split("user fleet\n")[1].splitlines() == [
        "topic write ft/v1/+/gw/+/update", "topic read ft/v1/+/gw/+/health", "topic read ft/v1/+/gw/+/state"]
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        broker_acl.render_acl_file([broker_acl.BrokerAccount("x", "$7$1$x$y", "admin")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MQTT username must be"):
        broker_acl.render_password_file([broker_acl.BrokerAccount("a:b", "$7$1$x$y", "ingest")])
    with pytest.raises(ValueError, match="used twice: gw-a"):
        broker_acl.write_broker_config(accounts + accounts[1:], Path("/nonexistent"))


class Client:
    """A real MQTT 5 client that keeps what it receives in a queue."""

    def __init__(self, broker: PrivateMosquitto, username: str | None, password: str | None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{uuid.uuid4().hex[:10]}",
                                   protocol=paho.MQTTv5)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([rc.value for rc in rcs])
        self._client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self.reason = self.connack.get(timeout=5)

    def subscribe(self, topic: str) -> int:
        self._client.subscribe(topic, qos=1)
        [code] = self.subacks.get(timeout=5)
        return code

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def connected(broker: PrivateMosquitto, username: str | None, password: str | None) -> Iterator[Client]:
    client = Client(broker, username, password)
    try:
        yield client
    finally:
        client.close()


def received(client: Client, timeout: float = 2.0) -> list[tuple[str, bytes]]:
    """Everything ``client`` receives until a marker ``b"end"`` arrives (or the timeout)."""
    got = []
    while True:
        try:
            topic, payload = client.messages.get(timeout=timeout)
        except queue.Empty:
            return got
        if payload == b"end":
            return got
        got.append((topic, payload))


@pytest.fixture
def acl_broker(fresh_db: str, tmp_path: Path) -> Iterator[tuple[PrivateMosquitto, dict[str, str]]]:
    """A private Mosquitto with the files written from a registry of two gateways, a gateway whose
    key was revoked, and the ingest credential.  Yields it and the passwords by username."""
    passwords = {name: uuid.uuid4().hex for name in ("gw-a", "gw-b", "gw-c", "ingest", "fleet")}
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        registry.register_tenant(conn, TENANT, "ACL test")
        for gw in ("gw-a", "gw-b", "gw-c"):
            registry.register_gateway(conn, TENANT, gw, None, keys.new_key(), KEK, None, passwords[gw])
        registry.revoke_key(conn, TENANT, "gateway", "gw-c", registry.FIRST_EPOCH)
        assert sorted(a.username for a in registry.broker_accounts(conn)) == ["gw-a", "gw-b"]
    # the ingest login and the files through the commands an operator runs
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": fresh_db}
    result = runner.invoke(app, ["cloud", "register-ingest-credential", "--password", passwords["ingest"]], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["cloud", "register-fleet-credential", "--password", passwords["fleet"]], env=env)
    assert result.exit_code == 0 and "fleet broker login fleet registered" in result.output, result.output
    result = runner.invoke(app, ["cloud", "broker-config", "--out", str(tmp_path / "etc")], env=env)
    assert result.exit_code == 0 and "2 gateway(s), 2 service(s)" in result.output, result.output
    password_file, acl_file = tmp_path / "etc" / broker_acl.PASSWORD_FILE, tmp_path / "etc" / broker_acl.ACL_FILE
    assert password_file.stat().st_mode & 0o077 == 0
    assert passwords["ingest"] not in password_file.read_text()
    overrides = {"password_file": str(password_file), "acl_file": str(acl_file), "allow_anonymous": "false"}
    with PrivateMosquitto(tmp_path / "broker", overrides=overrides) as broker:
        yield broker, passwords


def test_gateways_are_confined_to_their_own_topics(acl_broker: tuple[PrivateMosquitto, dict[str, str]]) -> None:
    broker, passwords = acl_broker
    up_a, up_b = topics.gateway(TENANT, "gw-a", "up"), topics.gateway(TENANT, "gw-b", "up")
    receipt_a, receipt_b = topics.gateway(TENANT, "gw-a", "receipt"), topics.gateway(TENANT, "gw-b", "receipt")
    with (connected(broker, "ingest", passwords["ingest"]) as ingest,
          connected(broker, "gw-a", passwords["gw-a"]) as gw_a,
          connected(broker, "gw-b", passwords["gw-b"]) as gw_b):
        assert (ingest.reason, gw_a.reason, gw_b.reason) == (0, 0, 0)
        assert ingest.subscribe(topics.gateway_uplink_filter(shared=True)) == 1
        assert gw_a.subscribe(receipt_a) == 1
        assert gw_b.subscribe(receipt_b) == 1
        # Mosquitto 2.0 grants these subscriptions and then checks "read" per message: nothing arrives
        gw_a.subscribe(receipt_b)
        gw_a.subscribe(topics.gateway_uplink_filter(shared=False))

        gw_a.publish(up_b, b"a pretending to be b")  # refused silently by the broker
        gw_a.publish(receipt_a, b"a forging its own receipt")
        gw_a.publish(up_a, b"a's batch")
        gw_b.publish(up_b, b"b's batch")
        gw_b.publish(up_b, b"end")
        assert sorted(received(ingest)) == [(up_a, b"a's batch"), (up_b, b"b's batch")]

        ingest.publish(receipt_b, b"receipt for b")
        ingest.publish(receipt_a, b"receipt for a")
        ingest.publish(receipt_a, b"end")
        ingest.publish(receipt_b, b"end")
        assert received(gw_a) == [(receipt_a, b"receipt for a")]  # not b's, not its own forgery
        assert received(gw_b) == [(receipt_b, b"receipt for b")]


def test_fleet_reads_presence_and_writes_updates_each_gateway_reads_its_own(
        acl_broker: tuple[PrivateMosquitto, dict[str, str]]) -> None:
    broker, passwords = acl_broker
    topic = {(gw, leaf): topics.gateway(TENANT, gw, leaf) for gw in ("gw-a", "gw-b")
             for leaf in ("up", "health", "state", "update")}
    with (connected(broker, "fleet", passwords["fleet"]) as fleet,
          connected(broker, "gw-a", passwords["gw-a"]) as gw_a,
          connected(broker, "gw-b", passwords["gw-b"]) as gw_b):
        assert (fleet.reason, gw_a.reason, gw_b.reason) == (0, 0, 0)
        for leaf in ("health", "state", "up"):
            fleet.subscribe(f"ft/v1/+/gw/+/{leaf}")
        assert gw_a.subscribe(topic["gw-a", "update"]) == 1
        gw_a.subscribe(topic["gw-b", "update"])  # granted, then nothing arrives (read is checked per message)
        assert gw_b.subscribe(topic["gw-b", "update"]) == 1

        gw_a.publish(topic["gw-a", "up"], b"a batch: not the fleet's to read")
        gw_a.publish(topic["gw-a", "health"], b"a's heartbeat")
        gw_b.publish(topic["gw-b", "state"], b"b's birth")
        gw_a.publish(topic["gw-a", "update"], b"a cannot forge its own update")
        gw_b.publish(topic["gw-b", "health"], b"end")
        assert received(fleet) == [(topic["gw-a", "health"], b"a's heartbeat"), (topic["gw-b", "state"], b"b's birth")]

        fleet.publish(topic["gw-b", "update"], b"update for b")
        fleet.publish(topic["gw-a", "update"], b"update for a")
        fleet.publish(topic["gw-a", "update"], b"end")
        fleet.publish(topic["gw-b", "update"], b"end")
        assert received(gw_a) == [(topic["gw-a", "update"], b"update for a")]
        assert received(gw_b) == [(topic["gw-b", "update"], b"update for b")]


def test_wrong_missing_and_revoked_credentials_are_refused(
        acl_broker: tuple[PrivateMosquitto, dict[str, str]]) -> None:
    broker, passwords = acl_broker
    not_authorized = {0x86, 0x87}  # bad user name or password / not authorised
    for username, password in [("gw-a", passwords["gw-b"]), ("gw-a", None), (None, None), ("nobody", "x"),
                               ("gw-c", passwords["gw-c"])]:
        with connected(broker, username, password) as client:
            assert client.reason in not_authorized, (username, client.reason)
