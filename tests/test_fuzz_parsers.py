"""Every parser that takes bytes from outside, fed thousands of generated inputs: only its own error, no hang.

Each parser documents one error type for bad input (``ContractError``, ``SpecError``, ``ConfigError``,
``BusError``, ``DriverError``, ``DecodeError``, a CSV import's row report or ``ValueError``); anything else
escaping is a crash that could take down the loop that called it (the intake, an ingest worker, a bus
thread).  Inputs are both shapeless (random bytes and text) and near misses (valid messages, specs and
configs with one part changed), which reach the deeper checks.  A per-example deadline catches hangs.

Found and fixed by this file: ``[[[[…`` a few thousand deep raised RecursionError out of the contract's
``parse``/``parse_body``, the ingest's batch scanner and telemetry parser, and the spec and gateway-config
YAML loaders (a node frame of 8 KiB is deep enough to wedge the intake, which redelivers what raised).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.ingest.batch_scan import scan_batch
from cloud.ingest.handler import parse_telemetry
from contract import models
from contract.telemetry import (
    MAX_BATCH_FRAME_BYTES,
    ContractError,
    encode_body,
    parse_body,
    peek,
    record,
    sign,
    telemetry,
    unframe,
    verify,
)
from device_specs import codec
from device_specs.registry import SpecError, builtin_specs, parse_spec
from device_specs.schema import Table
from edge_agent.bus.master import Master, read_reply_len
from edge_agent.bus.tcp import TcpTransport
from edge_agent.bus.transport import BusError, Reply
from edge_agent.config import ConfigError, parse_config
from firmware.drivers.errors import DriverError
from firmware.drivers.modbus_rtu import crc16_modbus, parse_reply

KEY = bytes(range(32))
#: a deadline far above any example's cost (the machine is shared), there to catch a hang, not to time anything
FAST = settings(max_examples=500, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)
#: byte strings that look like JSON more often than random bytes do
jsonish = st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b",", b":", b'"', b"1", b"-", b"e9", b"null", b"true",
                                    b'"v"', b'"k"', b'"tel"', b'"batch"', b"\\u0000", b"\xff", b" ", b"1e999"]),
                   max_size=60).map(b"".join)


def good_tel(seq: int = 7) -> dict:
    return telemetry("node-1", 1, seq, 1_764_480_000_000, [record("soil_moisture", "%", 23.5)], "fw/1", 35)


def mutate(obj: object, path: list[int], value: object) -> object:
    """``obj`` with the member that ``path`` picks (indices modulo each level's size) replaced by ``value``."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return value
    if isinstance(obj, dict):
        key = sorted(obj)[path[0] % len(obj)]
        return {**obj, key: mutate(obj[key], path[1:], value)}
    i = path[0] % len(obj)
    return [*obj[:i], mutate(obj[i], path[1:], value), *obj[i + 1 :]]


# -- the message contract -----------------------------------------------------------------------


@FAST
@given(st.binary(max_size=400) | jsonish)
def test_contract_parsers_raise_only_contract_errors_on_any_bytes(data: bytes) -> None:
    for parse in (parse_body, models.parse, lambda b: models.parse(b, expect="tel"), unframe, peek,
                  lambda b: verify(b, KEY), lambda b: models.parse_frame(b, max_bytes=MAX_BATCH_FRAME_BYTES)):
        try:
            parse(data)
        except ContractError as exc:
            assert exc.reason and str(exc)
    if not data:
        return  # an empty body is a frame too short to carry one (bad_frame, checked above)
    framed = sign(KEY, data)  # the same bytes as a correctly signed body: the body checks still hold
    assert verify(framed, KEY) == data
    try:
        models.parse(verify(framed, KEY))
    except ContractError as exc:
        assert exc.reason in {"bad_json", "bad_header", "bad_version", "bad_field"}


@settings(FAST, max_examples=200)
@given(st.sampled_from(["tel", "batch"]), st.lists(st.integers(0, 50), max_size=4), json_values)
def test_near_miss_bodies_are_parsed_or_refused_naming_a_field(kind: str, path: list[int], value: object) -> None:
    body = good_tel() if kind == "tel" else {"v": 1, "k": "batch", "gw": "gw-1", "tenant": "t-1", "ep": 1, "seq": 3,
                                             "sw": "edge/1", "sent": 1_764_480_000_000, "tel": [good_tel()],
                                             "nodes": []}
    data = encode_body(mutate(body, path, value))
    try:
        parsed = models.parse(data)
    except ContractError as exc:
        assert exc.reason in {"bad_json", "bad_header", "bad_version", "bad_field"}, exc
        return
    assert parsed.k in {"tel", "batch", "health", "birth", "will", "config", "receipt"}


@settings(FAST, max_examples=400)
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=4))
def test_any_change_to_a_signed_frame_is_refused(at: int, junk: bytes) -> None:
    frame = sign(KEY, encode_body(good_tel()))
    i = at % len(frame)
    changed = frame[:i] + junk + frame[i + 1 :]
    if changed == frame:
        return
    with pytest.raises(ContractError):
        verify(changed, KEY)


