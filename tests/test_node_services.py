"""The gateway serving its sensor nodes: config and OTA relayed from the cloud, OTA files over HTTP, time over SNTP,
and each node's battery, firmware and last message in the gateway's heartbeat.

Real brokers (the shared one plays the cloud, with ids unique to each test; a private Mosquitto plays the
gateway's local broker), real sockets, and the node's own code where it exists: ``firmware.ota.Updater``
downloads through ``firmware.hal.Esp32Network.fetch`` and the clock is asked with ``firmware.hal.sntp_time_ms``,
both under CPython against the agent's servers.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from support.nodes import Publisher
from support.waiting import wait_until

from contract import models, topics
from contract.telemetry import encode_body, record, sign, telemetry, unframe
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.ota_cache import BAD_HASH, NO_ROOM, PRESENT, STORED, OtaCache
from edge_agent.ota_server import OtaHttpServer
from edge_agent.time_server import NTP_DELTA, SntpServer
from firmware import ota
from firmware.config import config_body
from firmware.hal import Esp32Network, sntp_time_ms

T0 = 1764480000000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(key: bytes, node: str, version: int, files: dict[str, bytes]) -> bytes:
    entries = [{"path": p, "sha256": sha(d), "size": len(d)} for p, d in files.items()]
    return sign(key, encode_body({"v": 1, "k": "ota", "target": node, "version": version, "files": entries}))


class Watcher:
    """Everything published under the nodes' downlink topics on the local broker, last payload per topic."""

    def __init__(self, broker, node_filter: str) -> None:
        self.latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(node_filter, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.latest[msg.topic] = msg.payload

    def get(self, topic: str) -> bytes | None:
        with self._lock:
            return self.latest.get(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Cloud(Publisher):
    """The cloud's side of the downlink: retained publishes, all cleared again at the end (the broker is shared)."""

    def __init__(self, broker: tuple[str, int], tenant: str, gw: str) -> None:
        super().__init__(SimpleNamespace(host=broker[0], port=broker[1], protocol="5"))  # type: ignore[arg-type]
        self.tenant, self.gw = tenant, gw
        self.retained: set[str] = set()

    def node(self, node: str, leaf: str, payload: bytes) -> None:
        self._retain(topics.gateway_node(self.tenant, self.gw, node, leaf), payload)

    def file(self, name: str, payload: bytes) -> None:
        self._retain(topics.gateway_file(self.tenant, self.gw, name), payload)

    def _retain(self, topic: str, payload: bytes) -> None:
        self.retained.add(topic)
        self.send(topic, payload, retain=True)

    def close(self) -> None:
        for topic in self.retained:
            self.send(topic, b"", retain=True)
        super().close()


def agent_config(ids: dict, data_dir: Path, cloud: tuple[str, int], local, **nodes: object) -> dict:
    return {
        "gateway": {"id": ids["gw"], "tenant": ids["tenant"], "key_hex": ids["key"].hex(), "data_dir": str(data_dir)},
        "intake": {"session_expiry_s": 60, "broker": {"host": local.host, "port": local.port}},
        "uplink": {"broker": {"host": cloud[0], "port": cloud[1]}, "session_expiry_s": 60,
                   "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        "nodes": {"ids": [ids["node"]], "ota_bind": "127.0.0.1", "ota_port": 0, "sntp_bind": "127.0.0.1",
                  "sntp_port": 0, "cache_mb": 1, **nodes},
        "health": {"interval_s": 60},
    }


class RunningAgent:
    def __init__(self, cfg: dict) -> None:
        self.agent = Agent(parse_config(yaml.safe_dump(cfg)), clock_synced=lambda: True)

    def __enter__(self) -> Agent:
        agent = self.agent
        agent.start()
        assert agent.relay is not None and agent.intake is not None
        assert wait_until(lambda: agent.uplink.connected and agent.relay.link.connected and agent.intake.link.connected)
        return agent

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()


@pytest.fixture
def cloud(shared_broker, ids):
    pub = Cloud(shared_broker, ids["tenant"], ids["gw"])
    yield pub
    pub.close()


@pytest.fixture
def watcher(private_broker):
    watch = Watcher(private_broker, "ft/v1/node/+/+")
    yield watch
    local = Publisher(private_broker)
    for topic in list(watch.latest):  # leave no retained downlink behind on the module's broker
        local.send(topic, b"", retain=True)
    local.close()
    watch.close()


def relay_counters(agent: Agent) -> dict[str, int]:
    assert agent.relay is not None
    return agent.relay.all_counters()


# -- relay ----------------------------------------------------------------------------------------


def test_config_is_relayed_verbatim_and_cleared(shared_broker, private_broker, ids, tmp_path, cloud, watcher):
    node = ids["node"]
    frame = sign(ids["node_key"], config_body(node, 2, T0, {"interval_s": 300}))
    with RunningAgent(agent_config(ids, tmp_path, shared_broker, private_broker)) as agent:
        cloud.node(node, "config", frame)
        assert wait_until(lambda: watcher.get(topics.node(node, "config")) == frame)
        late = Watcher(private_broker, topics.node(node, "config"))  # a node waking later gets it retained
        try:
            assert wait_until(lambda: late.get(topics.node(node, "config")) == frame)
        finally:
            late.close()
        cloud.node(node, "config", b"")
        assert wait_until(lambda: watcher.get(topics.node(node, "config")) == b"")
        assert relay_counters(agent)["config_cleared"] == 1


def test_frames_that_are_not_for_the_node_are_refused_and_counted(shared_broker, private_broker, ids, tmp_path,
                                                                  cloud, watcher):
    node = ids["node"]
    with RunningAgent(agent_config(ids, tmp_path, shared_broker, private_broker)) as agent:
        cloud.node(node, "config", sign(ids["node_key"], config_body("someone-else", 2, T0, {})))
        cloud.node(node, "ota", b"not a frame")
        assert wait_until(lambda: relay_counters(agent).get("refused.config.wrong_target") == 1
                          and relay_counters(agent).get("refused.ota.bad_frame") == 1)
        assert relay_counters(agent).get("config_relayed", 0) == 0 and watcher.get(topics.node(node, "config")) is None


def test_downlink_for_a_node_not_yet_heard_waits_for_it(shared_broker, private_broker, ids, tmp_path, cloud, watcher):
    stranger = f"node-new-{uuid.uuid4().hex[:6]}"
    frame = sign(ids["node_key"], config_body(stranger, 1, T0, {}))
    with RunningAgent(agent_config(ids, tmp_path, shared_broker, private_broker)) as agent:
        cloud.node(stranger, "config", frame)
        assert wait_until(lambda: relay_counters(agent).get("config_received") == 1)
        assert relay_counters(agent).get("config_relayed", 0) == 0  # decided on arrival: not one of ours yet
        birth = sign(ids["node_key"], encode_body({"v": 1, "k": "birth", "dev": stranger, "at": T0, "sw": "fw/1"}))
        node = Publisher(private_broker)
        try:
            node.send(topics.node(stranger, "state"), birth, retain=True)
            assert wait_until(lambda: watcher.get(topics.node(stranger, "config")) == frame)
            node.send(topics.node(stranger, "state"), b"", retain=True)
        finally:
            node.close()


def test_ota_manifest_is_withheld_until_its_files_are_cached_then_a_node_installs_it_over_http(
        shared_broker, private_broker, ids, tmp_path, cloud, watcher):
    node, key = ids["node"], ids["node_key"]
    files = {"app/cycle.py": os.urandom(2500), "app/lib/x.py": b"x = 1\n"}
    frame = manifest(key, node, 3, files)
    ota_topic = topics.node(node, "ota")
    with RunningAgent(agent_config(ids, tmp_path / "gw", shared_broker, private_broker)) as agent:
        cloud.node(node, "ota", frame)
        assert wait_until(lambda: relay_counters(agent).get("manifests_waiting") == 1)
        cloud.file(sha(files["app/cycle.py"]), files["app/cycle.py"])
        assert wait_until(lambda: relay_counters(agent).get("files_cached") == 1)
        assert relay_counters(agent)["manifests_waiting"] == 1 and relay_counters(agent).get("ota_relayed", 0) == 0
        wrong = os.urandom(100)
        cloud.file(sha(b"something else"), wrong)
        assert wait_until(lambda: relay_counters(agent).get("refused.file.bad_hash") == 1)
        assert agent.ota_cache is not None and not agent.ota_cache.has(sha(b"something else"))
        cloud.file(sha(files["app/lib/x.py"]), files["app/lib/x.py"])
        assert wait_until(lambda: watcher.get(ota_topic) == frame)
        assert relay_counters(agent)["manifests_waiting"] == 0

        # the node's side: verify what the gateway relayed, download from the gateway's HTTP server, install
        assert agent.ota_server is not None and agent.ota_server.port is not None
        root = tmp_path / "board"
        root.mkdir()
        updater = ota.Updater(str(root))
        received = ota.verify_manifest(watcher.get(ota_topic), key, node, updater.floor)
        net = Esp32Network("farm", "-", "127.0.0.1", agent.ota_server.port)
        updater.stage(received, net.fetch)
        updater.switch(received)
        for path, data in files.items():
            assert (root / path).read_bytes() == data
        assert agent.ota_server.counters["requests"] == 3 + 1  # 1 KiB chunks: 3 for 2500 bytes, 1 for x.py

    # restart: the files come from the disk cache even when the cloud no longer holds them
    for name in (sha(d) for d in files.values()):
        cloud.file(name, b"")
    local = Publisher(private_broker)
    local.send(ota_topic, b"", retain=True)
    local.close()
    assert wait_until(lambda: watcher.get(ota_topic) == b"")
    with RunningAgent(agent_config(ids, tmp_path / "gw", shared_broker, private_broker)) as agent:
        assert wait_until(lambda: watcher.get(ota_topic) == frame)
        assert relay_counters(agent).get("files_cached", 0) == 0


# -- health ---------------------------------------------------------------------------------------


def test_health_lists_each_nodes_battery_firmware_and_last_message(shared_broker, private_broker, ids, tmp_path):
    node, key = ids["node"], ids["node_key"]
    state_topic = topics.node(node, "state")
    birth = sign(key, encode_body({"v": 1, "k": "birth", "dev": node, "at": T0, "sw": "fw/0.3.0"}))

    def frame(seq: int, recs: list[dict]) -> bytes:
        return sign(key, encode_body(telemetry(node, 1, seq, T0 + seq * 1000, recs, "fw/0.2.9", 10)))

    with RunningAgent(agent_config(ids, tmp_path, shared_broker, private_broker)) as agent:
        pub = Publisher(private_broker)
        try:
            pub.send(state_topic, birth, retain=True)
            pub.send(topics.node(node, "up"), frame(7, [record("battery", "mV", 3712), record("rssi", "dBm", -71)]))
            pub.send(topics.node(node, "up"), frame(5, [record("battery", "mV", 3900)]))  # a late backlog frame
            pub.send(topics.node(node, "up"), frame(8, [record("ota_refused", "", "bad_signature")]))
            assert agent.intake is not None
            assert wait_until(lambda: agent.intake.counters["accepted"] == 3 and agent.intake.counters["states"] >= 1)
            health = models.parse(unframe(agent.health.frame())[1], expect="health")  # as the cloud reads it
            assert isinstance(health, models.Health)
            seen = health.devices[node]
            assert (seen.state, seen.fw, seen.last_seq) == ("ok", "fw/0.3.0", 8)
            assert (seen.battery, seen.battery_unit, seen.rssi) == (3712, "mV", -71)
            assert seen.refused == {"ota_refused.bad_signature": 1} and seen.last_good_ms is not None
            assert health.counters["nodes.relay.connects"] >= 1
            assert health.counters["nodes.relay.manifests_waiting"] == 0
        finally:
            pub.send(state_topic, b"", retain=True)
            pub.close()


# -- OTA files over HTTP --------------------------------------------------------------------------


@pytest.fixture
def file_server(tmp_path):
    cache = OtaCache(tmp_path / "cache", 1 << 20)
    server = OtaHttpServer(cache, "127.0.0.1", 0)
    server.start()
    yield cache, server
    server.stop()


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_http_range_requests(file_server):
    cache, server = file_server
    data = os.urandom(5000)
    name = sha(data)
    assert cache.put(name, data) == STORED
    path = f"/ota/{name}"
    status, headers, body = request(server.port, "GET", path, {"Range": "bytes=1000-2023"})
    assert (status, body, headers["Content-Range"]) == (206, data[1000:2024], "bytes 1000-2023/5000")
    assert request(server.port, "GET", path)[::2] == (200, data)
    assert request(server.port, "GET", path, {"Range": "bytes=4990-"})[::2] == (206, data[4990:])
    assert request(server.port, "GET", path, {"Range": "bytes=-10"})[::2] == (206, data[-10:])
    assert request(server.port, "GET", path, {"Range": "bytes=4000-99999"})[::2] == (206, data[4000:])
    status, headers, body = request(server.port, "HEAD", path)
    assert (status, headers["Content-Length"], body) == (200, "5000", b"")
    for bad in ("bytes=5000-", "bytes=10-5", "bytes=0-1,4-5", "items=0-1", "bytes=-0"):
        status, headers, _ = request(server.port, "GET", path, {"Range": bad})
        assert (status, headers.get("Content-Range")) == (416, "bytes */5000"), bad
    for missing in (f"/ota/{sha(b'nothing')}", "/ota/../../etc/passwd", f"/ota/{name.upper()}", f"/ota/{name}/x",
                    "/etc/passwd", f"/ota/{name}?x=1"):
        assert request(server.port, "GET", missing)[0] == 404, missing
    assert request(server.port, "POST", path)[0] == 501
    assert server.counters["bytes_sent"] == 1024 + 5000 + 10 + 10 + 1000


def test_the_firmwares_own_fetch_reads_exact_chunks(file_server):
    cache, server = file_server
    data = os.urandom(3000)
    cache.put(sha(data), data)
    net = Esp32Network("farm", "-", "127.0.0.1", server.port)
    assert net.fetch(sha(data), 0, 1024) == data[:1024]
    assert net.fetch(sha(data), 2048, 952) == data[2048:]
    with pytest.raises(OSError, match="OTA fetch"):
        net.fetch(sha(b"unknown"), 0, 10)


def test_a_port_in_use_is_retried_not_fatal(tmp_path):
    with socket.socket() as taken, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken_udp:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_udp.bind(("127.0.0.1", 0))
        http_server = OtaHttpServer(OtaCache(tmp_path, 1 << 20), "127.0.0.1", taken.getsockname()[1])
        sntp = SntpServer("127.0.0.1", taken_udp.getsockname()[1], clock_synced=lambda: True)
        for server in (http_server, sntp):
            server.start()
            assert server.port is None and server.counters["bind_failures"] == 1
            server.stop()


# -- the OTA cache --------------------------------------------------------------------------------


def test_cache_survives_reopening_checks_its_files_and_evicts_only_unreferenced(tmp_path):
    folder = tmp_path / "cache"
    a, b, c = os.urandom(400), os.urandom(400), os.urandom(400)
    cache = OtaCache(folder, 1000)
    assert [cache.put(sha(x), x) for x in (a, b)] == [STORED, STORED]
    assert cache.put(sha(a), a) == PRESENT and cache.put(sha(a), b) == BAD_HASH
    assert cache.put(sha(c), c, keep={sha(a), sha(b)}) == NO_ROOM  # both still named by a manifest
    assert cache.put(sha(c), c, keep={sha(b)}) == STORED and cache.names() == {sha(b), sha(c)}  # a evicted
    (folder / sha(b)).write_bytes(b"rotten")
    (folder / f".tmp-{sha(a)}").write_bytes(a[:10])  # a write cut by a power loss
    reopened = OtaCache(folder, 1000)
    assert reopened.names() == {sha(c)} and sorted(p.name for p in folder.iterdir()) == [sha(c)]
    with pytest.raises(ValueError, match="SHA-256"):
        reopened.path("../outbox.db")


# -- time -----------------------------------------------------------------------------------------


@pytest.fixture
def time_servers():
    servers = {synced: SntpServer("127.0.0.1", 0, clock_synced=lambda s=synced: s) for synced in (True, False)}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def ask(port: int, packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet, ("127.0.0.1", port))
        return sock.recv(512)


def test_sntp_gives_the_gateways_time_to_the_firmwares_query(time_servers):
    port = time_servers[True].port
    assert port is not None
    assert abs(sntp_time_ms("127.0.0.1", port) - time.time() * 1000) < 5000


def test_sntp_answers_micropythons_ntptime_request(time_servers):
    request = bytearray(48)
    request[0] = 0x23  # what MicroPython's ntptime sends: version 4, mode 3, all else zero
    port = time_servers[True].port
    assert port is not None
    reply = ask(port, bytes(request))
    assert len(reply) == 48 and reply[0] == 0x24 and reply[1] == 2  # leap 0, version 4, mode 4; stratum 2
    assert reply[24:32] == bytes(8)  # the originate stamp echoes the request's transmit stamp
    seconds = struct.unpack("!I", reply[40:44])[0]  # all ntptime reads
    assert abs(seconds - NTP_DELTA - time.time()) < 5


def test_an_unsynchronised_gateway_answers_with_the_alarm_and_the_firmware_refuses_it(time_servers):
    port = time_servers[False].port
    assert port is not None
    request = bytearray(48)
    request[0] = 0x23
    reply = ask(port, bytes(request))
    assert (reply[0] >> 6, reply[1]) == (3, 16)
    with pytest.raises(OSError, match="unsynchronised"):
        sntp_time_ms("127.0.0.1", port)


def test_sntp_ignores_what_is_not_a_client_request(time_servers):
    server = time_servers[True]
    assert server.port is not None
    server_mode = bytearray(48)
    server_mode[0] = 0x24
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"short", bytes(server_mode)):
            sock.sendto(junk, ("127.0.0.1", server.port))
    assert wait_until(lambda: server.counters["ignored"] == 2)
    assert server.counters["replies"] == 0
