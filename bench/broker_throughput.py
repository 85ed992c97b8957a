"""Broker throughput: amqtt (the pure-Python fallback) against Mosquitto, in the same run.

``python -m bench.broker_throughput [--messages N] [--batches N] [--readings N] [--in-flight N]``

Three figures per broker, each broker private and on loopback:

* raw QoS 1: one paho client publishes ``--messages`` QoS 1 messages, another receives them
  (both MQTT 3.1.1, which both brokers speak): the broker's own ceiling;
* our uplink, one reading per batch: batches receipted per second from a full outbox to an empty
  one, through the cloud peer (each batch is two QoS 1 messages through the broker: the batch
  and its receipt);
* our uplink, 200 readings per batch (the default): readings receipted per second.

The uplink speaks each broker's own protocol (MQTT 5 to Mosquitto, 3.1.1 to amqtt), as the demo
does.  The private Mosquitto runs the gateway broker's settings, whose Maximum Packet Size (16 KiB,
announced in the MQTT 5 CONNACK) cuts its batches at about 100 readings; amqtt announces no limit,
so its batches carry all 200.  Needs the ``mosquitto`` binary.

Measured on the 2-core development machine (loopback, other work running): raw QoS 1 amqtt
2,800-4,800 messages/s, a quarter to a third of Mosquitto's 9,400-14,800.  Through the uplink the
broker hardly matters: ~140-180 one-reading batches/s on either, a round trip of ~50 ms for 8 in
flight, which is paho leaving Nagle's algorithm on (a PUBACK then the next PUBLISH waits for the
peer's delayed ACK; with TCP_NODELAY on the link's socket both reach ~700-950 batches/s); and
10,000-26,000 readings/s in full batches, Mosquitto's cut smaller by its 16 KiB packet limit.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import Figure
from contract.telemetry import encode_body, record, telemetry
from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from fieldtrust.services.broker import BrokerKind, LocalBroker, start_local_broker
from hardware.cloud_peer import CloudPeer

KEY = bytes(range(32))
TENANT, GW = "bench", "gw-bench"
COMPARED: tuple[BrokerKind, BrokerKind] = ("mosquitto", "amqtt")


def raw_qos1_rate(broker: LocalBroker, n: int) -> float:
    """QoS 1 messages per second from one publisher to one subscriber."""
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    received = 0

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_connect = lambda client, *_a: client.subscribe(topic, 1)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    for client in (sub, pub):
        client.connect(broker.host, broker.port)
        client.loop_start()
    try:
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK")
        payload = b"x" * 300  # about a node frame
        t0 = time.perf_counter()
        infos = [pub.publish(topic, payload, qos=1) for _ in range(n)]
        if not done.wait(120):
            raise TimeoutError(f"received {received} of {n}")
        elapsed = time.perf_counter() - t0
        for info in infos:
            info.wait_for_publish(10)
        return n / elapsed
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def fill(box: Outbox, n: int) -> None:
    bt = 1_764_480_000_000
    for i in range(n):
        recs = [record("soil_moisture", "%", 20 + i % 100 / 10), record("soil_temperature", "Cel", 18.5)]
        box.capture_attested(f"soil-{i % 20:02d}", 1,
                             lambda seq, i=i, recs=recs: encode_body(telemetry(
                                 f"soil-{i % 20:02d}", 1, seq, bt + i, recs, "edge/bench", 0)))


def uplink_rate(broker: LocalBroker, workdir: Path, readings: int, batch_items: int, in_flight: int) -> float:
    """Readings per second from a full outbox to an empty one (every batch receipted)."""
    box = Outbox(workdir / f"outbox-{uuid.uuid4().hex[:6]}.db", 1 << 30)
    try:
        fill(box, readings)
        gateway = GatewayIdentity(id=GW, tenant=TENANT, key_hex=KEY.hex())
        cfg = UplinkConfig(broker=BrokerConfig(host=broker.host, port=broker.port, protocol=broker.protocol),
                           batch_max_items=batch_items, batch_max_wait_s=0, max_in_flight=in_flight)
        up = Uplink(gateway, KEY, cfg, box, sw="edge/bench")
        with CloudPeer(broker.host, broker.port, TENANT, GW, KEY, protocol=broker.protocol) as peer:
            t0 = time.perf_counter()
            up.start()
            try:
                if not peer.wait_for(lambda _p: box.stats().depth == 0, timeout=300):
                    raise TimeoutError(f"outbox not drained: {box.stats()}")
                elapsed = time.perf_counter() - t0
            finally:
                up.stop()
        return readings / elapsed
    finally:
        box.close()


def measure(kind: BrokerKind, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    with start_local_broker(workdir / kind, kind) as broker:
        return {
            "raw": raw_qos1_rate(broker, args.messages),
            "one": uplink_rate(broker, workdir, args.batches, 1, args.in_flight),
            "full": uplink_rate(broker, workdir, args.readings, 200, args.in_flight),
        }


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): Mosquitto's figures, and amqtt's against them."""
    sizes = argparse.Namespace(messages=1000, batches=200, readings=2000, in_flight=8) if quick else \
        argparse.Namespace(messages=10_000, batches=2_000, readings=20_000, in_flight=8)
    with tempfile.TemporaryDirectory(prefix="fieldtrust-bench-") as tmp:
        r = {kind: measure(kind, Path(tmp), sizes) for kind in COMPARED}
    mq, am = r["mosquitto"], r["amqtt"]
    return [
        Figure("mosquitto_raw_qos1", round(mq["raw"]), "messages/s"),
        Figure("uplink_1_reading_batches_mosquitto", round(mq["one"]), "batches/s",
               "raw QoS 1 / 2 (a batch and its receipt)", round(mq["raw"] / 2)),
        Figure("uplink_200_reading_batches_mosquitto", round(mq["full"]), "readings/s"),
        Figure("amqtt_raw_qos1", round(am["raw"]), "messages/s", "mosquitto", round(mq["raw"])),
        Figure("uplink_200_reading_batches_amqtt", round(am["full"]), "readings/s", "mosquitto", round(mq["full"])),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="raw QoS 1 messages")
    parser.add_argument("--batches", type=int, default=2_000, help="one-reading batches through the uplink")
    parser.add_argument("--readings", type=int, default=20_000, help="readings in 200-reading batches")
    parser.add_argument("--in-flight", type=int, default=8, help="uplink.max_in_flight (default as configured)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fieldtrust-bench-") as tmp:
        results = {kind: measure(kind, Path(tmp), args) for kind in COMPARED}
    rows: list[tuple[str, str, Callable[[dict[str, float]], float]]] = [
        ("raw QoS 1, pub -> sub (MQTT 3.1.1)", "messages/s", lambda r: r["raw"]),
        ("uplink, 1 reading per batch (batch + receipt)", "batches/s", lambda r: r["one"]),
        ("uplink, 200 readings per batch", "readings/s", lambda r: r["full"]),
    ]
    print(f"{'':48} {'unit':>11} {'mosquitto':>10} {'amqtt':>10} {'amqtt/mosq':>11}")
    for label, unit, get in rows:
        mq, am = get(results["mosquitto"]), get(results["amqtt"])
        print(f"{label:48} {unit:>11} {mq:>10.0f} {am:>10.0f} {am / mq:>11.2f}")


if __name__ == "__main__":
    main()
