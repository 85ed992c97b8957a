"""Node downlink end to end: config and OTA through the API, signed for the node, published to its gateway.

Real PostgreSQL (a fresh database per test) and the real broker; every frame the cloud publishes
is fed to the node's own verifiers (``firmware.config.ConfigStore``, ``firmware.ota.verify_manifest``)
under CPython, so the test fails if the cloud signs anything a node would refuse.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from cloud import broker_acl, keys
from cloud.api.main import API_PREFIX, create_app
from cloud.config import CloudSettings
from cloud.downlink import frames, service
from cloud.downlink.publisher import DownlinkPublisher
from cloud.store import downlink as store
from cloud.store import registry
from contract import topics
from fieldtrust.cli.main import app as cli
from fieldtrust.services.mosquitto import PrivateMosquitto
from firmware import config as node_config
from firmware import ota as node_ota
from firmware.flash import RamFlash, Region
from tests.support.waiting import wait_until

TOKEN = "downlink-admin-token-0123456789"
KEK_HEX = "cd" * 32
KEK = bytes.fromhex(KEK_HEX)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 15.0  # a deadline for the publisher; NOTIFY wakes it long before (its poll is 60 s)


@dataclass
class Site:
    url: str
    tenant: str
    gw: str
    node: str
    node_key: bytes
    bus: str

    def path(self, leaf: str, device: str | None = None) -> str:
        return f"{API_PREFIX}/tenants/{self.tenant}/devices/{device or self.node}/{leaf}"


def settings_for(url: str, mqtt_url: str = "mqtt://127.0.0.1:1") -> CloudSettings:
    return CloudSettings(_env_file=None, database_url=url, mqtt_url=mqtt_url, kek=KEK_HEX,  # type: ignore[call-arg]
                         admin_token=TOKEN)


@pytest.fixture
def site(fresh_db: str) -> Site:
    tag = uuid.uuid4().hex[:8]
    s = Site(fresh_db, f"t-{tag}", f"gw-{tag}", f"node-{tag}", os.urandom(32), f"soil-{tag}")
    with psycopg.connect(fresh_db) as conn:
        registry.register_tenant(conn, s.tenant, "downlink test")
        registry.register_gateway(conn, s.tenant, s.gw, None, keys.new_key(), KEK, None, None)
        registry.register_device(conn, s.tenant, s.node, "node", None, s.gw, None, s.node_key, KEK)
        registry.register_device(conn, s.tenant, s.bus, "bus", None, s.gw, "jxct-soil-7in1", None, KEK)
    return s


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(site.url))) as test_client:
        yield test_client


def config_store(site: Site) -> node_config.ConfigStore:
    return node_config.ConfigStore(Region(RamFlash(4 * 4096), 0, 2 * 4096), site.node_key, site.node)


class Listener:
    """A gateway's view of the cloud broker: everything on its downlink topics, in order of arrival."""

    def __init__(self, host: str, port: int, tenant: str, gw: str, login: tuple[str, str] | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-view-{uuid.uuid4().hex[:8]}",
                                   protocol=paho.MQTTv5)
        if login is not None:
            self._client.username_pw_set(*login)
        self._client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, bool(m.retain)))
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(host, port)
        self._client.loop_start()
        self.subscribe(topics.gateway_downlink_filter(tenant, gw))

    def subscribe(self, filters: list[str]) -> None:
        self._subscribed.clear()
        self._client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(5)

    def take(self, count: int, timeout: float = WAIT_S) -> list[tuple[str, bytes, bool]]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextmanager
def listening(broker: tuple[str, int], site: Site) -> Iterator[Listener]:
    listener = Listener(*broker, site.tenant, site.gw)
    try:
        yield listener
    finally:
        listener.close()


@contextmanager
def publisher(site: Site, broker: tuple[str, int]) -> Iterator[DownlinkPublisher]:
    host, port = broker
    pub = DownlinkPublisher(settings_for(site.url, f"mqtt://{host}:{port}"), client_id=f"dl-{uuid.uuid4().hex[:8]}",
                            poll_s=60.0).start()
    try:
        yield pub
    finally:
        pub.stop()
        _clear_retained(broker, site)


