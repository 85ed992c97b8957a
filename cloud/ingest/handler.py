"""One MQTT message from a gateway in, verified telemetry with its rows and dead letters out.

No database writes happen here (the :class:`~cloud.ingest.directory.Directory` only reads the
registry): the result, a :class:`Prepared`, is committed later together with other messages by
:mod:`cloud.ingest.commit`, which applies the duplicate rule against the ledger.

Checks, in order, each failure a dead letter with its reason and the raw bytes:

* the message: topic form, frame form and size, batch header, the gateway registered under the
  topic's tenant, the body's gateway and tenant equal to the topic's, a usable (known, not
  revoked) key for the batch's epoch, the batch signature over the exact bytes;
* each telemetry body in it: well-formed (``contract.models``), its device registered in the
  tenant — a *bus* device on this gateway for gateway-attested bodies, a *node* with a usable key
  and a valid signature for node frames;
* each record: the contract's record rules and :mod:`cloud.ingest.validate`'s checks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, ValidationError

from cloud.ingest.batch_scan import ScannedBatch, scan_batch, tel_spans
from cloud.ingest.directory import Directory
from cloud.ingest.validate import RowRejected, Rules, TimeWindow, check_record, parse_record
from cloud.store.writes import DeadLetter, DeviceInfo, MessageRow, ReadingRow, pg_time
from contract import models, topics
from contract.telemetry import (
    MAX_BATCH_FRAME_BYTES,
    MAX_NODE_FRAME_BYTES,
    ContractError,
    equal_constant_time,
    hmac_sha256,
    unframe,
)

TRUST_NODE = 1  # the node's own signature verified
TRUST_GATEWAY = 2  # in the gateway's signed batch
_DAY_MS = 86_400_000


class _TelemetryEnvelope(models.Telemetry):
    """A telemetry body whose records are not checked yet: to keep the good records of a body with bad ones."""

    r: Annotated[list[Any], Field(min_length=1, max_length=models.MAX_RECORDS)]  # type: ignore[assignment]


@dataclass(slots=True)
class TelemetryItem:
    """One telemetry message that passed its checks: its ledger row, readings and refused records."""

    message: MessageRow
    body: bytes
    rows: list[ReadingRow]
    rejects: list[DeadLetter]
    newest_ms: int | None
    days: range  # UTC days its readings span (days since 1970-01-01), for the partitions they need


@dataclass(slots=True)
class VerifiedBatch:
    batch_id: str
    tenant_id: str
    gateway_id: str
    frame: bytes
    frame_digest: bytes  # SHA-256 of the frame, compared with sha256(ft.batches.frame)
    key: bytes  # the gateway key that verified it, to sign the receipt with
    sent_ms: int


@dataclass(slots=True)
class Prepared:
    """What one MQTT message amounts to before the ledger is consulted."""

    topic: str
    payload: bytes
    batch: VerifiedBatch | None  # None: the message itself was refused
    items: list[TelemetryItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def readings(self) -> int:
        return sum(len(i.rows) for i in self.items)


@dataclass(slots=True)
class _Parsed:
    """A telemetry body parsed, with each record checked by the contract (or refused)."""

    dev: str
    ep: int
    seq: int
    bt: int
    q: int
    records: list[models.Record | RowRejected]
    raw: dict[str, Any] | None  # the body as parsed JSON, when at hand (for refused records' payloads)

    @classmethod
    def of(cls, tel: models.Telemetry) -> _Parsed:
        return cls(tel.dev, tel.ep, tel.seq, tel.bt, tel.q, list(tel.r), None)


class _Refused(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def mac_matches(mac: bytes, body: bytes, key: bytes) -> bool:
    """``contract.telemetry.verify``'s check on a frame already split by ``unframe`` (verify would split it again)."""
    return equal_constant_time(mac, hmac_sha256(key, body).hex().encode())


