"""Per-reading checks: a record becomes a row for ``ft.readings`` or a rejection with a reason.

Rows are checked one by one so that one bad record costs one dead letter, never its batch: a
time far from now (a node whose clock reads 1970, garbage that reads 2099), a unit other than
the one the device's spec gives for the metric, a metric the spec does not have, a value that is
not a finite number.  A value outside the spec's physical range is *kept* and flagged with
``Q_OUT_OF_RANGE``: the sensor may be right and the spec's range too narrow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from cloud.ingest.plain_models import RECORD_DEFAULTS
from contract import models
from contract.telemetry import Q_COMM_ERROR, Q_OUT_OF_RANGE
from device_specs.schema import DataType, DeviceSpec

# Reasons a single record is refused (dead letter ``reason``).
ROW_TIME = "row_time_out_of_range"
ROW_UNIT = "row_unit_mismatch"
ROW_METRIC = "row_unknown_metric"
ROW_NAN = "row_not_a_number"
ROW_TYPE = "row_type_mismatch"
ROW_INVALID = "row_invalid"

#: one row of ft.readings without tenant, device, trust, epoch and seq (the message supplies them)
Reading = tuple[str, str, int, float | None, str | None, int]  # metric, unit, ts_ms, value, value_text, quality
#: a record's fields by name, as :mod:`cloud.ingest.plain_models` or :func:`parse_record` give them; a field
#: left out has the contract's default
RecordFields = dict[str, Any]
_U, _V, _VS, _VB, _T, _Q = (RECORD_DEFAULTS[k] for k in ("u", "v", "vs", "vb", "t", "q"))


class RowRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


ValueKind = Literal["number", "bool", "text"]


@dataclass(frozen=True, slots=True)
class PointRule:
    unit: str
    low: float | None
    high: float | None
    kind: ValueKind = "number"


def _kind(data_type: DataType) -> ValueKind:
    return "bool" if data_type == DataType.BITS else "text" if data_type == DataType.STRING else "number"


#: metric -> rule, from a device spec; None for a device without a known spec (nothing to check against)
Rules = dict[str, PointRule]


#: (metric, unit) -> (low, high): the pairs whose records :func:`check_record` judges by their number alone
NumberRules = dict[tuple[str, str], tuple[float | None, float | None]]


def number_rules(rules: Rules) -> NumberRules:
    """The metrics of ``rules`` that take a number ``v`` (number and bit points), under their unit, with their range.

    For a record the contract accepted that names one of these pairs, carries a number and lies in
    the time window, :func:`check_record` returns ``(n, u, ts, float(v), None, q | header_q)``, with
    ``Q_OUT_OF_RANGE`` added outside the range (or refuses a number too large for a double): the
    handler's fast path for the common reading relies on exactly this (``tests/test_ingest_plain.py``).
    """
    return {(metric, r.unit): (r.low, r.high) for metric, r in rules.items()
            if r.kind != "text" and "\x00" not in r.unit}


def rules_for(spec: DeviceSpec) -> Rules:
    """What a device's spec says about each metric it measures: its unit and physical range."""
    return {
        p.metric: PointRule(p.unit, *(p.range if p.range is not None else (None, None)), _kind(p.type))
        for p in spec.points
    }


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The times a reading may carry, in ms since the epoch: [now - max_past, now + max_future]."""

    earliest_ms: int
    latest_ms: int

    @classmethod
    def around(cls, max_past_days: int, max_future_s: int, now_s: float | None = None) -> TimeWindow:
        now_ms = int((time.time() if now_s is None else now_s) * 1000)
        return cls(now_ms - max_past_days * 86_400_000, now_ms + max_future_s * 1000)


def _iso(ms: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def check_record(rec: RecordFields, bt_ms: int, header_q: int, window: TimeWindow, rules: Rules | None) -> Reading:
    """The row for one record the contract accepted (its fields as a dict, see :data:`RecordFields`), or
    :class:`RowRejected`.  Called for every reading: written for speed, the common case (a number) first."""
    n = rec["n"]
    ts = bt_ms + rec.get("t", _T)
    if not window.earliest_ms <= ts <= window.latest_ms:
        raise RowRejected(ROW_TIME, f"{n} at {_iso(ts)} is outside [{_iso(window.earliest_ms)}, "
                                    f"{_iso(window.latest_ms)}]")
    u = rec.get("u", _U)
    vs = rec.get("vs", _VS)
    if "\x00" in u or (vs is not None and "\x00" in vs):
        raise RowRejected(ROW_INVALID, f"{n}: a NUL character, which PostgreSQL text cannot hold")
    v = rec.get("v", _V)
    vb = rec.get("vb", _VB)
    rule = None
    if rules is not None:
        rule = rules.get(n)
        if rule is None:
            raise RowRejected(ROW_METRIC, f"{n!r} is not a metric of the device's spec")
        if u != rule.unit:
            raise RowRejected(ROW_UNIT, f"{n} in {u!r}; the device's spec says {rule.unit!r}")
        _check_kind(n, v, vs, vb, rule.kind)
    quality = rec.get("q", _Q) | header_q
    if v is not None:
        try:
            value = float(v)
        except OverflowError:
            raise RowRejected(ROW_NAN, f"{n}: {v} does not fit a double") from None
        if not math.isfinite(value):  # the contract refuses NaN and inf; an int may still overflow to inf
            raise RowRejected(ROW_NAN, f"{n}: {v} is not a finite number")
        if rule is not None and (
            (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high)
        ):
            quality |= Q_OUT_OF_RANGE
        return n, u, ts, value, None, quality
    if vb is not None:
        return (n, u, ts, 1.0, "true", quality) if vb else (n, u, ts, 0.0, "false", quality)
    if vs is not None:
        return n, u, ts, None, vs, quality
    return n, u, ts, None, None, quality | Q_COMM_ERROR  # no value: the gap is explicit


def _check_kind(n: str, v: object, vs: str | None, vb: bool | None, kind: ValueKind) -> None:
    """A number point takes ``v``, a bit ``vb`` (or ``v``), a string point ``vs``; no value is a failed read."""
    if kind == "number":
        if vs is not None or vb is not None:
            raise RowRejected(ROW_NAN, f"{n}: {vs if vb is None else vb!r} where the device's spec gives a number")
    elif kind == "bool":
        if vs is not None:
            raise RowRejected(ROW_TYPE, f"{n}: {vs!r} where the device's spec gives a bit")
    elif v is not None or vb is not None:
        raise RowRejected(ROW_TYPE, f"{n}: {v if vb is None else vb!r} where the device's spec gives text")


def parse_record(raw: Any) -> RecordFields:
    """A raw record checked by the contract's model (its fields, defaults filled in), or :class:`RowRejected`."""
    try:
        return models.Record.model_validate(raw).__dict__
    except ValidationError as exc:
        errors = exc.errors()
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in errors)
        not_a_number = any((e["loc"] and e["loc"][0] == "v") or "finite" in e["msg"] for e in errors)
        raise RowRejected(ROW_NAN if not_a_number else ROW_INVALID, message) from None
