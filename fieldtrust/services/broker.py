"""A broker of our own on a machine that has none: a private Mosquitto when the binary is
installed, else amqtt (pure Python, installed with the project).

Both listen on 127.0.0.1 and a spare port, run as children through
``fieldtrust.processes.spawn`` and say which MQTT version they speak (``protocol``), which the
caller passes on to the gateway agent's broker settings: Mosquitto speaks MQTT 5, amqtt 3.1.1.

``FIELDTRUST_BROKER=mosquitto|amqtt`` forces the choice (to try the amqtt path on a machine
that has Mosquitto, say).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal, Protocol, Self, cast

from fieldtrust.services.amqtt_broker import AmqttBroker
from fieldtrust.services.mosquitto import PrivateMosquitto

BROKER_ENV = "FIELDTRUST_BROKER"
BrokerKind = Literal["auto", "mosquitto", "amqtt"]
KINDS: tuple[BrokerKind, ...] = ("auto", "mosquitto", "amqtt")


class LocalBroker(Protocol):
    """What the demo, tests and benchmarks need of a private broker."""

    host: str
    port: int
    protocol: Literal["5", "3.1.1"]

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def choose_kind(kind: BrokerKind = "auto") -> Literal["mosquitto", "amqtt"]:
    """``auto``: what ``FIELDTRUST_BROKER`` says, else Mosquitto when on the PATH, else amqtt."""
    if kind == "auto":
        forced = os.environ.get(BROKER_ENV, "").strip().lower() or "auto"
        if forced not in KINDS:
            raise ValueError(f"{BROKER_ENV} must be one of {', '.join(KINDS)}; got {forced!r}")
        kind = cast(BrokerKind, forced)
    if kind not in KINDS:
        raise ValueError(f"broker kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "auto":
        return "mosquitto" if shutil.which("mosquitto") else "amqtt"
    return kind


def start_local_broker(workdir: Path, kind: BrokerKind = "auto") -> LocalBroker:
    """Start a private broker writing in ``workdir``; the caller stops it (or uses it as a context)."""
    if choose_kind(kind) == "mosquitto":
        return PrivateMosquitto(workdir).start()
    return AmqttBroker(workdir).start()
