"""The ingest's fast paths enforce exactly the contract's rules: shown on generated bodies, valid and not.

* :mod:`cloud.ingest.plain_models` (TypedDicts derived from ``contract.models``, plus the record
  validator's rule) accepts a body exactly when ``contract.models`` does, with the same values;
* the handler's fast path for numeric readings gives, record by record, what
  :func:`cloud.ingest.validate.check_record` gives (the row, or the dead letter's reason).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support.ingest import BUS_SPEC, KEK, Site, batch_frame, register_site

from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler
from cloud.ingest.plain_models import BATCH, RECORD_DEFAULTS, TELEMETRY, TELEMETRY_Q_DEFAULT, records_hold
from cloud.ingest.validate import RowRejected, TimeWindow, check_record, parse_record, rules_for
from cloud.store import db, writes
from contract import models, topics
from device_specs.registry import get_spec

NOW_MS = 1_795_000_000_000
SPEC_POINTS = [(p.metric, p.unit) for p in get_spec(BUS_SPEC).points]

# Values that straddle each rule: right and wrong types, bounds, NaN and infinities, NUL characters.
ints = st.one_of(st.integers(-3, 3), st.sampled_from([2**31 - 1, 2**31, 2**40 - 1, 2**40, -(2**40), -(2**40) - 1,
                                                      2**53 - 1, 2**53, 2**63 - 1, 2**63, 10**400]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 120.5]))
texts = st.one_of(st.sampled_from(["", "%", "Cel", "soil_moisture", "x y", "a\x00b", "é", "A" * 65, "a" * 64,
                                   "7up", "_x"]), st.text(max_size=20))
anything = st.one_of(ints, floats, texts, st.booleans(), st.none(), st.just([]), st.just({}))


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """``valid`` as it is (three times in four), or with one key set to anything, left out or added."""
    out = dict(valid)
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from([*keys, "extra", "V"]))
        if key in out and draw(st.booleans()):
            del out[key]
        else:
            out[key] = draw(anything)
    return out


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    metric, unit = draw(st.sampled_from([*SPEC_POINTS, ("wind_speed", "m/s")]))
    rec: dict[str, Any] = {"n": metric}
    u = draw(st.sampled_from([unit, unit, unit, None, "degF", "%\x00"]))  # None: left out
    if u is not None:
        rec["u"] = u
    kind = draw(st.sampled_from(["v", "v", "v", "v", "vs", "vb", None]))
    if kind == "v":
        rec["v"] = draw(st.one_of(st.floats(-50, 25_000), st.integers(-50, 25_000), st.none(),
                                  st.sampled_from([10**400, 2**1023, 1e308, -0.0, math.nan, math.inf, -math.inf])))
    elif kind == "vs":
        rec["vs"] = draw(texts)
    elif kind == "vb":
        rec["vb"] = draw(st.booleans())
    if draw(st.booleans()):
        rec["t"] = draw(st.sampled_from([0, 5, -5, 86_400_000, -(40 * 86_400_000)]))
    if draw(st.booleans()):
        rec["q"] = draw(st.sampled_from([0, 1, 4, 2**16 - 1]))
    return draw(mutated(rec, ["n", "u", "v", "vs", "vb", "t", "q"]))


@st.composite
def telemetry_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = {"v": 1, "k": "tel", "dev": draw(st.sampled_from(["soil-1", "n.2-x_Y"])), "ep": draw(st.integers(0, 5)),
            "seq": draw(st.integers(0, 10**6)), "fw": "fw/1", "bt": NOW_MS, "sync": draw(st.integers(-1, 100)),
            "q": draw(st.sampled_from([0, 2, 8])), "r": draw(st.lists(records(), min_size=1, max_size=3))}
    return draw(mutated(body, list(body)))


@st.composite
def batch_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = {"v": 1, "k": "batch", "gw": "gw-1", "tenant": "t-1", "ep": draw(st.integers(0, 5)),
            "seq": draw(st.integers(0, 10**6)), "sw": "edge/1", "sent": NOW_MS,
            "tel": draw(st.lists(telemetry_bodies(), max_size=2)),
            "nodes": draw(st.lists(st.sampled_from(["frame-a", "frame-b"]), max_size=2))}
    return draw(mutated(body, list(body)))


def as_json(value: Any) -> str:
    """Types matter (1 is not 1.0, True is not 1): compare values by their JSON text."""
    return json.dumps(value, sort_keys=True)


def filled_record(rec: dict[str, Any]) -> dict[str, Any]:
    return {**RECORD_DEFAULTS, **rec}


def filled_telemetry(tel: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "q": TELEMETRY_Q_DEFAULT, **tel, "r": [filled_record(r) for r in tel["r"]]}


@settings(max_examples=400, deadline=None)
@given(telemetry_bodies())
def test_a_telemetry_body_passes_the_plain_path_exactly_when_it_passes_the_contract(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()  # NaN and Infinity included, as a sender could write them
    try:
        model: models.Telemetry | None = models.Telemetry.model_validate_json(raw)
    except ValidationError:
        model = None
    try:
        plain = TELEMETRY.validate_json(raw)
    except ValidationError:
        plain = None
    accepted = plain is not None and records_hold(plain["r"])
    assert accepted == (model is not None), body
    if model is not None and plain is not None:
        assert as_json(filled_telemetry(plain)) == as_json(model.model_dump())


@settings(max_examples=300, deadline=None)
@given(batch_bodies())
def test_a_batch_passes_the_plain_path_exactly_when_it_passes_the_contract(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    try:
        model: models.Batch | None = models.Batch.model_validate_json(raw)
    except ValidationError:
        model = None
    try:
        plain = BATCH.validate_json(raw)
    except ValidationError:
        plain = None
    accepted = plain is not None and all(records_hold(t["r"]) for t in plain.get("tel", ()))
    assert accepted == (model is not None), body
    if model is not None and plain is not None:
        filled = {"v": 1, "nodes": [], **plain, "tel": [filled_telemetry(t) for t in plain.get("tel", [])]}
        assert as_json(filled) == as_json(model.model_dump())


@pytest.fixture
def site(fresh_db: str) -> Site:
    return register_site(fresh_db)


@pytest.fixture
def handler(site: Site):
    """One handler for every generated example (it only reads the registry; nothing is committed)."""
    with db.connect(site.url, autocommit=True) as conn:
        yield Handler(Directory(conn, KEK), max_past_days=30, max_future_s=600, clock=lambda: NOW_MS / 1000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(records(), min_size=1, max_size=6), st.sampled_from([0, 2]))
def test_each_reading_is_what_check_record_makes_of_it(site: Site, handler: Handler, recs: list[dict[str, Any]],
                                                        header_q: int) -> None:
    dev = site.bus[0]
    body = json.dumps({"v": 1, "k": "tel", "dev": dev, "ep": 1, "seq": 7, "fw": "fw/1", "bt": NOW_MS, "sync": 1,
                       "q": header_q, "r": recs}).encode()
    out = handler.prepare(topics.gateway(site.tenant, site.gw, "up"), batch_frame(site, [body]))
    assert out.batch is not None
    if len(out.items) == 0:  # the body itself was refused (a record that is not an object, say): not our concern
        assert [d.reason for d in out.dead_letters] in (["bad_telemetry"], ["bad_json"])
        return
    item = out.items[0]
    window = TimeWindow.around(30, 600, NOW_MS / 1000)
    rules = rules_for(get_spec(BUS_SPEC))
    expected_rows, expected_reasons = [], []
    for rec in recs:
        try:
            metric, unit, ts, value, text, quality = check_record(parse_record(rec), NOW_MS, header_q, window, rules)
        except RowRejected as exc:
            expected_reasons.append(exc.reason)
            continue
        metric_id = handler.directory.metric_ids[(metric, unit)]
        expected_rows.append((site.tenant, dev, metric_id, writes.pg_time(ts), value, text, quality, 2, 1, 7))
    assert as_json(item.rows) == as_json(expected_rows)
    assert [d.reason for d in item.rejects] == expected_reasons
