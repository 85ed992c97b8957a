"""The node's MQTT client and wake cycle: every node case on real MicroPython, heap and awake time per
wake there, and the same code against the real Mosquitto under CPython through a socket shim,
behind a proxy that swallows the first PUBACK so the client must resend with DUP.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import paho.mqtt.client as paho
import pytest
import test_firmware_node_cases as cases
from test_firmware_micropython import (
    BOARD_MODULES,
    HEAP_BUDGET_BYTES,
    assert_cases_pass_on_micropython,
    needs_micropython,
)

from contract import models, telemetry, topics
from firmware import cycle
from hardware.micropython_runner import run_micropython
from hardware.virtual_node import SocketNet, WallClockBoard

NODE_BOARD_MODULES = {**BOARD_MODULES, "test_firmware_node_cases": cases.__file__}


# -- real MicroPython -------------------------------------------------------------------------------


@needs_micropython
def test_every_node_case_passes_on_micropython():
    assert_cases_pass_on_micropython(cases, NODE_BOARD_MODULES)


@needs_micropython
def test_heap_and_time_of_one_full_wake_on_micropython():
    run = run_micropython(
        textwrap.dedent(
            """
            import gc
            import time
            import test_firmware_node_cases as cases
            board, net = cases.warm_node(90)
            gc.collect()
            gc.disable()  # nothing is freed while measuring: the differences are all a step allocated
            start = time.ticks_ms()
            sent = len(net.published())
            trace, mode, board_ms, heap = cases.one_wake(board, net)
            cpu_ms = time.ticks_diff(time.ticks_ms(), start)
            gc.enable()
            ups = [p[1] for p in net.published()[sent:] if p[0].endswith("/up")]
            print(heap[0], heap[1], heap[2], cpu_ms, board_ms, len(trace), mode, len(ups), len(ups[-1]))
            """
        ),
        modules=NODE_BOARD_MODULES,
        timeout=25,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    built, cycle_heap, fake_broker, cpu_ms, board_ms, steps, mode, frames, frame_len = run.stdout.split()
    wake = int(built) + int(cycle_heap)
    print(
        f"one full wake on MicroPython, outbox ring wrapped round: {wake} bytes allocated in all "
        f"(budget {HEAP_BUDGET_BYTES}): building the node at boot (flash scans of sequence, config and "
        f"outbox) {built}, Node.run {cycle_heap}; the fake broker's {fake_broker} not counted; "
        f"frame {frame_len} bytes; {cpu_ms} ms of interpreter time, {board_ms} ms of sensor waits"
    )
    assert int(steps) == len(cases.FULL_TRACE) and mode == "deep"
    assert int(frames) == 1 and int(frame_len) > 200  # the heartbeat's frame, both metrics
    # on a board every wake is a reset after deep sleep: building the node is part of every wake
    assert int(built) > 0 and int(cycle_heap) > 0 and wake <= HEAP_BUDGET_BYTES


# -- the real Mosquitto through a socket shim --------------------------------------------------------


def _read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT packet (fixed header included) from a blocking socket; b"" when it closed."""

    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    try:
        head = exact(1)
        raw_len, length, shift = b"", 0, 0
        while True:
            byte = exact(1)
            raw_len += byte
            length |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        return head + raw_len + exact(length)
    except (ConnectionError, OSError):
        return b""


def _body(packet: bytes) -> bytes:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return packet[i + 1 :]