def test_deeply_nested_bodies_are_bad_json_not_a_recursion_error() -> None:
    deep = b"[" * 8000  # fits a node frame (8 KiB)
    for parse in (parse_body, models.parse):
        with pytest.raises(ContractError, match="nested too deeply"):
            parse(deep)
    body = verify(sign(KEY, deep), KEY)  # signed correctly: the body check still refuses it
    with pytest.raises(ContractError, match="bad_json"):
        models.parse(body)


# -- the ingest's own parsers (no database) -----------------------------------------------------


@settings(FAST, max_examples=250)
@given(st.binary(max_size=300) | jsonish | st.builds(lambda v: encode_body({"v": 1, "k": "batch", "tel": v}),
                                                      json_values))
def test_the_ingest_batch_scanner_and_telemetry_parser_raise_only_contract_errors(data: bytes) -> None:
    for parse in (scan_batch, parse_telemetry):
        try:
            parse(data)
        except ContractError as exc:
            assert exc.reason


# -- device specs ---------------------------------------------------------------------------------

SPEC_DATA = [yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
             for spec in sorted(builtin_specs().values(), key=lambda spec: len(spec.points))[:4]]  # the smallest


@settings(FAST, max_examples=300)
@given(st.text(max_size=300))
def test_spec_loader_raises_only_spec_errors_on_any_text(text: str) -> None:
    try:
        parse_spec(text, "fuzz.yaml")
    except SpecError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(FAST, max_examples=80)
@given(st.integers(0, len(SPEC_DATA) - 1), st.lists(st.integers(0, 60), min_size=1, max_size=4), json_values)
def test_near_miss_specs_load_or_name_the_file(which: int, path: list[int], value: object) -> None:
    text = yaml.safe_dump(mutate(SPEC_DATA[which], path, value), allow_unicode=True)
    try:
        parse_spec(text, "near.yaml")
    except SpecError as exc:
        assert str(exc).startswith("near.yaml")


@settings(FAST, max_examples=250)
@given(st.sampled_from(sorted(builtin_specs())), st.data())
def test_register_decoding_of_any_register_values_is_a_value_or_a_decode_error(model: str, data: st.DataObject) -> None:
    point = data.draw(st.sampled_from(builtin_specs()[model].points))
    registers = data.draw(st.lists(st.integers(-5, 70_000), max_size=6))
    try:
        codec.decode(point, registers)
    except codec.DecodeError as exc:
        assert point.metric in str(exc)


# -- gateway configuration ------------------------------------------------------------------------

GOOD_CONFIG = {
    "gateway": {"id": "gw-1", "tenant": "t-1", "key_hex": "00" * 32, "data_dir": "/tmp/ft-fuzz"},
    "uplink": {"broker": {"host": "127.0.0.1", "port": 1883}, "batch_max_items": 50},
    "outbox": {"max_bytes": 1 << 20},
    "buses": [{"id": "rs485", "kind": "rtu", "port": "/dev/ttyUSB0", "baud": 9600, "parity": "E",
               "devices": [{"id": "soil-1", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 60}]}],
}


@settings(FAST, max_examples=150)
@given(st.text(max_size=300) | st.lists(st.integers(0, 60), min_size=1, max_size=4).flatmap(
    lambda path: json_values.map(lambda v: yaml.safe_dump(mutate(GOOD_CONFIG, path, v), allow_unicode=True))))
