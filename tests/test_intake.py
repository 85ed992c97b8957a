"""Node intake: valid frames captured verbatim; duplicates, conflicts and bad messages counted."""

from __future__ import annotations

import logging
import os
import time
import uuid

import pytest
from support.nodes import Publisher
from support.readings import node_frame
from support.waiting import wait_until

from contract import models, topics
from contract.telemetry import encode_body, sign
from edge_agent.config import BrokerConfig, IntakeConfig
from edge_agent.intake import Intake
from edge_agent.outbox import Item, Outbox
from fieldtrust.services.mosquitto import PrivateMosquitto

KEY = os.urandom(32)


@pytest.fixture
def box(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", 16 << 20)
    yield outbox
    outbox.close()


def make_intake(box: Outbox, broker: PrivateMosquitto | None = None, **cfg) -> Intake:
    bcfg = BrokerConfig(host=broker.host, port=broker.port) if broker else BrokerConfig()
    return Intake(IntakeConfig(broker=bcfg, session_expiry_s=30, **cfg), box, f"intake-{uuid.uuid4().hex[:8]}")


def items(box: Outbox) -> list[Item]:
    out: list[Item] = []
    box.seal_batch(1, 10_000, newest_first=False, build=lambda _s, got: (out.extend(got) or b"", len(got)))
    return out


def test_frames_through_the_broker_are_captured_verbatim_and_checked(private_broker, box):
    node = f"node-{uuid.uuid4().hex[:6]}"
    intake = make_intake(box, private_broker)
    intake.start()
    pub = Publisher(private_broker)
    try:
        assert wait_until(lambda: intake.link.connected)
        time.sleep(0.2)  # SUBACK
        frames = [node_frame(KEY, node, seq) for seq in range(3)]
        for frame in frames:
            pub.send(topics.node(node, "up"), frame)
        pub.send(topics.node(node, "up"), frames[1])  # redelivered: identical
        pub.send(topics.node(node, "up"), node_frame(KEY, node, 2, value=99.0))  # same seq, other bytes
        pub.send(topics.node(node, "up"), b"x" * 9000)  # past the 8 KiB node limit, under the broker's
        pub.send(topics.node(node, "up"), b"garbage")
        pub.send(topics.node(node, "up"), node_frame(KEY, "someone-else", 5))
        birth = models.Presence(k="birth", dev=node, at=1764480000000, sw="fw/test")
        pub.send(topics.node(node, "state"), sign(KEY, birth.model_dump_json(exclude_none=True).encode()), retain=True)
        assert wait_until(lambda: sum(intake.counters.values()) >= 9), intake.counters
    finally:
        pub.close()
        intake.stop()
        pub = Publisher(private_broker)
        pub.send(topics.node(node, "state"), b"", retain=True)  # clear the retained birth
        pub.close()
    assert dict(intake.counters) == {
        "accepted": 3,
        "duplicates": 1,
        "conflicts": 1,
        "rejected.oversized": 1,
        "rejected.bad_frame": 1,
        "rejected.topic_mismatch": 1,
        "states": 1,
    }
    got = items(box)
    assert [i.data for i in got] == [*frames, node_frame(KEY, node, 2, value=99.0)]
    assert [i.kind for i in got] == ["node", "node", "node", "conflict"]
    state = intake.node_states()[node]
    assert (state.presence, state.rejected) == ("birth", 3) and state.last_good_ms is not None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("ft/v1/node/n1/up", b"", "bad_frame"),
        ("ft/v1/node/n1/up", sign(KEY, b"{not json"), "bad_json"),
        ("ft/v1/node/n1/up", sign(KEY, b'{"v":2,"k":"tel"}'), "bad_version"),
        ("ft/v1/node/n1/up", sign(KEY, b'{"v":1,"k":"health","dev":"n1","at":1,"sw":"x","uptime_s":1}'),
         "wrong_kind"),
        ("ft/v1/node/n1/up", sign(KEY, encode_body({"v": 1, "k": "tel", "dev": "n1", "ep": 1, "seq": -1, "fw": "",
                                                    "bt": 0, "sync": 0, "r": []})), "bad_field"),
        ("ft/v1/node/n1/up", node_frame(KEY, "n1", 1).replace(b'"mac":"', b'"mac":"X', 1), "bad_frame"),
        ("ft/v1/node/n1/up", b"\xff" * 200, "bad_frame"),
        ("ft/v1/node/n1/state", b"not a presence frame at all" * 4, "state_bad_frame"),
        ("ft/v1/node/n1/state", node_frame(KEY, "n1", 1), "state_mismatch"),
    ],
)
def test_bad_messages_are_counted_rejections(box, topic, payload, reason):
    intake = make_intake(box)
    leaf = topic.rsplit("/", 1)[-1]
    handle = intake.handle_state if leaf == "state" else intake.handle_uplink
    assert handle(topic, payload) == reason
    assert intake.counters[f"rejected.{reason}"] == 1 and box.pending == 0


def test_replay_window_is_bounded(box):
    intake = make_intake(box, replay_window=16)
    topic = topics.node("n1", "up")
    for seq in range(20):
        assert intake.handle_uplink(topic, node_frame(KEY, "n1", seq)) == "accepted"
    assert intake.handle_uplink(topic, node_frame(KEY, "n1", 19)) == "duplicate"
    # seq 0 fell out of the 16-entry window: captured again, and the cloud's rule stores it once
    assert intake.handle_uplink(topic, node_frame(KEY, "n1", 0)) == "accepted"
    assert box.pending == 21


def test_a_replayed_conflict_is_forwarded_once(box):
    intake = make_intake(box)
    topic = topics.node("n1", "up")
    first, forged = node_frame(KEY, "n1", 3), node_frame(KEY, "n1", 3, value=55.0)
    assert [intake.handle_uplink(topic, f) for f in (first, forged, forged, first)] == [
        "accepted", "conflict", "duplicate", "duplicate"]
    assert [i.kind for i in items(box)] == ["node", "conflict"]


def test_rejections_are_logged_once_per_reason_and_node(box, caplog):
    intake = make_intake(box)
    with caplog.at_level(logging.WARNING, logger="edge_agent.intake"):
        for _ in range(50):
            intake.handle_uplink("ft/v1/node/n1/up", b"garbage")
        intake.handle_uplink("ft/v1/node/n2/up", b"garbage")
    assert intake.counters["rejected.bad_frame"] == 51
    assert len(caplog.records) == 2


def test_a_frame_is_acknowledged_only_after_it_is_stored(private_broker, tmp_path):
    node = f"node-{uuid.uuid4().hex[:6]}"
    broken = Outbox(tmp_path / "broken.db", 1 << 20)
    broken.close()  # every capture now raises: like a disk that fails under the outbox
    intake = make_intake(broker=private_broker, box=broken)
    intake.start()
    pub = Publisher(private_broker)
    try:
        assert wait_until(lambda: intake.link.connected)
        time.sleep(0.2)
        pub.send(topics.node(node, "up"), node_frame(KEY, node, 0))
        assert wait_until(lambda: intake.link.counters["callback_errors"] >= 1)
        good = Outbox(tmp_path / "good.db", 1 << 20)
        intake._outbox = good  # the disk is back
        # not acknowledged, so the broker redelivers it on the next session
        assert wait_until(lambda: good.pending == 1, timeout=15), intake.all_counters()
        assert items(good)[0].data == node_frame(KEY, node, 0)
        good.close()
    finally:
        pub.close()
        intake.stop()
