"""Modbus RTU master on the node's RS485 port: read holding/input registers, decode them with a compact spec.

The node polls one device per wake with the compact form of its device spec
(``device_specs/compact.py``): one read request (function 0x03 or 0x04) per register block, each
reply checked (length, CRC-16/MODBUS, slave, function, byte count) and its points decoded exactly
as the gateway's ``device_specs.codec`` does: byte/word order, ``raw * scale + offset`` (an exact
integer when all three are integers, else rounded to 10 decimals), NaN and infinity refused, a
value outside the spec's range kept and flagged ``Q_OUT_OF_RANGE``.

One transaction on the half-duplex line:

* drop stale input (a late answer to an earlier request), send the request (the port raises
  DE/RE for it and lowers it once the last bit has left);
* wait up to the spec's response timeout for the first 5 bytes, which every reply has (an
  exception reply is exactly 5); the rest of a normal reply must follow within its line time
  plus the 3.5-character inter-frame time;
* then the line must stay silent for 3.5 characters: that ends the frame (longer frames are
  refused) and is the gap Modbus requires before the next request, kept after a bad reply too.

Port interface (``board.rs485(...)``, in ``firmware/hal.py`` and ``firmware/hal_sim.py``)::

    send(frame)               DE/RE high, write, wait until the last bit has left the UART, DE/RE low
    recv(n, timeout_ms)       up to n bytes, returning as soon as n have come or timeout_ms has passed
    discard()                 drop whatever input is waiting
    char_us                   microseconds one character occupies the line

Every failure is a ``DriverError``: ``no_reply``, ``short_reply``, ``bad_length``, ``bad_crc``,
``wrong_slave``, ``wrong_function``, or the Modbus exception's name (``illegal_data_address``...).
"""

import math
import struct

from contract.telemetry import Q_COMM_ERROR, Q_OUT_OF_RANGE
from firmware.crc import crc16_modbus
from firmware.drivers.errors import DriverError

FORMAT_VERSION = 1
READ_FUNCTIONS = (3, 4)
MAX_REGISTERS = 125  # per read, Modbus limit for functions 3 and 4
MIN_REPLY = 5  # slave, function, byte count (or exception code), CRC low, CRC high
MIN_GAP_US = 1750  # the inter-frame time is fixed at 1.75 ms above 19200 baud
ROUND_BELOW = 1e15  # round(x, 10) multiplies by 1e10 first: an ESP32's float32 overflows above ~3e28
EXCEPTIONS = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed",
}
# type code -> (struct format, registers); "bit" is one bit of one register
TYPES = {
    "u16": (">H", 1),
    "s16": (">h", 1),
    "u32": (">I", 2),
    "s32": (">i", 2),
    "u64": (">Q", 4),
    "s64": (">q", 4),
    "f32": (">f", 2),
    "f64": (">d", 4),
    "bit": (">H", 1),
}
ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")


