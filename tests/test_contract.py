"""The message contract: test vectors, framing, signatures, the duplicate rule, strict bodies."""

from __future__ import annotations

import json

import pytest

from contract import models, telemetry, topics
from contract.telemetry import ContractError

# Test vector 1 (also in docs/message-format.md).
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
BODY = (
    b'{"v":1,"k":"tel","dev":"node-0001","ep":1,"seq":42,"fw":"fw/0.1.0","bt":1764480000000,'
    b'"sync":35,"q":0,"r":[{"n":"soil_moisture","u":"%","v":23.5,"t":0,"q":0},'
    b'{"n":"soil_temperature","u":"Cel","v":18.25,"t":120,"q":0}]}'
)
MAC = b"6b4599726091bcb09e754c3f401a32a156d485820ba759fae5af94d1040f892b"
# Test vector 2: the same reading printed as a 32-bit float prints it (23.50000): other bytes, other MAC.
BODY_F32 = BODY.replace(b'"v":23.5,', b'"v":23.50000,')
MAC_F32 = b"1eca3769fae6a23768746f32dd4689a16c5adddbdf37374c6c2c8a4075c54769"


def test_vectors():
    assert telemetry.sign(KEY, BODY) == b'{"mac":"' + MAC + b'","body":' + BODY + b"}"
    assert telemetry.sign(KEY, BODY_F32)[8:72] == MAC_F32
    # RFC-style check of the primitive itself
    assert telemetry.hmac_sha256(b"key", b"The quick brown fox jumps over the lazy dog").hex() == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 65, 200])
def test_portable_hmac_matches_stdlib(key_len):
    key = bytes(range(256))[:key_len]
    assert telemetry._hmac_sha256_portable(key, BODY) == telemetry.hmac_sha256(key, BODY)


def test_verify_returns_exact_body_bytes():
    frame = telemetry.sign(KEY, BODY_F32)
    assert telemetry.verify(frame, KEY) == BODY_F32  # never a re-serialisation


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "bad_frame"),
        (b"not json at all" * 10, "bad_frame"),
        (telemetry.sign(KEY, BODY)[:-1], "bad_signature"),
        (telemetry.sign(KEY, BODY)[:-2], "bad_frame"),
        (telemetry.sign(KEY, BODY).replace(b'"mac":"6b', b'"mac":"6B'), "bad_frame"),
        (telemetry.sign(KEY, BODY).replace(b"23.5", b"99.5"), "bad_signature"),
        (telemetry.sign(b"another key of the same size!!!!", BODY), "bad_signature"),
        (b"x" * (telemetry.MAX_NODE_FRAME_BYTES + 1), "oversized"),
    ],
)
def test_bad_frames_are_clear_errors(frame, reason):
    with pytest.raises(ContractError) as info:
        telemetry.verify(frame, KEY)
    assert info.value.reason == reason


def test_duplicate_rule():
    d1 = telemetry.digest(BODY)
    assert telemetry.classify(None, d1) == telemetry.NEW
    assert telemetry.classify(d1, telemetry.digest(BODY)) == telemetry.DUPLICATE
    assert telemetry.classify(d1, telemetry.digest(BODY_F32)) == telemetry.CONFLICT
    obj = json.loads(BODY)
    assert telemetry.message_key(obj) == ("node-0001", 1, 42)


def test_builders_round_trip_through_models():
    recs = [
        telemetry.record("soil_moisture", "%", 23.5),
        telemetry.record("pump_on", "", True, t_ms=5),
        telemetry.record("firmware_tag", "", "v1"),
        telemetry.record("soil_ec", "uS/cm", None),
    ]
    body = telemetry.encode_body(telemetry.telemetry("node-9", 2, 7, 1764480000000, recs, "fw/1", sync_age_s=-1))
    msg = models.parse(body, expect="tel")
    assert isinstance(msg, models.Telemetry)
    assert msg.q & telemetry.Q_CLOCK_UNSYNCED
    assert [r.value for r in msg.r] == [23.5, True, "v1", None]
    assert msg.r[3].q & telemetry.Q_COMM_ERROR
    assert telemetry.quality_names(msg.q) == ["clock_unsynced"]


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda o: o.update(seq=-1), "seq"),
        (lambda o: o.update(dev="bad/id"), "dev"),
        (lambda o: o.update(r=[]), "r"),
        (lambda o: o["r"][0].update(n="Bad Name"), "r.0.n"),
        (lambda o: o["r"][0].update(v="12"), "r.0.v"),
        (lambda o: o["r"][0].update(vs="x"), "r.0"),
        (lambda o: o.update(extra=1), "extra"),
        (lambda o: o.update(bt=1.5), "bt"),
    ],
)
def test_bad_bodies_name_the_field(mutate, where):
    obj = json.loads(BODY)
    mutate(obj)
    with pytest.raises(ContractError) as info:
        models.parse(json.dumps(obj).encode())
    assert info.value.reason == "bad_field"
    assert str(info.value).startswith(f"bad_field: {where}")


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"v":2,"k":"tel"}', b'{"v":1,"k":"nope"}', b"\xff\xfe"])
def test_bad_json_and_headers(raw):
    with pytest.raises(ContractError):
        models.parse(raw)


def test_batch_embeds_node_frames_verbatim():
    node_frame = telemetry.sign(KEY, BODY_F32)
    batch = {
        "v": 1, "k": "batch", "gw": "gw-1", "tenant": "demo", "ep": 1, "seq": 3, "sw": "edge/0.1.0",
        "sent": 1764480000000, "tel": [json.loads(BODY)], "nodes": [node_frame.decode()],
    }
    frame = telemetry.sign(b"gateway-key-0123456789", telemetry.encode_body(batch))
    body = telemetry.verify(frame, b"gateway-key-0123456789", max_bytes=telemetry.MAX_BATCH_FRAME_BYTES)
    parsed = models.parse(body, expect="batch")
    assert parsed.batch_id == "gw-1:1:3"
    assert parsed.node_frames() == [node_frame]
    assert telemetry.verify(parsed.node_frames()[0], KEY) == BODY_F32


def test_topics():
    assert topics.gateway("demo", "gw-1", "up") == "ft/v1/demo/gw/gw-1/up"
    assert topics.parse_gateway_topic("ft/v1/demo/gw/gw-1/receipt") == ("demo", "gw-1", "receipt")
    assert topics.node("n-7", "up") == "ft/v1/node/n-7/up"
    assert topics.parse_node_topic("ft/v1/node/n-7/up") == ("n-7", "up")
    assert topics.gateway_uplink_filter() == "$share/ingest/ft/v1/+/gw/+/up"
    for bad in ("", "a/b", "+", "#", "x" * 65):
        assert not topics.valid_id(bad)
        with pytest.raises(ValueError):
            topics.node(bad, "up")
    with pytest.raises(ValueError):
        topics.parse_node_topic("ft/v1/node/+/up")
