"""Serial line-protocol text <-> physical values: the one codec for line sensors, gateway and simulators alike.

A line sensor writes text lines such as ``R1234<CR>`` or ``<STX>Q,229,002.74,M,00,<ETX>16<CR><LF>``.
The spec's ``line.pattern`` is *searched* in each line (its terminator removed), so line noise
in front of a reading does not cost the reading; anchor the pattern with ``^`` to refuse that.
Each point's ``field`` names a group of the pattern, whose text becomes ``raw * scale + offset``
(integer types stay exact integers with an integral scale and offset, as in the register codec).
With ``line.checksum: xor8-hex`` the group ``checksum`` must hold, as two hex digits, the XOR of
the characters of group ``checked``; a line whose checksum does not match is not a reading.

``request``, ``terminator`` and ``format`` may be written with Python escapes (``'?Q'``,
``'\\r\\n'``, ``'\\x02'``); the pattern keeps its own regex escapes.  Lines are read as Latin-1,
one character per byte, so no byte sequence can fail to decode.
"""

from __future__ import annotations

import codecs
import math
import re
import string
from functools import reduce
from operator import xor

from device_specs.schema import DataType, DeviceSpec, Point

Value = float | int | str | bool
_INTEGER = (DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64)


class LineDecodeError(ValueError):
    """A field's text cannot be read as the point's type."""


def unescape(text: str) -> bytes:
    """``'?Q\\r\\n'`` as the bytes on the wire; ValueError for a bad escape or a character above 0xFF."""
    try:
        return codecs.decode(text, "unicode_escape").encode("latin-1")
    except UnicodeError as exc:  # UnicodeDecodeError (bad escape) and UnicodeEncodeError (not one byte)
        raise ValueError(f"{text!r}: {exc.reason}") from None


def format_fields(template: str) -> list[str]:
    """The placeholder names of a format string; ValueError for anything but plain ``{name:spec}`` fields."""
    names = []
    for _literal, name, _spec, _conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} is not a plain group name")
        names.append(name)
    return names


def xor8(text: str) -> int:
    return reduce(xor, text.encode("latin-1"), 0)


class LineCodec:
    """A spec's line protocol, compiled: what to send, where a line ends, how to read and write one."""

    def __init__(self, spec: DeviceSpec) -> None:
        if spec.line is None:
            raise ValueError(f"{spec.key}: interface {spec.interface.value} has no line protocol")
        line = spec.line
        self.spec = spec
        self.request: bytes | None = unescape(line.request) if line.request else None
        self.terminator: bytes = unescape(line.terminator)
        self.pattern = re.compile(line.pattern)
        self.checksum = line.checksum
        self.template: str | None = unescape(line.format).decode("latin-1") if line.format else None
        self.points: tuple[Point, ...] = tuple(spec.points)

    # -- reading ------------------------------------------------------------------------------
    def fields(self, line: bytes) -> dict[str, str | None] | None:
        """The pattern's groups in ``line`` (without terminator), or None if it holds no valid reading."""
        found = self.pattern.search(line.decode("latin-1"))
        if found is None:
            return None
        groups = found.groupdict()
        if self.checksum == "xor8-hex":
            checked, given = groups.get("checked"), groups.get("checksum")
            if checked is None or given is None or not re.fullmatch(r"[0-9A-Fa-f]{2}", given):
                return None
            if xor8(checked) != int(given, 16):
                return None
        return groups

    def decode(self, point: Point, text: str) -> Value:
        """The physical value of ``point`` written as ``text``."""
        text = text.strip()
        if point.type == DataType.STRING:
            return text
        if point.type == DataType.BITS:
            if text not in ("0", "1"):
                raise LineDecodeError(f"{point.metric}: {text!r} is not 0 or 1")
            return text == "1"
        try:
            raw: int | float = int(text) if point.type in _INTEGER else float(text)
        except ValueError:
            raise LineDecodeError(f"{point.metric}: {text!r} is not a {point.type.value} number") from None
        if not math.isfinite(raw):
            raise LineDecodeError(f"{point.metric}: {text!r} is not a finite number")
        if isinstance(raw, int) and point.scale.is_integer() and point.offset.is_integer():
            return raw * int(point.scale) + int(point.offset)
        return round(raw * point.scale + point.offset, 10)

    def values(self, line: bytes) -> dict[str, Value | None] | None:
        """Every point's value in ``line`` by metric (None where an optional group is absent), or None if
        the line is not a reading: no match, a bad checksum, or a field that does not read as its type."""
        groups = self.fields(line)
        if groups is None:
            return None
        out: dict[str, Value | None] = {}
        for p in self.points:
            text = groups.get(p.field or "")
            try:
                out[p.metric] = None if text is None else self.decode(p, text)
            except LineDecodeError:
                return None
        return out

    # -- writing (simulators) -------------------------------------------------------------------
    def raw(self, point: Point, value: Value) -> Value:
        """The raw field value a device writes for physical ``value`` (integer types rounded)."""
        if point.type == DataType.STRING:
            return str(value)
        if point.type == DataType.BITS:
            return 1 if value else 0
        if isinstance(value, str):
            raise ValueError(f"{point.metric}: {point.type.value} cannot hold the text {value!r}")
        raw = (float(value) - point.offset) / point.scale
        return round(raw) if point.type in _INTEGER else raw

    def render(self, values: dict[str, Value]) -> bytes:
        """The line (with terminator) a device writes for physical ``values`` by metric."""
        if self.template is None:
            raise ValueError(f"{self.spec.key}: the spec has no line.format to write lines with")
        raws = {p.field: self.raw(p, values[p.metric]) for p in self.points if p.field}
        text = self.template.format(**raws, checksum="00")
        if self.checksum == "xor8-hex":
            found = self.pattern.search(text)
            checked = found.group("checked") if found is not None else None
            if checked is None:
                raise ValueError(f"{self.spec.key}: the formatted line {text!r} does not match line.pattern")
            text = self.template.format(**raws, checksum=f"{xor8(checked):02X}")
        return text.encode("latin-1") + self.terminator

    def sample_values(self) -> dict[str, Value]:
        """A plausible value per point (the middle of its range), to check that format and pattern agree."""
        out: dict[str, Value] = {}
        for p in self.points:
            if p.type == DataType.STRING:
                out[p.metric] = "x"
            elif p.type == DataType.BITS:
                out[p.metric] = True
            else:
                low, high = p.range if p.range is not None else (p.offset, p.offset + p.scale)
                out[p.metric] = (low + high) / 2
        return out
