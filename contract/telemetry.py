"""FieldTrust message contract, wire level: build, sign, frame, unframe and verify messages.

This one file runs unchanged under CPython 3.11+ and MicroPython 1.2x (the firmware imports it;
there is no second copy).  It therefore uses only what both have: ``json``, ``hashlib``,
``binascii``, plain builtins, no ``typing``, no dataclasses.

The format is documented in ``docs/message-format.md``.  In short:

* A *body* is compact JSON, SenML-style records under a header::

    {"v":1,"k":"tel","dev":"node-0007","ep":1,"seq":42,"fw":"fw/0.1.0","bt":1764480000000,
     "sync":35,"q":0,"r":[{"n":"soil_moisture","u":"%","v":23.5,"t":0,"q":0}]}

  Times are integer milliseconds since the Unix epoch (``bt``) plus an integer millisecond
  offset per record (``t``): an ESP32 float has 24 bits of mantissa and cannot hold a
  timestamp.
* A *frame* is the body signed with HMAC-SHA256 and wrapped at fixed offsets::

    {"mac":"<64 lowercase hex>","body":<body bytes exactly as sent>}

  The verifier slices the body out by offset and checks the MAC over those exact bytes; it
  never re-serialises (a node's 32-bit floats print differently from CPython's doubles).
"""

import binascii
import hashlib
import json

try:  # CPython: the C implementation; MicroPython has no hmac module.
    import hmac as _hmac
except ImportError:  # pragma: no cover - exercised under MicroPython and by a test
    _hmac = None
if not hasattr(_hmac, "compare_digest"):  # micropython-lib's pure-Python hmac has no compare_digest
    _hmac = None

CONTRACT_VERSION = 1

# Message kinds ("k" in the body header).
KIND_TELEMETRY = "tel"
KIND_BATCH = "batch"
KIND_HEALTH = "health"
KIND_BIRTH = "birth"
KIND_WILL = "will"
KIND_CONFIG = "config"
KIND_RECEIPT = "receipt"
KINDS = (KIND_TELEMETRY, KIND_BATCH, KIND_HEALTH, KIND_BIRTH, KIND_WILL, KIND_CONFIG, KIND_RECEIPT)

# Quality flags: a bit mask, per record ("q") and per message header ("q").
Q_STALE = 1  # value not refreshed within its poll interval (repeated last value)
Q_CLOCK_UNSYNCED = 2  # sampling clock was not synchronised when the value was stamped
Q_OUT_OF_RANGE = 4  # outside the physical range of the device spec (kept, flagged)
Q_COMM_ERROR = 8  # the read failed; the record carries no value
Q_CALIBRATION_MISSING = 16  # raw value, calibration not applied
QUALITY_NAMES = (
    (Q_STALE, "stale"),
    (Q_CLOCK_UNSYNCED, "clock_unsynced"),
    (Q_OUT_OF_RANGE, "out_of_range"),
    (Q_COMM_ERROR, "comm_error"),
    (Q_CALIBRATION_MISSING, "calibration_missing"),
)

MAC_HEX_LEN = 64
FRAME_PREFIX = b'{"mac":"'
FRAME_MIDDLE = b'","body":'
FRAME_SUFFIX = b"}"
BODY_OFFSET = len(FRAME_PREFIX) + MAC_HEX_LEN + len(FRAME_MIDDLE)  # 81

# Upper bounds a receiver enforces before parsing anything.
MAX_NODE_FRAME_BYTES = 8192
MAX_BATCH_FRAME_BYTES = 1024 * 1024

_BLOCK = 64  # SHA-256 block size


class ContractError(ValueError):
    """A message does not follow the contract.  ``reason`` is a short machine-readable code."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))  # MicroPython has no ValueError.__init__
        self.reason = reason
        self.detail = detail


def _sha256(data):
    return hashlib.sha256(data).digest()


def _hmac_sha256_portable(key, msg):
    """RFC 2104 HMAC over SHA-256, for runtimes without the ``hmac`` module."""
    if len(key) > _BLOCK:
        key = _sha256(key)
    key = key + b"\x00" * (_BLOCK - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256 of ``msg`` under ``key`` (both bytes)."""
    if _hmac is not None:
        return _hmac.new(key, msg, hashlib.sha256).digest()
    return _hmac_sha256_portable(key, msg)


def _hex(data):
    return binascii.hexlify(data).decode()


def equal_constant_time(a, b):
    """Compare two byte strings without an early exit on the first difference."""
    if _hmac is not None:
        return _hmac.compare_digest(a, b)
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):  # MicroPython's zip() takes no strict= keyword
        diff |= a[i] ^ b[i]
    return diff == 0


def digest(body):
    """SHA-256 hex digest of body bytes: the identity of a message's content for duplicates."""
    return _hex(_sha256(body))


def encode_body(obj):
    """Serialise a body to compact JSON bytes.  Sign and send these bytes; never re-encode."""
    try:
        text = json.dumps(obj, separators=(",", ":"))
    except TypeError:  # MicroPython before 1.21 has no separators argument
        text = json.dumps(obj)
    return text.encode()