def _clear_retained(broker: tuple[str, int], site: Site) -> None:
    """Leave nothing retained on the shared broker: an empty retained message clears a topic."""
    with psycopg.connect(site.url) as conn:
        shas = [r[0] for r in conn.execute("SELECT sha256 FROM ft.firmware_blobs")]
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect(*broker)
    c.loop_start()
    names = [topics.gateway_node(site.tenant, site.gw, site.node, leaf) for leaf in ("config", "ota")]
    names += [topics.gateway_file(site.tenant, site.gw, sha) for sha in shas]
    for info in [c.publish(t, b"", qos=1, retain=True) for t in names]:
        info.wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def put_config(client: TestClient, site: Site, body: dict, expect: int = 200, device: str | None = None) -> dict:
    response = client.put(site.path("config", device), json=body, headers=AUTH)
    assert response.status_code == expect, response.text
    return response.json()


def upload_release(client: TestClient, version: int, files: dict[str, bytes], expect: int = 201) -> dict:
    body = {"version": version,
            "files": [{"path": p, "content_b64": base64.b64encode(c).decode()} for p, c in files.items()]}
    response = client.post(f"{API_PREFIX}/firmware/releases", json=body, headers=AUTH)
    assert response.status_code == expect, response.text
    return response.json()


# -- frames: what the cloud signs is what the node accepts ----------------------------------------------


def test_cloud_built_frames_pass_the_nodes_own_checks_and_tampering_fails() -> None:
    key, node = os.urandom(32), "node-7"
    cfg = {"interval_s": 300, "samples": 7, "calibration": {"soil_moisture": {"scale": 1.02, "offset": -0.5}},
           "deltas": {"air_temperature": 0.5}}
    frame = frames.config_frame(key, node, 3, 1_764_480_000_000, cfg)
    store_ = node_config.ConfigStore(Region(RamFlash(4 * 4096), 0, 2 * 4096), key, node)
    tampered = frame.replace(b'"interval_s":300', b'"interval_s":301')
    assert store_.offer(tampered) is False and store_.last_refusal == "bad_signature"
    assert store_.offer(frame) is True
    assert (store_.version, store_.settings["interval_s"], store_.settings["samples"]) == (3, 300, 7)
    assert store_.settings["calibration"] == {"soil_moisture": {"scale": 1.02, "offset": -0.5}}

    files = [frames.FirmwareFile("firmware/cycle.mpy", b"\x4d\x06" + os.urandom(300)),
             frames.FirmwareFile("main.py", b"import firmware.main\n")]
    entries = frames.check_release(12, files)
    manifest = frames.ota_frame(key, node, 12, entries)
    accepted = node_ota.verify_manifest(manifest, key, node, 11)
    assert accepted["files"] == entries and accepted["version"] == 12
    for bad_frame, reason in [(manifest.replace(b'"version":12', b'"version":13'), "bad_signature"),
                              (frames.ota_frame(os.urandom(32), node, 12, entries), "bad_signature"),
                              (frames.ota_frame(key, "node-8", 12, entries), "wrong_target")]:
        with pytest.raises(node_ota.OtaRefused) as refused:
            node_ota.verify_manifest(bad_frame, key, node, 11)
        assert refused.value.reason == reason

    # the node's rules refuse, so the cloud refuses before signing or storing anything
    with pytest.raises(registry.Invalid, match="out_of_bounds"):
        frames.config_frame(key, node, 1, 0, {"interval_s": 5})
    with pytest.raises(registry.Invalid, match="bad_path"):
        frames.check_release(1, [frames.FirmwareFile("../boot.py", b"x")])
    with pytest.raises(registry.Invalid, match="bad_path"):
        frames.check_release(1, [frames.FirmwareFile(".ota/state.json", b"x")])
    with pytest.raises(registry.Invalid, match="at most"):
        frames.check_release(1, [frames.FirmwareFile("big.mpy", bytes(node_ota.MAX_FILE_BYTES + 1))])


# -- config through the API ------------------------------------------------------------------------------


