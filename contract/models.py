"""Strict models of every message body (CPython side of the contract).

``contract.telemetry`` frames and signs bytes; these models say what a body may contain.  Edge
and cloud parse bodies through :func:`parse` so that a malformed message is one clear
:class:`~contract.telemetry.ContractError`, never a crash deeper in.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from contract.telemetry import (
    CONTRACT_VERSION,
    MAX_NODE_FRAME_BYTES,
    ContractError,
    unframe,
)

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Unit = Annotated[str, StringConstraints(max_length=16)]
Millis = Annotated[int, Field(ge=0, lt=2**53)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
Epoch = Annotated[int, Field(ge=0, lt=2**31)]
Quality = Annotated[int, Field(ge=0, lt=2**16)]

MAX_RECORDS = 256
MAX_BATCH_ITEMS = 5000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    v: Literal[1] = CONTRACT_VERSION


class Record(BaseModel):
    """A SenML-style record: name, unit, one value, offset from the base time, quality."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    n: MetricName
    u: Unit = ""
    v: float | int | None = None
    vs: Annotated[str, StringConstraints(max_length=256)] | None = None
    vb: bool | None = None
    t: Annotated[int, Field(ge=-(2**40), lt=2**40)] = 0
    q: Quality = 0

    @model_validator(mode="after")
    def _one_value(self) -> Record:
        given = [x for x in (self.v, self.vs, self.vb) if x is not None]
        if len(given) > 1:
            raise ValueError("a record carries at most one of v, vs, vb")
        if isinstance(self.v, float) and self.v != self.v:  # NaN never travels; send q=comm_error
            raise ValueError("v must be a finite number")
        if isinstance(self.v, float) and self.v in (float("inf"), float("-inf")):
            raise ValueError("v must be a finite number")
        return self

    @property
    def value(self) -> float | int | str | bool | None:
        for x in (self.v, self.vs, self.vb):
            if x is not None:
                return x
        return None


class Telemetry(_Body):
    k: Literal["tel"]
    dev: Ident
    ep: Epoch
    seq: Seq
    fw: Annotated[str, StringConstraints(max_length=64)]
    bt: Millis
    sync: Annotated[int, Field(ge=-1)]
    q: Quality = 0
    r: Annotated[list[Record], Field(min_length=1, max_length=MAX_RECORDS)]


class Batch(_Body):
    """A gateway's uplink: its own readings (gateway-attested) and node frames verbatim."""

    k: Literal["batch"]
    gw: Ident
    tenant: Ident
    ep: Epoch
    seq: Seq
    sw: Annotated[str, StringConstraints(max_length=64)]
    sent: Millis
    tel: Annotated[list[Telemetry], Field(max_length=MAX_BATCH_ITEMS)] = []
    nodes: Annotated[list[str], Field(max_length=MAX_BATCH_ITEMS)] = []

    @property
    def batch_id(self) -> str:
        return batch_id(self.gw, self.ep, self.seq)

    def node_frames(self) -> list[bytes]:
        """The node frames exactly as the nodes sent them."""
        return [s.encode() for s in self.nodes]


class DeviceHealth(BaseModel):
    """One device or sensor node in a gateway's heartbeat.  Fields after ``state`` are for sensor nodes
    (what the gateway last heard from each); all optional, so heartbeats without them still parse."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    last_good_ms: Millis | None = None
    errors: int = 0
    state: Literal["ok", "degraded", "down", "unknown"] = "unknown"
    battery: float | None = None  # the node's last ``battery`` record, in battery_unit (mV or V as sent)
    battery_unit: Annotated[str, StringConstraints(max_length=16)] | None = None
    rssi: float | None = None  # dBm, the node's last ``rssi`` record
    fw: Annotated[str, StringConstraints(max_length=64)] | None = None  # from its birth, else its last frame
    build: Annotated[int, Field(ge=0)] | None = None  # the firmware build its birth named (what OTA jobs compare)
    last_seq: Seq | None = None
    refused: dict[str, int] = {}  # what the node reported refusing (config_refused, ota_refused) by reason


class OutboxHealth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    depth: int
    oldest_age_s: float | None = None  # None (left out of the body) when the outbox is empty
    dropped: int
    bytes: int


class Health(_Body):
    k: Literal["health"]
    gw: Ident | None = None
    dev: Ident | None = None
    at: Millis
    sw: str
    uptime_s: float
    cpu_pct: float | None = None
    rss_mb: float | None = None
    disk_free_mb: float | None = None
    clock_synced: bool = True
    outbox: OutboxHealth | None = None
    counters: dict[str, int] = {}
    devices: dict[str, DeviceHealth] = {}


class Presence(_Body):
    """Birth (sent on connect, retained) and last will (the broker publishes it on loss)."""

    k: Literal["birth", "will"]
    gw: Ident | None = None
    dev: Ident | None = None
    at: Millis
    sw: str = ""
    config_version: int | None = None
    build: Annotated[int, Field(ge=0)] | None = None  # a node's firmware build (firmware/version.py BUILD)


class Config(_Body):
    """Configuration for one gateway or node, signed by the cloud with that device's key."""

    k: Literal["config"]
    target: Ident
    ver: Annotated[int, Field(ge=1)]
    issued: Millis
    cfg: dict[str, Any]


class Receipt(_Body):
    """The cloud's commit receipt: these batch ids are stored; the gateway may delete them."""

    k: Literal["receipt"]
    gw: Ident
    at: Millis
    bids: Annotated[list[str], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


Body = Telemetry | Batch | Health | Presence | Config | Receipt
_BY_KIND: dict[str, type[_Body]] = {
    "tel": Telemetry,
    "batch": Batch,
    "health": Health,
    "birth": Presence,
    "will": Presence,
    "config": Config,
    "receipt": Receipt,
}


def batch_id(gw: str, ep: int, seq: int) -> str:
    return f"{gw}:{ep}:{seq}"


def parse(body: bytes, expect: str | None = None) -> Body:
    """Parse and validate body bytes.  Raises ContractError naming the first field at fault."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError("bad_json", str(exc)) from None
    except RecursionError:  # ``[[[[…`` a few thousand deep: the stdlib decoder recurses
        raise ContractError("bad_json", "nested too deeply") from None
    if not isinstance(obj, dict):
        raise ContractError("bad_header", "body is not a JSON object")
    kind = obj.get("k")
    if expect is not None and kind != expect:
        raise ContractError("wrong_kind", f"expected k={expect!r}, got {kind!r}")
    model = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ContractError("bad_header", f"unknown kind k={kind!r}")
    if obj.get("v") != CONTRACT_VERSION:
        raise ContractError("bad_version", f"v={obj.get('v')!r}, expected {CONTRACT_VERSION}")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ContractError("bad_field", f"{where}: {err['msg']}") from None


def parse_frame(frame: bytes, expect: str | None = None, max_bytes: int = MAX_NODE_FRAME_BYTES) -> Body:
    """Unframe (without checking the MAC) and parse: for checks of form before verification."""
    _mac, body = unframe(frame, max_bytes)
    return parse(body, expect)