def test_gateway_config_raises_only_config_errors(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


# -- Modbus responses -----------------------------------------------------------------------------


@FAST
@given(st.integers(1, 247), st.sampled_from([3, 4]), st.integers(1, 125), st.binary(max_size=260),
       st.booleans())
def test_the_node_driver_parse_reply_raises_only_driver_errors(slave: int, function: int, count: int, junk: bytes,
                                                               with_crc: bool) -> None:
    reply = junk + crc16_modbus(junk).to_bytes(2, "little") if with_crc else junk
    try:
        registers = parse_reply(reply, slave, function, count)
    except DriverError as exc:
        assert exc.reason
        return
    assert len(registers) == 2 * count


class _CannedTransport:
    """A transport that answers every request with the given response PDU (what a confused device might send)."""

    description = "canned"

    def __init__(self, pdu: bytes) -> None:
        self.pdu = pdu

    def transact(self, unit: int, pdu: bytes, reply_len: int | None, timeout_s: float) -> Reply:
        return Reply(self.pdu, 0.001)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@FAST
@given(st.sampled_from(list(Table)), st.integers(1, 60), st.binary(min_size=1, max_size=140))
def test_the_gateway_master_decodes_any_response_pdu_or_raises_a_bus_error(table: Table, count: int,
                                                                          pdu: bytes) -> None:
    master = Master(_CannedTransport(pdu), timeout_s=0.1)
    try:
        result = master.read(1, table, 0, count)
    except BusError:
        return
    assert len(result.values) == count and len(pdu) >= 2


@settings(FAST, max_examples=200)
@given(st.integers(1, 60), st.sampled_from([Table.HOLDING, Table.INPUT, Table.COIL]), st.binary(max_size=300),
       st.booleans())
def test_modbus_tcp_answers_of_any_bytes_end_in_a_reply_or_a_bus_error(count: int, table: Table, junk: bytes,
                                                                       good_header: bool) -> None:
    """The real TcpTransport over a socket pair: whatever the device sends back (then hangs up)."""
    ours, device = socket.socketpair()
    transport = TcpTransport("fuzz", 0)
    transport._sock = ours  # the transport's connection, already made (the socket pair has no address)
    if good_header:  # an MBAP header that matches the request, then junk: reaches the PDU checks
        junk = (1).to_bytes(2, "big") + bytes(2) + (len(junk) + 1).to_bytes(2, "big") + b"\x01" + junk
    answered = threading.Thread(target=lambda: (device.recv(300), device.sendall(junk), device.close()))
    answered.start()
    try:
        Master(transport, timeout_s=0.2).read(1, table, 0, count)
    except BusError:
        pass
    finally:
        answered.join(5)
        transport.close()
        device.close()
    assert read_reply_len(table, count) >= 3


# -- CSV farm import (real database, as the services' role) -----------------------------------------

csv_cells = st.one_of(st.text(max_size=12), st.sampled_from(
    ["", "F1", "rice", "maize", "owned", "-91", "90", "1e309", "nan", "inf", "-0", "+86 138", "\x00", '"', "\r\n",
     "x" * 300, "FR1", "coop-b"]))


@pytest.fixture(scope="module")
def import_db(module_app_db):
    import psycopg

    from cloud.store import registry

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(module_app_db.owner_url, autocommit=True) as conn:
        registry.register_tenant(conn, tenant, "Fuzz cooperative")
    return module_app_db.owner_url, tenant


@settings(max_examples=100, deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(["farm_id", "farm_name", "farmer_id", "farmer_name", "farmer_phone", "village", "tenure",
                        "latitude", "longitude", "area_ha", "crop"]).map(lambda cols: cols[: 2 + len(cols) // 2]),
       st.lists(st.lists(csv_cells, min_size=0, max_size=9), max_size=5), st.booleans(), st.binary(max_size=40))
def test_csv_farm_import_reports_rows_or_refuses_the_file(import_db, columns: list[str], rows: list[list[str]],
                                                          bom: bool, raw: bytes) -> None:
    import csv
    import io

    from cloud.auth.scopes import admin_principal
    from cloud.store import farm_import
    from tests.support.app_db import app_connect

    owner_url, tenant = import_db
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode() + raw
    actor = admin_principal().model_copy(update={"id": "cli:fuzz"})
    with app_connect(owner_url, tenant=tenant) as conn:
        try:
            report = farm_import.import_farms(conn, tenant, data, actor=actor, kek=os.urandom(32))
        except ValueError as exc:
            assert str(exc).startswith("row "), exc
            return
        finally:
            conn.rollback()
    assert report.rows >= report.failed_rows and all(str(e).startswith("row ") for e in report.errors)


def test_a_bom_and_crlf_header_is_read_like_any_other() -> None:
    # the import's own file-level checks, without a database: what the fuzz above reaches first
    from cloud.store.farm_import import decode

    assert decode(b"\xef\xbb\xbffarm_id,farm_name\r\n") == "farm_id,farm_name\r\n"
    with pytest.raises(ValueError, match="row 2: not UTF-8"):
        decode(b"farm_id,farm_name\n\xff\n")