def test_config_versions_history_and_errors(client: TestClient, site: Site) -> None:
    first = put_config(client, site, {"interval_s": 600, "calibration": {"soil_moisture": [1.5, -2]}})
    assert first == {"device": site.node, "version": 1, "status": "pending"}
    second = put_config(client, site, {"interval_s": 300, "deltas": {"battery": 50}})
    assert second["version"] == 2
    state = client.get(site.path("config"), headers=AUTH).json()
    assert state["desired"]["version"] == 2 and state["desired"]["config"] == {"interval_s": 300,
                                                                               "deltas": {"battery": 50}}
    assert [h["version"] for h in state["history"]] == [2, 1]
    assert [h["status"] for h in state["history"]] == ["pending", "superseded"]
    assert state["history"][1]["config"]["calibration"] == {"soil_moisture": {"scale": 1.5, "offset": -2}}
    assert state["reported_version"] is None

    bad_bodies = [
        ({"interval_s": 59}, "interval_s"),
        ({"samples": 32}, "samples"),
        ({"heartbeat_s": "3600"}, "heartbeat_s"),
        ({"calibration": {"soil_moisture": [0, 1]}}, "gain must not be 0"),
        ({"calibration": {"Soil": [1, 0]}}, "calibration"),
        ({"calibration": {"soil_moisture": [1]}}, "calibration"),
        ({"deltas": {"battery": -1}}, "deltas"),
        ({"wifi": "x"}, "wifi"),
    ]
    for body, where in bad_bodies:
        answer = put_config(client, site, body, expect=422)
        assert where in answer["message"], (body, answer)
    assert put_config(client, site, {}, expect=404, device="nobody")["error"] == "not_found"
    assert "bus device" in put_config(client, site, {}, expect=409, device=site.bus)["message"]
    assert client.get(site.path("config", "nobody"), headers=AUTH).status_code == 404
    assert client.put(site.path("config"), json={}).status_code == 401

    with psycopg.connect(site.url) as conn:
        registry.revoke_key(conn, site.tenant, "device", site.node, registry.FIRST_EPOCH)
    assert "revoked" in put_config(client, site, {"interval_s": 900}, expect=409)["message"]
    # nothing half written: the refused requests left two versions
    assert len(client.get(site.path("config"), headers=AUTH).json()["history"]) == 2


