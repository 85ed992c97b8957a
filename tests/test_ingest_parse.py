"""Pure parts of the ingest: finding telemetry bytes in a batch, record checks, broker URLs (no services)."""

from __future__ import annotations

import json

import pytest

from cloud.ingest.batch_scan import scan_batch, tel_spans
from cloud.ingest.session import BrokerUrl
from cloud.ingest.validate import (
    ROW_INVALID,
    ROW_METRIC,
    ROW_NAN,
    ROW_TIME,
    ROW_TYPE,
    ROW_UNIT,
    PointRule,
    RowRejected,
    TimeWindow,
    check_record,
    parse_record,
)
from contract import models
from contract.telemetry import Q_CLOCK_UNSYNCED, Q_OUT_OF_RANGE, ContractError, encode_body, record, telemetry

NOW_MS = 1_795_000_000_000


def tel(dev: str, seq: int, value: object = 1.5) -> bytes:
    return encode_body(telemetry(dev, 1, seq, NOW_MS, [record("soil_moisture", "%", value)], "edge/t", 0))


def batch_body(tel_bodies: list[bytes], nodes: list[str] = ()) -> bytes:  # type: ignore[assignment]
    header = encode_body({"v": 1, "k": "batch", "gw": "gw", "tenant": "t", "ep": 1, "seq": 0, "sw": "s", "sent": 1})
    return header[:-1] + b',"tel":[' + b",".join(tel_bodies) + b'],"nodes":' + json.dumps(nodes).encode() + b"}"


def test_spans_are_the_exact_bytes_the_gateway_spliced_in() -> None:
    bodies = [tel("a", 0), tel("b", 1, "caf\u00e9 {\"v\":1,\"k\":\"tel\",}"), tel("c", 2, True)]
    node = encode_body(telemetry("n", 1, 0, NOW_MS, [record("x", "", 1)], "fw", 1)).decode()
    body = batch_body(bodies, [node])  # a node frame's text holds the marker too, escaped
    batch = models.Batch.model_validate_json(body)
    assert tel_spans(body, len(batch.tel)) == bodies
    assert [raw for _, raw in scan_batch(body).tel] == bodies
    assert tel_spans(batch_body([]), 0) == []
    utf8 = [tel("a", 0), tel("b", 1, "caf\u00e9").replace(b"\\u00e9", "\u00e9".encode())]  # raw UTF-8, last
    body = batch_body(utf8)
    assert tel_spans(body, 2) is None and [raw for _, raw in scan_batch(body).tel] == utf8


def test_another_layout_falls_back_to_the_scanner_with_the_same_exactness() -> None:
    spaced = [b'{ "v": 1, "k": "tel", "dev": "a", "ep": 1, "seq": 0, "fw": "f", "bt": 1, "sync": 0,'
              b' "r": [{"n": "m", "v": 2.50}] }', tel("b", 1)]
    body = batch_body(spaced).replace(b'"tel":[', b'"tel" : [ ').replace(b'],"nodes"', b' ] ,"nodes"')
    assert tel_spans(body, 2) is None
    assert [raw for _, raw in scan_batch(body).tel] == spaced


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "bad_header"), (b"[1]", "bad_header"), (b'{"tel":[1,', "bad_json"), (b'{"a":1,"a":2}', "bad_json"),
    (b'{"a":1} {}', "bad_json"), (b'\xff{}', "bad_json"),
])
def test_the_scanner_refuses_what_is_not_one_json_object(body: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        scan_batch(body)
    assert err.value.reason == reason


RULES = {"soil_moisture": PointRule("%", 0, 100), "pump": PointRule("", None, None, "bool"),
         "label": PointRule("", None, None, "text")}
WINDOW = TimeWindow(NOW_MS - 86_400_000, NOW_MS + 600_000)


def check(rec: dict, bt: int = NOW_MS, q: int = 0):
    return check_record(parse_record(rec), bt, q, WINDOW, RULES)


def test_a_good_record_becomes_a_row_and_out_of_range_is_flagged_not_dropped() -> None:
    assert check({"n": "soil_moisture", "u": "%", "v": 20, "t": 5}, q=Q_CLOCK_UNSYNCED) == (
        "soil_moisture", "%", NOW_MS + 5, 20.0, None, Q_CLOCK_UNSYNCED)
    assert check({"n": "soil_moisture", "u": "%", "v": 120.5})[5] == Q_OUT_OF_RANGE
    assert check({"n": "pump", "vb": True})[3:5] == (1.0, "true")
    assert check({"n": "label", "vs": "ok"})[3:5] == (None, "ok")


@pytest.mark.parametrize(("rec", "bt", "reason"), [
    ({"n": "soil_moisture", "u": "%", "v": 1}, 5_000, ROW_TIME),  # 1970
    ({"n": "soil_moisture", "u": "%", "v": 1}, 4_070_908_800_000, ROW_TIME),  # 2099
    ({"n": "soil_moisture", "u": "Cel", "v": 1}, NOW_MS, ROW_UNIT),
    ({"n": "wind", "u": "m/s", "v": 1}, NOW_MS, ROW_METRIC),
    ({"n": "soil_moisture", "u": "%", "vs": "wet"}, NOW_MS, ROW_NAN),
    ({"n": "soil_moisture", "u": "%", "v": 10**400}, NOW_MS, ROW_NAN),
    ({"n": "label", "v": 3}, NOW_MS, ROW_TYPE),
    ({"n": "label", "vs": "a\x00b"}, NOW_MS, ROW_INVALID),
])
def test_bad_records_are_refused_by_reason(rec: dict, bt: int, reason: str) -> None:
    with pytest.raises(RowRejected) as err:
        check(rec, bt)
    assert err.value.reason == reason


@pytest.mark.parametrize("raw", [{"n": "m", "v": float("nan")}, {"n": "m", "v": "1.5"}, {"n": "m", "v": True}])
def test_values_the_contract_refuses_are_not_a_number(raw: dict) -> None:
    with pytest.raises(RowRejected) as err:
        parse_record(raw)
    assert err.value.reason == ROW_NAN


def test_broker_urls() -> None:
    url = BrokerUrl.parse("mqtts://ingest:p%40ss@broker.example:8884?protocol=3.1.1")
    assert (url.host, url.port, url.username, url.password, url.tls, url.protocol) == (
        "broker.example", 8884, "ingest", "p@ss", True, "3.1.1")
    assert url.uplink_filter("g") == "ft/v1/+/gw/+/up"
    assert BrokerUrl.parse("mqtt://127.0.0.1").uplink_filter("ingest") == "$share/ingest/ft/v1/+/gw/+/up"
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h?protocol=4", "mqtt://h?x=1"):
        with pytest.raises(ValueError, match="FIELDTRUST_MQTT_URL"):
            BrokerUrl.parse(bad)