@contextmanager
def puback_dropping_proxy(broker: tuple[str, int]) -> Iterator[dict]:
    """A TCP proxy to the broker that swallows the PUBACK of the first publish to a ``/up`` topic."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stats = {"port": listener.getsockname()[1], "dropped": 0, "up_pids": set()}
    stopping = threading.Event()
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        while not stopping.is_set():
            packet = _read_packet(src)
            if not packet:
                break
            kind, body = packet[0] & 0xF0, _body(packet)
            if not to_client and kind == 0x30 and packet[0] & 0x06:
                tlen = int.from_bytes(body[:2], "big")
                if body[2 : 2 + tlen].endswith(b"/up"):
                    stats["up_pids"].add(body[2 + tlen : 4 + tlen])
            if to_client and kind == 0x40 and body[:2] in stats["up_pids"] and not stats["dropped"]:
                stats["dropped"] += 1
                continue
            try:
                dst.sendall(packet)
            except OSError:
                break
        for s in (src, dst):
            s.close()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(broker, timeout=5)
            upstream.settimeout(None)
            client.settimeout(None)
            sockets.extend((client, upstream))
            for args in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=pump, args=args, daemon=True)
                t.start()
                threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield stats
    finally:
        stopping.set()
        listener.close()
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        acceptor.join(2)
        for t in threads:
            t.join(2)
        assert not any(t.is_alive() for t in [acceptor, *threads])


@pytest.fixture
def subscriber(shared_broker: tuple[str, int]) -> Iterator[tuple[paho.Client, list, threading.Event]]:
    received: list[paho.MQTTMessage] = []
    ready = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, msg: received.append(msg)
    client.on_subscribe = lambda *_a: ready.set()
    client.connect(*shared_broker)
    client.loop_start()
    yield client, received, ready
    client.loop_stop()
    client.disconnect()


def test_cycle_against_real_mosquitto_resends_after_a_lost_puback(shared_broker, subscriber):
    client, received, ready = subscriber
    node_id = f"node-{uuid.uuid4().hex[:8]}"
    key = bytes(range(32))
    client.subscribe([(topics.node(node_id, "up"), 1), (topics.node(node_id, "state"), 1)])
    assert ready.wait(5)
    board = WallClockBoard(time_ms=cases.T0)
    board.adc_uv[35] = [1850000]
    board.i2c[0x44] = cases.SimSht3x(21.3, 64.0)
    net = SocketNet()
    try:
        with puback_dropping_proxy(shared_broker) as proxy:
            net.link_up = False  # first wake offline: its frame waits in the outbox
            identity = {"id": node_id, "key": key, "host": "127.0.0.1", "port": proxy["port"]}
            node = cycle.Node(board, net, identity, cases.sensors(board), cases.Watchdog())
            mode, ms = node.run()
            assert node.errors[0][0] == "connect" and len(node.outbox) == 1
            board.deep_sleep(ms)
            board.i2c[0x44].temperature_c = 25.0
            net.link_up = True
            node = cycle.Node(board, net, identity, cases.sensors(board), cases.Watchdog())
            started = time.monotonic()
            mode, ms = node.run()
            awake_s = time.monotonic() - started
            # no time server on this network: the clock is never synced, so each wake tries first (the clock step)
            assert node.errors == [] and node.trace == cases.POWER_ON_TRACE and len(node.outbox) == 0
            assert proxy["dropped"] == 1
            board.deep_sleep(3600 * 1000)  # a typical wake: heartbeat due, nothing lost
            node = cycle.Node(board, net, identity, cases.sensors(board), cases.Watchdog())
            started = time.monotonic()
            mode, ms = node.run()
            typical_s = time.monotonic() - started
            assert node.errors == [] and node.published == 1 and proxy["dropped"] == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len([m for m in received if m.topic.endswith("/up")]) < 4:
            time.sleep(0.05)
        ups = [m.payload for m in received if m.topic.endswith("/up")]
        assert len(ups) == 4 and ups[0] == ups[1]  # the first frame twice (resent with DUP, same bytes), then two more
        msgs = [models.parse(telemetry.verify(frame, key), expect="tel") for frame in ups]
        assert [(m.dev, m.seq) for m in msgs] == [(node_id, 0), (node_id, 0), (node_id, 1), (node_id, 2)]
        assert [r.n for r in msgs[2].r] == ["air_temperature"]
        assert [r.n for r in msgs[3].r] == ["air_temperature", "battery"]
        births = [m for m in received if m.topic.endswith("/state")]
        assert births and isinstance(models.parse(telemetry.verify(births[-1].payload, key)), models.Presence)
        print(
            f"awake time against Mosquitto (CPython, simulated sensors, no Wi-Fi): a typical wake {typical_s:.2f} s "
            f"(frame {len(ups[3])} bytes), one with a lost PUBACK {awake_s:.2f} s"
        )
    finally:
        client.publish(topics.node(node_id, "state"), b"", qos=1, retain=True).wait_for_publish(5)