def sign(key, body):
    """Return the signed frame for ``body`` (bytes) under the device ``key`` (bytes)."""
    mac = _hex(hmac_sha256(key, body)).encode()
    return FRAME_PREFIX + mac + FRAME_MIDDLE + body + FRAME_SUFFIX


def unframe(frame, max_bytes=MAX_NODE_FRAME_BYTES):
    """Split a frame into ``(mac_hex_bytes, body_bytes)`` without trusting it.

    Raises ContractError with reason ``oversized`` or ``bad_frame``.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ContractError("bad_frame", "frame must be bytes")
    frame = bytes(frame)
    if len(frame) > max_bytes:
        raise ContractError("oversized", "%d bytes > limit %d" % (len(frame), max_bytes))
    if len(frame) < BODY_OFFSET + 2:
        raise ContractError("bad_frame", "too short (%d bytes)" % len(frame))
    if frame[: len(FRAME_PREFIX)] != FRAME_PREFIX:
        raise ContractError("bad_frame", 'does not start with {"mac":"')
    mac = frame[len(FRAME_PREFIX) : len(FRAME_PREFIX) + MAC_HEX_LEN]
    if frame[len(FRAME_PREFIX) + MAC_HEX_LEN : BODY_OFFSET] != FRAME_MIDDLE:
        raise ContractError("bad_frame", "mac is not 64 hex characters followed by body")
    for c in mac:
        if not (48 <= c <= 57 or 97 <= c <= 102):  # 0-9 a-f
            raise ContractError("bad_frame", "mac is not lowercase hex")
    if frame[-1:] != FRAME_SUFFIX:
        raise ContractError("bad_frame", "does not end with }")
    return mac, frame[BODY_OFFSET:-1]


def parse_body(body):
    """Parse body bytes into a dict and check the header every message kind shares."""
    error = None
    try:
        obj = json.loads(body.decode())
    except (ValueError, UnicodeError) as exc:  # MicroPython raises ValueError for bad JSON
        error = str(exc) or "not valid JSON"
    except RuntimeError:  # nested too deeply: CPython's RecursionError, MicroPython's RuntimeError
        error = "nested too deeply"
    if error is not None:
        raise ContractError("bad_json", error)
    if not isinstance(obj, dict):
        raise ContractError("bad_header", "body is not a JSON object")
    v = obj.get("v")
    if v != CONTRACT_VERSION:
        raise ContractError("bad_version", "v=%r, expected %d" % (v, CONTRACT_VERSION))
    if obj.get("k") not in KINDS:
        raise ContractError("bad_header", "unknown kind k=%r" % (obj.get("k"),))
    return obj


def verify(frame, key, max_bytes=MAX_NODE_FRAME_BYTES):
    """Check a frame's MAC under ``key``; return the exact body bytes.  Raises ContractError."""
    mac, body = unframe(frame, max_bytes)
    expected = _hex(hmac_sha256(key, body)).encode()
    if not equal_constant_time(mac, expected):
        raise ContractError("bad_signature", "HMAC does not match the body")
    return body


def peek(frame, max_bytes=MAX_NODE_FRAME_BYTES):
    """Parse a frame's body *without* checking its MAC (to find which key verifies it)."""
    _mac, body = unframe(frame, max_bytes)
    return parse_body(body), body


def message_key(body_obj):
    """The identity of a message: (device id, key epoch, sequence number).

    Two messages with the same key and identical body bytes are duplicates (store once); the
    same key with different bytes is a conflict (forgery or a bug: dead-letter and alarm).
    """
    return (body_obj.get("dev") or body_obj.get("gw"), body_obj.get("ep"), body_obj.get("seq"))


DUPLICATE = "duplicate"
CONFLICT = "conflict"
NEW = "new"


def classify(known_digest, new_digest):
    """Apply the duplicate rule: ``known_digest`` is what was stored under the same key."""
    if known_digest is None:
        return NEW
    if known_digest == new_digest:
        return DUPLICATE
    return CONFLICT


def record(name, unit, value, t_ms=0, quality=0):
    """One SenML-style record.  ``value`` is a number, a bool (vb) or a string (vs)."""
    r = {"n": name, "u": unit, "t": t_ms, "q": quality}
    if value is None:
        r["q"] = quality | Q_COMM_ERROR
    elif isinstance(value, bool):
        r["vb"] = value
    elif isinstance(value, str):
        r["vs"] = value
    else:
        r["v"] = value
    return r


def telemetry(dev, ep, seq, bt_ms, records, sw, sync_age_s=-1, quality=0):
    """A telemetry body: readings of one device sampled around ``bt_ms``.

    ``sync_age_s`` is the seconds since the clock was last synchronised (-1: never); when the
    clock is not synchronised the header carries Q_CLOCK_UNSYNCED.
    """
    if sync_age_s < 0:
        quality |= Q_CLOCK_UNSYNCED
    return {
        "v": CONTRACT_VERSION,
        "k": KIND_TELEMETRY,
        "dev": dev,
        "ep": ep,
        "seq": seq,
        "fw": sw,
        "bt": bt_ms,
        "sync": sync_age_s,
        "q": quality,
        "r": records,
    }


def quality_names(mask):
    """Names of the flags set in a quality mask, for people."""
    return [name for bit, name in QUALITY_NAMES if mask & bit]