def test_concurrent_updates_get_distinct_versions(site: Site) -> None:
    count = 8
    versions: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def update(n: int) -> None:
        try:
            with psycopg.connect(site.url) as conn:
                start.wait()
                row = service.set_node_config(conn, site.tenant, site.node, {"samples": n + 1}, KEK, f"writer-{n}")
                versions.append(row.version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=update, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(versions) == list(range(1, count + 1))


# -- publishing ------------------------------------------------------------------------------------------


def test_config_is_published_retained_and_the_node_applies_it(
        client: TestClient, site: Site, shared_broker: tuple[str, int]) -> None:
    with publisher(site, shared_broker) as pub, listening(shared_broker, site) as gateway:
        put_config(client, site, {"interval_s": 120, "calibration": {"soil_moisture": [1.25, 3]}})
        [(topic, frame, _)] = gateway.take(1)
        assert topic == topics.gateway_node(site.tenant, site.gw, site.node, "config")
        node = config_store(site)
        assert node.offer(frame) is True
        assert node.settings["interval_s"] == 120 and node.version == 1
        assert node.settings["calibration"] == {"soil_moisture": {"scale": 1.25, "offset": 3}}

        put_config(client, site, {"interval_s": 240})
        [(_, newer, _)] = gateway.take(1)
        assert node.offer(newer) is True and node.version == 2
        assert node.offer(frame) is False and node.last_refusal == "stale_version"  # a replay of v1
        assert wait_until(lambda: client.get(site.path("config"), headers=AUTH).json()["desired"]["status"]
                          == "published", WAIT_S)
        assert pub.counters.configs == 2 and pub.counters.failures == 0

    # a gateway that connects later gets the newest config, retained
    with publisher(site, shared_broker), listening(shared_broker, site) as late:
        put_config(client, site, {"interval_s": 480})
        got = late.take(1)
        [(_, frame3, _)] = got
        assert config_store(site).offer(frame3) is True


def test_release_upload_then_ota_files_before_manifest(
        client: TestClient, site: Site, shared_broker: tuple[str, int]) -> None:
    files = {"firmware/cycle.mpy": b"M\x06" + os.urandom(2000), "main.py": b"import firmware.main as m\nm.run()\n"}
    release = upload_release(client, 7, files)
    assert release["version"] == 7 and [f["path"] for f in release["manifest"]["files"]] == list(files)
    assert release["manifest"]["files"][0]["sha256"] == hashlib.sha256(files["firmware/cycle.mpy"]).hexdigest()
    assert upload_release(client, 7, files, expect=409)["error"] == "conflict"
    listed = client.get(f"{API_PREFIX}/firmware/releases", headers=AUTH).json()
    assert [r["version"] for r in listed] == [7]

    ota = client.post(site.path("ota"), json={"version": 99}, headers=AUTH)
    assert ota.status_code == 404 and "release 99" in ota.json()["message"]
    assert client.post(site.path("ota"), json={"version": "7a"}, headers=AUTH).status_code == 422

    with publisher(site, shared_broker), listening(shared_broker, site) as gateway:
        job = client.post(site.path("ota"), json={"version": 7}, headers=AUTH)
        assert job.status_code == 201, job.text
        assert (job.json()["device"], job.json()["version"], job.json()["status"]) == (site.node, 7, "pending")
        received = gateway.take(3)
        kinds = [topics.parse_gateway_downlink(t)[2] for t, _, _ in received]
        assert kinds == ["file", "file", "node"]  # every file acknowledged before the manifest goes out
        by_sha = {topics.parse_gateway_downlink(t)[3]: payload for t, payload, _ in received[:2]}
        assert {hashlib.sha256(p).hexdigest() for p in by_sha.values()} == set(by_sha)
        manifest = node_ota.verify_manifest(received[2][1], site.node_key, site.node, 0)
        assert {f["path"]: by_sha[f["sha256"]] for f in manifest["files"]} == files
        assert wait_until(lambda: client.get(site.path("ota"), headers=AUTH).json()[0]["status"] == "published",
                          WAIT_S)
    assert client.post(site.path("ota"), json={"version": 7}, headers=AUTH).status_code == 409

    # the node reports the build installed: the job is done; a lower build is refused from then on
    with psycopg.connect(site.url) as conn:
        store.record_node_report(conn, site.tenant, site.node, config_version=0, firmware_version=7)
    assert client.get(site.path("ota"), headers=AUTH).json()[0]["status"] == "done"
    assert client.get(site.path("config"), headers=AUTH).json()["reported_version"] == 0
    upload_release(client, 6, files)
    assert client.post(site.path("ota"), json={"version": 6}, headers=AUTH).status_code == 409


def test_publisher_restart_republishes_what_is_pending(
        client: TestClient, site: Site, shared_broker: tuple[str, int]) -> None:
    upload_release(client, 3, {"main.py": b"print('v3')\n"})
    # stored while no publisher runs: pending
    put_config(client, site, {"samples": 9})
    client.post(site.path("ota"), json={"version": 3}, headers=AUTH).raise_for_status()
    with psycopg.connect(site.url) as conn:
        assert len(store.pending_configs(conn)) == 1 and len(store.pending_ota(conn)) == 1
    with listening(shared_broker, site) as gateway, publisher(site, shared_broker):
        received = gateway.take(3)
        topics_seen = [t for t, _, _ in received]
        assert topics.gateway_node(site.tenant, site.gw, site.node, "config") in topics_seen
        assert topics_seen.index(topics.gateway_node(site.tenant, site.gw, site.node, "ota")) > \
            topics_seen.index(topics.gateway_file(site.tenant, site.gw, hashlib.sha256(b"print('v3')\n").hexdigest()))

        def drained() -> bool:
            with psycopg.connect(site.url) as conn:
                return not store.pending_configs(conn) and not store.pending_ota(conn)

        assert wait_until(drained, WAIT_S)


def test_release_bodies_and_cli_bundle(client: TestClient, site: Site, tmp_path: Path) -> None:
    bad = [{"version": 0, "files": [{"path": "a.py", "content_b64": ""}]},
           {"version": 1, "files": []},
           {"version": 1, "files": [{"path": "a.py", "content_b64": "not base64!"}]},
           {"version": 1, "files": [{"path": "/abs.py", "content_b64": ""}]},
           {"version": 1, "files": [{"path": "a.py", "content_b64": ""}, {"path": "a.py", "content_b64": ""}]}]
    for body in bad:
        response = client.post(f"{API_PREFIX}/firmware/releases", json=body, headers=AUTH)
        assert response.status_code == 422, (body, response.text)
    assert client.get(f"{API_PREFIX}/firmware/releases", headers=AUTH).json() == []

    bundle = tmp_path / "bundle"
    (bundle / "firmware").mkdir(parents=True)
    contents = {"main.py": b"import firmware.main\n", "firmware/cycle.mpy": b"M\x06cycle"}
    for path, data in contents.items():
        (bundle / path).write_bytes(data)
    manifest = {"version": "0.2.0", "micropython": "1.27.0", "mpy": {"version": 6, "sub_version": 3},
                "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                          for p, d in contents.items()]}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": site.url}
    result = runner.invoke(cli, ["cloud", "firmware", "publish", "--dir", str(bundle)], env=env)
    assert result.exit_code == 2 and "--build" in result.output, result.output
    result = runner.invoke(cli, ["cloud", "firmware", "publish", "--dir", str(bundle), "--build", "21"], env=env)
    assert result.exit_code == 0, result.output
    [release] = client.get(f"{API_PREFIX}/firmware/releases", headers=AUTH).json()
    assert release["version"] == 21 and {f["path"] for f in release["manifest"]["files"]} == set(contents)
    (bundle / "main.py").write_bytes(b"tampered\n")
    result = runner.invoke(cli, ["cloud", "firmware", "publish", "--dir", str(bundle), "--build", "22"], env=env)
    assert result.exit_code == 2 and "main.py" in result.output


# -- broker access ---------------------------------------------------------------------------------------


def test_downlink_login_writes_node_topics_and_each_gateway_reads_only_its_own(
        site: Site, tmp_path: Path) -> None:
    passwords = {"gw-a": uuid.uuid4().hex, "gw-b": uuid.uuid4().hex, "downlink": uuid.uuid4().hex}
    with psycopg.connect(site.url) as conn:
        for gw in ("gw-a", "gw-b"):
            registry.register_gateway(conn, site.tenant, gw, None, keys.new_key(), KEK, None, passwords[gw])
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": site.url}
    result = runner.invoke(cli, ["cloud", "register-downlink-credential", "--password", passwords["downlink"]],
                           env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["cloud", "broker-config", "--out", str(tmp_path / "etc")], env=env)
    assert result.exit_code == 0, result.output
    overrides = {"password_file": str(tmp_path / "etc" / broker_acl.PASSWORD_FILE),
                 "acl_file": str(tmp_path / "etc" / broker_acl.ACL_FILE), "allow_anonymous": "false"}
    with PrivateMosquitto(tmp_path / "broker", overrides=overrides) as broker:
        gateways = {gw: Listener(broker.host, broker.port, site.tenant, gw, (gw, passwords[gw])) for gw in passwords
                    if gw != "downlink"}
        # Mosquitto grants a subscription to another gateway's topics, then checks "read" per message
        gateways["gw-a"].subscribe(topics.gateway_downlink_filter(site.tenant, "gw-b"))
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="downlink-test", protocol=paho.MQTTv5)
        sender.username_pw_set("downlink", passwords["downlink"])
        refused: dict[int, bool] = {}
        sender.on_publish = lambda c, u, mid, rc, p: refused.__setitem__(mid, rc.is_failure)
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        try:
            def send(topic: str, payload: bytes) -> bool:
                info = sender.publish(topic, payload, qos=1)
                info.wait_for_publish(5)
                return refused[info.mid]

            for gw in gateways:
                assert send(topics.gateway_node(site.tenant, gw, "n1", "config"), gw.encode()) is False, gw
                assert send(topics.gateway_file(site.tenant, gw, "ab" * 32), gw.encode()) is False, gw
            assert send(topics.gateway(site.tenant, "gw-a", "receipt"), b"x") is True, "only node and file topics"
            for gw in gateways:
                send(topics.gateway_node(site.tenant, gw, "n1", "ota"), b"end")
            for gw, listener in gateways.items():
                seen = []
                while not seen or seen[-1][1] != b"end":
                    topic, payload, _retained = listener.messages.get(timeout=5)
                    seen.append((topic, payload))
                assert [p for _t, p in seen] == [gw.encode(), gw.encode(), b"end"], f"{gw} read: {seen}"
        finally:
            sender.disconnect()
            sender.loop_stop()
            for listener in gateways.values():
                listener.close()