def _validation_detail(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"


def parse_telemetry(body: bytes, raw: Any = None) -> _Parsed:
    """Parse a telemetry body; a bad record is kept as a :class:`RowRejected` in its place.

    Raises ContractError when the body itself (its header, or its form) is refused.
    """
    try:
        return _Parsed.of(models.Telemetry.model_validate_json(body))
    except ValidationError:
        pass  # some part is bad: find out whether it is the header or single records
    if raw is None:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError("bad_json", str(exc)) from None
    try:
        env = _TelemetryEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("bad_telemetry", _validation_detail(exc)) from None
    records: list[models.Record | RowRejected] = []
    for rec in env.r:
        try:
            records.append(parse_record(rec))
        except RowRejected as exc:
            records.append(exc)
    return _Parsed(env.dev, env.ep, env.seq, env.bt, env.q, records, raw)


class Handler:
    """Turns messages into :class:`Prepared` units; one per worker, used by one thread."""

    def __init__(self, directory: Directory, *, max_past_days: int, max_future_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._max_past_days = max_past_days
        self._max_future_s = max_future_s
        self._clock = clock

    def prepare(self, topic: str, payload: bytes) -> Prepared:
        window = TimeWindow.around(self._max_past_days, self._max_future_s, self._clock())
        try:
            tenant, gw, leaf = topics.parse_gateway_topic(topic)
        except ValueError as exc:
            return Prepared(topic, payload, None, dead_letters=[DeadLetter(topic, "bad_topic", str(exc), payload)])
        try:
            if leaf != "up":
                raise _Refused("bad_topic", f"not an uplink topic: {topic!r}")
            return self._batch(topic, payload, tenant, gw, window)
        except _Refused as exc:
            letter = DeadLetter(topic, exc.reason, exc.detail, payload, tenant, gw)
            return Prepared(topic, payload, None, dead_letters=[letter])

    # -- the batch ------------------------------------------------------------------------------

    def _batch(self, topic: str, payload: bytes, tenant: str, gw: str, window: TimeWindow) -> Prepared:
        try:
            mac, body = unframe(payload, MAX_BATCH_FRAME_BYTES)
        except ContractError as exc:
            raise _Refused(exc.reason, exc.detail) from None
        # Fast path: the whole batch is well-formed (one validation in pydantic-core).  Otherwise the scanner
        # finds out whether the header is at fault (the message is refused) or single telemetry bodies are.
        try:
            batch: models.Batch | None = models.Batch.model_validate_json(body)
        except ValidationError:
            batch = None
        scanned = None
        if batch is not None:
            head = {"k": batch.k, "gw": batch.gw, "tenant": batch.tenant, "ep": batch.ep}
        else:
            try:
                scanned = scan_batch(body)
            except ContractError as exc:
                raise _Refused(exc.reason, exc.detail) from None
            head = scanned.header
        key = self._sender_key(head, tenant, gw)
        if not mac_matches(mac, body, key):
            raise _Refused("bad_signature", f"gateway {gw!r} key epoch {head['ep']}: HMAC does not match the body")
        tel: list[tuple[_Parsed | ContractError, bytes]]
        if batch is not None:
            spans = tel_spans(body, len(batch.tel))
            if spans is None:  # not laid out as our gateways lay it out: find them the slow way
                try:
                    spans = [raw for _, raw in scan_batch(body).tel]
                except ContractError as exc:
                    raise _Refused(exc.reason, exc.detail) from None
            tel = [(_Parsed.of(t), raw) for t, raw in zip(batch.tel, spans, strict=True)]
        else:
            assert scanned is not None
            batch = self._header(scanned)
            tel = [(self._parse(raw, obj), raw) for obj, raw in scanned.tel]
        verified = VerifiedBatch(batch.batch_id, tenant, gw, payload, hashlib.sha256(payload).digest(), key,
                                 batch.sent)
        out = Prepared(topic, payload, verified)
        self._contents(out, tel, batch.node_frames(), window)
        return out

    def _sender_key(self, head: dict[str, Any], tenant: str, gw: str) -> bytes:
        """The key that must have signed the batch, once the header agrees with the topic and the registry."""
        if head.get("k") != "batch":
            raise _Refused("wrong_kind", f"expected k='batch', got {head.get('k')!r}")
        if head.get("gw") != gw:
            raise _Refused("gateway_mismatch", f"the topic names gateway {gw!r}, the body {head.get('gw')!r}")
        if head.get("tenant") != tenant:
            raise _Refused("tenant_mismatch", f"the topic names tenant {tenant!r}, the body {head.get('tenant')!r}")
        registered = self.directory.gateway_tenant(gw)
        if registered is None:
            raise _Refused("unknown_gateway", f"gateway {gw!r} is not registered")
        if registered != tenant:
            raise _Refused("tenant_mismatch", f"gateway {gw!r} is not registered in tenant {tenant!r}")
        ep = head.get("ep")
        if not isinstance(ep, int) or isinstance(ep, bool) or not 0 <= ep < 2**31:
            raise _Refused("bad_field", f"ep: must be a key epoch, got {ep!r}")
        key = self.directory.key("gateway", gw, ep, tenant)
        if key is None:
            raise _Refused(self.directory.missing_key_reason("gateway", gw, ep), f"gateway {gw!r} key epoch {ep}")
        return key

    @staticmethod
    def _header(scanned: ScannedBatch) -> models.Batch:
        """The header of a batch some of whose telemetry is bad, checked by the contract without its telemetry."""
        if "tel" in scanned.header:
            raise _Refused("bad_field", "tel: must be a list")
        if len(scanned.tel) > models.MAX_BATCH_ITEMS:
            raise _Refused("bad_field", f"tel: more than {models.MAX_BATCH_ITEMS} items")
        try:
            return models.Batch.model_validate({**scanned.header, "tel": []})
        except ValidationError as exc:
            raise _Refused("bad_field", _validation_detail(exc)) from None

    def _contents(self, out: Prepared, tel: list[tuple[_Parsed | ContractError, bytes]], nodes: list[bytes],
                  window: TimeWindow) -> None:
        assert out.batch is not None
        # (raw bytes, its MAC for a node frame, the body, the body parsed)
        parsed: list[tuple[bytes, bytes | None, bytes, _Parsed | ContractError]] = [
            (raw, None, raw, p) for p, raw in tel]
        for frame in nodes:
            try:
                mac, body = unframe(frame, MAX_NODE_FRAME_BYTES)
            except ContractError as exc:
                parsed.append((frame, None, b"", exc))
                continue
            parsed.append((frame, mac, body, self._parse(body, None)))
        known = self.directory.devices({p.dev for *_, p in parsed if isinstance(p, _Parsed)})
        for raw, mac, body, p in parsed:
            try:
                if isinstance(p, ContractError):
                    raise _Refused(p.reason, p.detail)
                item = self._item(out.batch, raw, mac, body, p, known.get(p.dev), window)
            except _Refused as exc:
                dev = p.dev if isinstance(p, _Parsed) else None
                detail = f"batch {out.batch.batch_id}: {exc.detail}"
                out.dead_letters.append(DeadLetter(out.topic, exc.reason, detail, raw, out.batch.tenant_id,
                                                   out.batch.gateway_id, dev))
                continue
            out.items.append(item)

    @staticmethod
    def _parse(body: bytes, raw: Any) -> _Parsed | ContractError:
        try:
            return parse_telemetry(body, raw)
        except ContractError as exc:
            return exc

    # -- one telemetry message -------------------------------------------------------------------

    def _item(self, batch: VerifiedBatch, raw: bytes, mac: bytes | None, body: bytes, p: _Parsed,
              info: DeviceInfo | None, window: TimeWindow) -> TelemetryItem:
        """A gateway-attested body (``mac`` None) or a node frame (``raw``, split into ``mac`` and ``body``)."""
        if info is None or info.tenant_id != batch.tenant_id:
            raise _Refused("unknown_device", f"device {p.dev!r} is not registered in tenant {batch.tenant_id!r}")
        if mac is None:
            trust, frame = TRUST_GATEWAY, None
            if info.kind != "bus":
                raise _Refused("not_attestable", f"device {p.dev!r} is a node: it signs its own messages, "
                                                 "a gateway cannot attest them")
            if info.gateway_id != batch.gateway_id:
                raise _Refused("wrong_gateway", f"device {p.dev!r} is registered on gateway {info.gateway_id!r}")
        else:
            if info.kind != "node":
                raise _Refused("not_a_node", f"device {p.dev!r} is a bus device: it has no key to sign with")
            key = self.directory.key("device", p.dev, p.ep, batch.tenant_id)
            if key is None:
                raise _Refused(self.directory.missing_key_reason("device", p.dev, p.ep),
                               f"device {p.dev!r} key epoch {p.ep}")
            if not mac_matches(mac, body, key):
                raise _Refused("bad_signature", f"device {p.dev!r} key epoch {p.ep}: HMAC does not match the body")
            trust, frame = TRUST_NODE, raw
        message = MessageRow(p.dev, p.ep, p.seq, batch.tenant_id, batch.gateway_id, hashlib.sha256(body).digest(),
                             trust, batch.batch_id, frame)
        rows, rejects, first, last = self._rows(batch, message, p, body, self.directory.rules(info.spec_key), window)
        days = range(first // _DAY_MS, last // _DAY_MS + 1) if first is not None and last is not None else range(0)
        return TelemetryItem(message, body, rows, rejects, last, days)

    def _rows(self, batch: VerifiedBatch, msg: MessageRow, p: _Parsed, body: bytes, rules: Rules | None,
              window: TimeWindow) -> tuple[list[ReadingRow], list[DeadLetter], int | None, int | None]:
        """Rows of the good records, dead letters of the others, and the earliest and latest reading time."""
        rows: list[ReadingRow] = []
        rejects: list[DeadLetter] = []
        first = last = None
        ids = self.directory.metric_ids
        head = (msg.tenant_id, msg.device_id)
        tail = (msg.trust, msg.epoch, msg.seq)
        for index, rec in enumerate(p.records):
            try:
                if isinstance(rec, RowRejected):
                    raise rec
                metric, unit, ts, value, text, quality = check_record(rec, p.bt, p.q, window, rules)
            except RowRejected as exc:
                rejects.append(self._row_letter(batch, p, body, index, exc))
                continue
            rows.append((*head, ids.get((metric, unit)) or self.directory.metric_id(metric, unit), pg_time(ts),
                         value, text, quality, *tail))
            if first is None or ts < first:
                first = ts
            if last is None or ts > last:
                last = ts
        return rows, rejects, first, last

    @staticmethod
    def _row_letter(batch: VerifiedBatch, p: _Parsed, body: bytes, index: int, exc: RowRejected) -> DeadLetter:
        """A refused record, with the context needed to replay it: batch, device, key epoch, sequence, base time."""
        raw = p.raw if p.raw is not None else json.loads(body)
        payload = json.dumps({"batch": batch.batch_id, "dev": p.dev, "ep": p.ep, "seq": p.seq, "bt": p.bt,
                              "q": p.q, "index": index, "record": raw["r"][index]}, separators=(",", ":"))
        return DeadLetter(topics.gateway(batch.tenant_id, batch.gateway_id, "up"), exc.reason, exc.detail,
                          payload.encode(), batch.tenant_id, batch.gateway_id, p.dev)