def frame_gap_ms(char_us):
    """The 3.5-character inter-frame time in whole milliseconds (1.75 ms above 19200 baud), rounded up."""
    return (max(MIN_GAP_US, 35 * char_us // 10) + 999) // 1000


def read_request(slave, function, address, count):
    """The 8-byte RTU frame reading ``count`` registers from ``address`` (function 3 holding, 4 input)."""
    if not 1 <= slave <= 247:
        raise ValueError("slave %r is not a unit id 1..247" % (slave,))
    if function not in READ_FUNCTIONS:
        raise ValueError("function %r: the node reads with 3 (holding) or 4 (input)" % (function,))
    if not 1 <= count <= MAX_REGISTERS or not 0 <= address <= 65536 - count:
        raise ValueError("%r registers from %r: count must be 1..125 within 0..65535" % (count, address))
    frame = bytearray(8)
    struct.pack_into(">BBHH", frame, 0, slave, function, address, count)
    crc = crc16_modbus(frame[:6])
    frame[6] = crc & 0xFF  # the CRC goes low byte first
    frame[7] = crc >> 8
    return bytes(frame)


def parse_reply(reply, slave, function, count):
    """The register bytes of the reply to a read of ``count`` registers; DriverError naming what is wrong."""
    n = len(reply)
    expected = MIN_REPLY if n >= 2 and reply[1] & 0x80 else MIN_REPLY + 2 * count
    if n < expected:
        raise DriverError("short_reply", "%d of %d bytes from slave %d" % (n, expected, slave))
    if n > expected:
        raise DriverError("bad_length", "%d bytes, a reply to %d registers has %d" % (n, count, expected))
    crc = crc16_modbus(reply[:-2])
    if reply[-2] != crc & 0xFF or reply[-1] != crc >> 8:
        raise DriverError("bad_crc", "CRC %02x%02x, computed %04x" % (reply[-1], reply[-2], crc))
    if reply[0] != slave:
        raise DriverError("wrong_slave", "reply from slave %d, asked %d" % (reply[0], slave))
    if reply[1] & 0x7F != function:
        raise DriverError("wrong_function", "reply to function %d, asked %d" % (reply[1] & 0x7F, function))
    if reply[1] & 0x80:
        code = reply[2]
        raise DriverError(EXCEPTIONS.get(code, "exception_%d" % code), "slave %d function %d" % (slave, function))
    if reply[2] != 2 * count:
        raise DriverError("bad_length", "byte count %d, asked %d registers" % (reply[2], count))
    return reply[3:-2]


def transact(port, request, count, timeout_ms):
    """Send a read ``request`` for ``count`` registers and return the register bytes of its reply."""
    slave, function = request[0], request[1]
    gap_ms = frame_gap_ms(port.char_us)
    port.discard()
    port.send(request)
    reply = port.recv(MIN_REPLY, timeout_ms)
    if not reply:
        raise DriverError("no_reply", "slave %d silent for %d ms" % (slave, timeout_ms))
    if len(reply) == MIN_REPLY and not reply[1] & 0x80:
        rest = 2 * count
        reply += port.recv(rest, (rest * port.char_us + 999) // 1000 + gap_ms)
    extra = port.recv(1, gap_ms)  # the frame ends with 3.5 characters of silence, also before the next request
    if extra:
        reply += extra  # a frame longer than its function and count allow: refused by its length
    return parse_reply(reply, slave, function, count)


def _big_endian(data, at, width, order):
    """The value's bytes most significant first, from ``width`` registers at byte ``at`` in ``order``."""
    swap_words = order in ("CDAB", "DCBA")
    swap_bytes = order in ("BADC", "DCBA")
    out = bytearray(2 * width)
    for i in range(width):
        src = at + 2 * (width - 1 - i if swap_words else i)
        hi, lo = data[src], data[src + 1]
        if swap_bytes:
            hi, lo = lo, hi
        out[2 * i] = hi
        out[2 * i + 1] = lo
    return out


def decode_point(point, data):
    """``(metric, unit, value, flags)`` of one compact point from its block's register bytes."""
    name, unit, kind = point["n"], point.get("u", ""), point["t"]
    at = 2 * point["at"]
    fmt, width = TYPES[kind]
    if kind == "bit":
        return name, unit, bool(struct.unpack_from(fmt, data, at)[0] >> point.get("bit", 0) & 1), 0
    order = point.get("bo", "ABCD")
    if order == "ABCD":
        raw = struct.unpack_from(fmt, data, at)[0]
    else:
        raw = struct.unpack(fmt, _big_endian(data, at, width, order))[0]
    if isinstance(raw, float) and not math.isfinite(raw):
        return name, unit, None, Q_OUT_OF_RANGE  # as the gateway: no value, flagged
    scale, offset = point.get("s", 1), point.get("o", 0)
    value = raw * scale + offset
    if not (isinstance(raw, int) and isinstance(scale, int) and isinstance(offset, int)) and (
        -ROUND_BELOW < value < ROUND_BELOW
    ):
        value = round(value, 10)  # drops binary noise such as 23.400000000000002, as the gateway does
    limits = point.get("r")
    flags = Q_OUT_OF_RANGE if limits is not None and not limits[0] <= value <= limits[1] else 0
    return name, unit, value, flags


def check_spec(spec):
    """Refuse a compact spec this firmware cannot use, naming the key (settings are checked at boot)."""
    if spec.get("v") != FORMAT_VERSION:
        raise ValueError("modbus spec: format version %r, this firmware reads %d" % (spec.get("v"), FORMAT_VERSION))
    blocks = spec.get("b")
    if not blocks:
        raise ValueError("modbus spec %s: no blocks (b)" % spec.get("m"))
    for i, block in enumerate(blocks):
        read_request(1, block["f"], block["a"], block["c"])
        for point in block["p"]:
            kind, order = point.get("t"), point.get("bo", "ABCD")
            if kind not in TYPES or order not in ORDERS:
                raise ValueError("modbus spec b[%d] %s: type %r / order %r" % (i, point.get("n"), kind, order))
            if point["at"] < 0 or point["at"] + TYPES[kind][1] > block["c"]:
                raise ValueError("modbus spec b[%d] %s: registers %d+ outside the block" % (i, point["n"], point["at"]))


class Poller:
    """One device on the RS485 line: all its blocks read in one poll, each metric's value taken from the last poll."""

    def __init__(self, port, slave, spec):
        check_spec(spec)
        self.port = port
        self.spec = spec
        self.timeout_ms = spec.get("to", 300)
        self.requests = [read_request(slave, b["f"], b["a"], b["c"]) for b in spec["b"]]  # built once
        self.last = {}  # metric -> (value, flags, failure reason or None)
        self.errors = []  # DriverErrors of the last poll, one per failed block
        self._taken = set(m for m, _unit in self.metrics())  # metrics read since the last poll: all, before one

    def metrics(self):
        """``(metric, unit)`` of every point, in block order."""
        return [(p["n"], p.get("u", "")) for b in self.spec["b"] for p in b["p"]]

    def poll(self):
        """Read every block: ``(metric, unit, value, flags)`` per point; a failed block's points carry None and
        ``Q_COMM_ERROR`` (its DriverError is in ``errors``)."""
        out = []
        self.errors = []
        for i, block in enumerate(self.spec["b"]):  # no zip(strict=) on MicroPython
            try:
                data = transact(self.port, self.requests[i], block["c"], self.timeout_ms)
            except DriverError as exc:
                self.errors.append(exc)
                for p in block["p"]:
                    out.append((p["n"], p.get("u", ""), None, Q_COMM_ERROR))
                    self.last[p["n"]] = (None, Q_COMM_ERROR, exc.reason)
                continue
            for p in block["p"]:
                reading = decode_point(p, data)
                out.append(reading)
                self.last[p["n"]] = (reading[2], reading[3], None if reading[2] is not None else "not_finite")
        self._taken.clear()
        return out

    def read(self, metric):
        """The metric's value for the wake's sensor loop: the first read after every metric was taken polls again."""
        if metric in self._taken:
            self.poll()
        self._taken.add(metric)
        value, _flags, reason = self.last[metric]
        if value is None:
            raise DriverError(reason, "modbus %s" % self.spec.get("m"))
        return value

    def flags(self, metric):
        """Quality flags of the metric's value in the last poll (``Q_OUT_OF_RANGE``)."""
        entry = self.last.get(metric)
        return entry[1] if entry is not None else 0
