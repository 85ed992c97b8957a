"""One MQTT message from a gateway in, verified telemetry with its rows and dead letters out.

No database writes happen here (the :class:`~cloud.ingest.directory.Directory` only reads the
registry): the result, a :class:`Prepared`, is committed later together with other messages by
:mod:`cloud.ingest.commit`, which applies the duplicate rule against the ledger.

Checks, in order, each failure a dead letter with its reason and the raw bytes:

* the message: topic form, frame form and size, batch header, the gateway registered under the
  topic's tenant, the body's gateway and tenant equal to the topic's, a usable (known, not
  revoked) key for the batch's epoch, the batch signature over the exact bytes;
* each telemetry body in it: well-formed (``contract.models``' rules), its device registered in
  the tenant — a *bus* device on this gateway for gateway-attested bodies, a *node* with a usable
  key and a valid signature for node frames;
* each record: the contract's record rules and :mod:`cloud.ingest.validate`'s checks.

This runs for every reading, so the common case has fast paths that decide exactly as the general
ones (``tests/test_ingest_plain.py`` shows it on generated bodies): a well-formed batch is checked
in one pydantic-core pass into dicts (:mod:`cloud.ingest.plain_models`), a number for a metric of
the device's spec becomes its row without a call per record, and a message's rows are encoded for
COPY here rather than by the thread that holds the transaction.
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
from cloud.ingest.plain_models import BATCH, RECORD_DEFAULTS, TELEMETRY, TELEMETRY_Q_DEFAULT, records_hold
from cloud.ingest.validate import (
    NumberRules,
    RecordFields,
    RowRejected,
    Rules,
    TimeWindow,
    check_record,
    number_rules,
    parse_record,
)
from cloud.store.writes import (
    PG_EPOCH_MS,
    DeadLetter,
    DeviceInfo,
    EncodedReadings,
    MessageKey,
    MessageRow,
    ReadingRow,
    encode_readings,
)
from contract import models, topics
from contract.telemetry import (
    MAX_BATCH_FRAME_BYTES,
    MAX_NODE_FRAME_BYTES,
    Q_OUT_OF_RANGE,
    ContractError,
    equal_constant_time,
    hmac_sha256,
    unframe,
)

TRUST_NODE = 1  # the node's own signature verified
TRUST_GATEWAY = 2  # in the gateway's signed batch
_DAY_MS = 86_400_000
_U, _T, _Q = RECORD_DEFAULTS["u"], RECORD_DEFAULTS["t"], RECORD_DEFAULTS["q"]
#: a message's rows are encoded for COPY here from this many on; below, setting up the encoder (~10 µs) would
#: cost more than it saves the committer, which encodes such small messages' rows all in one go
ENCODE_MIN_ROWS = 100


class _TelemetryEnvelope(models.Telemetry):
    """A telemetry body whose records are not checked yet: to keep the good records of a body with bad ones."""

    r: Annotated[list[Any], Field(min_length=1, max_length=models.MAX_RECORDS)]  # type: ignore[assignment]


@dataclass(slots=True)
class TelemetryItem:
    """One telemetry message that passed its checks: its ledger row, readings and refused records."""

    message: MessageRow
    key: MessageKey  # the message's identity in the ledger: (device, key epoch, sequence)
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
    """What one MQTT message amounts to before the ledger is consulted.

    Besides its items, their sums: what the commit needs when every message is new (the common
    case), worked out here, off the committing thread — the rows already encoded for COPY.
    """

    topic: str
    payload: bytes
    batch: VerifiedBatch | None  # None: the message itself was refused
    items: list[TelemetryItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    readings: int = 0
    node_readings: int = 0
    row_letters: list[DeadLetter] = field(default_factory=list)  # the items' refused records, in order
    devices: set[str] = field(default_factory=set)
    newest_ms: int | None = None
    days: set[int] = field(default_factory=set)  # UTC days the readings span, for the partitions they need
    encoded: EncodedReadings | None = None  # the items' rows, in order (None: few enough for the committer)


@dataclass(slots=True)
class _Parsed:
    """A telemetry body parsed, with each record checked by the contract (or refused)."""

    dev: str
    ep: int
    seq: int
    bt: int
    q: int
    records: list[RecordFields | RowRejected]
    raw: dict[str, Any] | None  # the body as parsed JSON, when at hand (for refused records' payloads)

    @classmethod
    def of(cls, tel: dict[str, Any]) -> _Parsed:
        """From a body :mod:`cloud.ingest.plain_models` accepted, records included."""
        return cls(tel["dev"], tel["ep"], tel["seq"], tel["bt"], tel.get("q", TELEMETRY_Q_DEFAULT), tel["r"], None)


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
        tel = TELEMETRY.validate_json(body)
    except ValidationError:
        tel = None  # some part is bad: find out below whether it is the header or single records
    if tel is not None and records_hold(tel["r"]):
        return _Parsed.of(tel)
    if raw is None:
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError("bad_json", str(exc)) from None
        except RecursionError:  # ``[[[[…`` a few thousand deep: the stdlib decoder recurses
            raise ContractError("bad_json", "nested too deeply") from None
    try:
        env = _TelemetryEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("bad_telemetry", _validation_detail(exc)) from None
    records: list[RecordFields | RowRejected] = []
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
        self._numbers: dict[str | None, NumberRules] = {}  # by spec key, from the directory's rules

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
        # Fast path: the whole batch is well-formed (one validation in pydantic-core, into dicts).  Otherwise
        # the scanner finds out whether the header is at fault (the message is refused) or single bodies are.
        try:
            plain: dict[str, Any] | None = BATCH.validate_json(body)
        except ValidationError:
            plain = None
        if plain is not None and not all(records_hold(t["r"]) for t in plain.get("tel", ())):
            plain = None
        scanned = None
        if plain is not None:
            head = plain
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
        if plain is not None:
            bodies = plain.get("tel", ())
            spans = tel_spans(body, len(bodies))
            if spans is None:  # not laid out as our gateways lay it out: find them the slow way
                try:
                    spans = [raw for _, raw in scan_batch(body).tel]
                except ContractError as exc:
                    raise _Refused(exc.reason, exc.detail) from None
            tel = [(_Parsed.of(t), raw) for t, raw in zip(bodies, spans, strict=True)]
            batch_id = models.batch_id(plain["gw"], plain["ep"], plain["seq"])
            sent, nodes = plain["sent"], plain.get("nodes", ())
        else:
            assert scanned is not None
            header = self._header(scanned)
            tel = [(self._parse(raw, obj), raw) for obj, raw in scanned.tel]
            batch_id, sent, nodes = header.batch_id, header.sent, header.nodes
        verified = VerifiedBatch(batch_id, tenant, gw, payload, hashlib.sha256(payload).digest(), key, sent)
        out = Prepared(topic, payload, verified)
        self._contents(out, tel, [n.encode() for n in nodes], window)
        self._sum_up(out)
        return out

    def _sum_up(self, out: Prepared) -> None:
        rows: list[ReadingRow] = []
        for item in out.items:
            rows += item.rows
            out.row_letters += item.rejects
            if item.message.trust == TRUST_NODE:
                out.node_readings += len(item.rows)
            out.devices.add(item.message.device_id)
            if item.newest_ms is not None and (out.newest_ms is None or item.newest_ms > out.newest_ms):
                out.newest_ms = item.newest_ms
            out.days.update(item.days)
        out.readings = len(rows)
        if len(rows) >= ENCODE_MIN_ROWS:
            out.encoded = encode_readings(self.directory.conn, rows)

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
        rows, rejects, first, last = self._rows(batch, message, p, body, info.spec_key, window)
        days = range(first // _DAY_MS, last // _DAY_MS + 1) if first is not None and last is not None else range(0)
        return TelemetryItem(message, (p.dev, p.ep, p.seq), body, rows, rejects, last, days)

    def _rows(self, batch: VerifiedBatch, msg: MessageRow, p: _Parsed, body: bytes, spec_key: str | None,
              window: TimeWindow) -> tuple[list[ReadingRow], list[DeadLetter], int | None, int | None]:
        """Rows of the good records, dead letters of the others, and the earliest and latest reading time.

        Runs for every reading.  A record the contract accepted that carries a number for a (metric, unit)
        of the device's spec, in the time window, takes the fast path (what :func:`number_rules` says
        :func:`check_record` would do); every other record goes through :func:`check_record` itself.
        """
        rows: list[ReadingRow] = []
        rejects: list[DeadLetter] = []
        times: list[int] = []
        ids = self.directory.metric_ids
        rules = self.directory.rules(spec_key)
        numbers = self._number_rules(spec_key, rules)
        tenant, device, trust, epoch, seq = msg.tenant_id, msg.device_id, msg.trust, msg.epoch, msg.seq
        bt, q = p.bt, p.q
        earliest, latest = window.earliest_ms, window.latest_ms
        for index, rec in enumerate(p.records):
            if numbers is not None and rec.__class__ is dict:
                v = rec.get("v")
                ts = bt + rec.get("t", _T)
                pair = (rec["n"], rec.get("u", _U))
                limits = numbers.get(pair)
                if limits is not None and v is not None and earliest <= ts <= latest:
                    try:
                        value = float(v)
                    except OverflowError:
                        value = None  # too large for a double: check_record says why
                    if value is not None:
                        quality = rec.get("q", _Q) | q
                        low, high = limits
                        if (low is not None and value < low) or (high is not None and value > high):
                            quality |= Q_OUT_OF_RANGE
                        rows.append((tenant, device, ids.get(pair) or self.directory.metric_id(*pair),
                                     (ts - PG_EPOCH_MS) * 1000, value, None, quality, trust, epoch, seq))
                        times.append(ts)
                        continue
            try:
                if isinstance(rec, RowRejected):
                    raise rec
                metric, unit, ts, value, text, quality = check_record(rec, bt, q, window, rules)
            except RowRejected as exc:
                rejects.append(self._row_letter(batch, p, body, index, exc))
                continue
            metric_id = ids.get((metric, unit)) or self.directory.metric_id(metric, unit)
            rows.append((tenant, device, metric_id, (ts - PG_EPOCH_MS) * 1000, value, text, quality, trust, epoch, seq))
            times.append(ts)
        return rows, rejects, min(times, default=None), max(times, default=None)

    def _number_rules(self, spec_key: str | None, rules: Rules | None) -> NumberRules | None:
        if rules is None:
            return None
        numbers = self._numbers.get(spec_key)
        if numbers is None:
            numbers = self._numbers[spec_key] = number_rules(rules)
        return numbers

    @staticmethod
    def _row_letter(batch: VerifiedBatch, p: _Parsed, body: bytes, index: int, exc: RowRejected) -> DeadLetter:
        """A refused record, with the context needed to replay it: batch, device, key epoch, sequence, base time."""
        raw = p.raw if p.raw is not None else json.loads(body)
        payload = json.dumps({"batch": batch.batch_id, "dev": p.dev, "ep": p.ep, "seq": p.seq, "bt": p.bt,
                              "q": p.q, "index": index, "record": raw["r"][index]}, separators=(",", ":"))
        return DeadLetter(topics.gateway(batch.tenant_id, batch.gateway_id, "up"), exc.reason, exc.detail,
                          payload.encode(), batch.tenant_id, batch.gateway_id, p.dev)
