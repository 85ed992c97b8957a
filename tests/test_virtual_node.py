"""The virtual sensor node: the real firmware on a simulated farm board, against the real Mosquitto.

What a node sends must verify with its key and carry the farm's weather as its probes measured it
(the soil probe's millivolts turned back into % by the firmware's own calibration); its sequence
numbers must never repeat across a stop and a restart; frames it could not deliver wait on its
flash and go at a later wake, counted as queued meanwhile.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from support.waiting import wait_until

from contract import models, telemetry, topics
from fieldtrust.processes import free_port
from firmware.config import ConfigRefused
from firmware.main import FW
from hardware.signals import SignalModel
from hardware.virtual_node import NodeSettings, VirtualNode, battery_volts

#: how far a reading may be from the signal model: sensor noise (5 sigma) and the parts' resolution
TOLERANCE = {"soil_moisture": 0.75, "soil_temperature": 0.15 + 1 / 16, "air_temperature": 0.25 + 0.01}
FAST_WAKE_S = 0.2


class Listener:
    """A subscriber to one node's topics on the shared broker: its ``up`` frames and its births."""

    def __init__(self, broker: tuple[str, int], node_id: str) -> None:
        self.node_id = node_id
        self.ups: list[bytes] = []
        self.states: list[bytes] = []
        ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(*broker)
        self.client.loop_start()
        self.client.subscribe([(topics.node(node_id, "up"), 1), (topics.node(node_id, "state"), 1)])
        assert ready.wait(5)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        (self.ups if msg.topic.endswith("/up") else self.states).append(bytes(msg.payload))

    def close(self) -> None:
        self.client.publish(topics.node(self.node_id, "state"), b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def node_id() -> str:
    return f"vnode-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def listener(shared_broker: tuple[str, int], node_id: str) -> Iterator[Listener]:
    sub = Listener(shared_broker, node_id)
    yield sub
    sub.close()


def make_node(broker: tuple[str, int], node_id: str, key: bytes, flash: Path, signals: SignalModel,
              **kwargs: object) -> VirtualNode:
    return VirtualNode(NodeSettings(node_id, key, *broker), signals, flash, wake_every_s=FAST_WAKE_S,
                       **kwargs)  # type: ignore[arg-type]


def bodies(frames: list[bytes], key: bytes) -> list[models.Telemetry]:
    out = []
    for frame in frames:
        msg = models.parse(telemetry.verify(frame, key), expect="tel")
        assert isinstance(msg, models.Telemetry)
        out.append(msg)
    return out


def run_until(node: VirtualNode, cond: object, timeout: float = 15) -> None:
    node.start()
    try:
        assert wait_until(cond, timeout), node.tally  # type: ignore[arg-type]
    finally:
        node.stop()
    assert not [t for t in threading.enumerate() if t.name == f"node-{node.settings.node_id}"]


def test_frames_verify_with_the_node_key_and_carry_the_farm_signals(shared_broker, listener, node_id, tmp_path):
    key, signals = os.urandom(32), SignalModel(seed=7)
    node = make_node(shared_broker, node_id, key, tmp_path / "node.flash", signals)
    run_until(node, lambda: len(listener.ups) >= 3)
    assert wait_until(lambda: len(listener.ups) == node.tally.frames_delivered, 5)
    msgs = bodies(listener.ups, key)
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert {m.fw for m in msgs} == {FW} and {m.dev for m in msgs} == {node_id}
    assert all(m.sync >= 0 for m in msgs)  # the clock is set before the first sampling after power-on
    checked = 0
    for msg in msgs:
        t = msg.bt / 1000
        for rec in msg.r:
            assert rec.v is not None, rec
            if rec.n == "battery":
                assert rec.u == "mV" and abs(rec.v - battery_volts(signals, t) * 1000) < 1
            else:
                assert abs(rec.v - getattr(signals, rec.n)(t)) <= TOLERANCE[rec.n], (rec, getattr(signals, rec.n)(t))
            assert not rec.q & telemetry.Q_CALIBRATION_MISSING
            checked += 1
    assert {r.n for r in msgs[0].r} == {"soil_moisture", "soil_temperature", "air_temperature", "battery"}
    assert node.tally.readings_enqueued == node.tally.readings_delivered == checked
    assert node.tally.frames_queued == 0 and node.tally.failed_wakes == 0
    births = [models.parse(telemetry.verify(s, key)) for s in listener.states if s]
    assert births and all(isinstance(b, models.Presence) and b.k == "birth" and b.sw == FW for b in births)


def test_a_restart_after_a_stop_mid_run_continues_the_sequence(shared_broker, listener, node_id, tmp_path):
    key, signals, flash = os.urandom(32), SignalModel(seed=3), tmp_path / "node.flash"
    first = make_node(shared_broker, node_id, key, flash, signals)
    run_until(first, lambda: len(listener.ups) >= 2)  # stopped in its third wake or between wakes
    assert wait_until(lambda: len(listener.ups) == first.tally.frames_delivered, 5)
    before = [m.seq for m in bodies(listener.ups, key)]
    second = make_node(shared_broker, node_id, key, flash, signals)  # power back on: RTC memory gone
    run_until(second, lambda: len(listener.ups) >= len(before) + 2)
    assert wait_until(lambda: len(listener.ups) == len(before) + second.tally.frames_delivered, 5)
    after = [m.seq for m in bodies(listener.ups[len(before):], key)]
    assert min(after) > max(before) and len(set(before + after)) == len(before + after), (before, after)
    assert second.tally.frames_carried == 0


def test_frames_wait_on_flash_while_the_broker_is_away_and_go_at_a_later_wake(shared_broker, listener, node_id,
                                                                               tmp_path):
    key, signals, flash = os.urandom(32), SignalModel(seed=5), tmp_path / "node.flash"
    away = VirtualNode(NodeSettings(node_id, key, "127.0.0.1", free_port()), signals, flash,
                       wake_every_s=FAST_WAKE_S)
    run_until(away, lambda: away.tally.wakes >= 3)
    left = away.tally
    assert left.failed_wakes == left.wakes and left.frames_delivered == 0
    assert left.frames_queued == left.frames_enqueued >= 3 and left.readings_queued == left.readings_enqueued > 0
    back = make_node(shared_broker, node_id, key, flash, signals)
    run_until(back, lambda: back.tally.carried_delivered == left.frames_enqueued and back.tally.frames_delivered)
    assert back.tally.frames_carried == left.frames_enqueued
    assert wait_until(lambda: len(listener.ups) == left.frames_enqueued + back.tally.frames_delivered, 5)
    seqs = [m.seq for m in bodies(listener.ups, key)]
    assert seqs[:left.frames_enqueued] == list(range(left.frames_enqueued))  # oldest first, as signed then
    assert len(set(seqs)) == len(seqs)


def test_a_full_outbox_drops_its_oldest_frames_and_every_frame_stays_counted(node_id, tmp_path):
    node = VirtualNode(NodeSettings(node_id, os.urandom(32), "127.0.0.1", free_port()), SignalModel(seed=2),
                       tmp_path / "node.flash", wake_every_s=0.001)
    run_until(node, lambda: node.tally.frames_dropped, timeout=25)  # 84 frames fit in the reference flash
    tally = node.tally
    assert tally.frames_enqueued == tally.frames_queued + tally.frames_dropped and tally.frames_delivered == 0
    assert tally.frames_queued == tally.outbox_depth < tally.frames_enqueued
    assert tally.readings_enqueued == tally.readings_queued + tally.readings_dropped and tally.readings_dropped > 0


def test_a_new_flash_starts_above_the_sequence_floor(shared_broker, listener, node_id, tmp_path):
    key = os.urandom(32)
    node = make_node(shared_broker, node_id, key, tmp_path / "node.flash", SignalModel(seed=1), seq_floor=1000)
    run_until(node, lambda: listener.ups)
    assert bodies(listener.ups, key)[0].seq == 1000


def test_an_interval_the_firmware_refuses_stops_the_start(node_id, tmp_path):
    node = VirtualNode(NodeSettings(node_id, os.urandom(32), "127.0.0.1", free_port(), interval_s=5),
                       SignalModel(), tmp_path / "node.flash")
    with pytest.raises(ConfigRefused, match="out_of_bounds: interval_s=5"):
        node.start()
    assert not [t for t in threading.enumerate() if t.name == f"node-{node_id}"]
