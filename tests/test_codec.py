"""The register codec: hand-computed byte vectors for every data type and byte/word order.

Each expected register list below was worked out by hand from the value's big-endian bytes
(A = most significant byte), then rearranged per order: CDAB swaps the 16-bit words, BADC
swaps the bytes inside each word, DCBA does both.  A round-trip property test then covers
every type and order with arbitrary register contents.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_specs.codec import DecodeError, EncodeError, decode, decode_raw, encode, encode_raw
from device_specs.schema import ByteOrder, DataType, Point

ORDERS = list(ByteOrder)
ONE_WORD_ORDERS = [ByteOrder.ABCD, ByteOrder.BADC]


def point(dt: str, order: str = "ABCD", table: str = "holding", **kw: object) -> Point:
    return Point(metric="x", table=table, address=0, type=dt, order=order, **kw)


# value, then registers in ABCD, CDAB, BADC, DCBA
VECTORS: list[tuple[str, int | float, dict[str, list[int]]]] = [
    # float32 123.456 = 0x42F6E979
    ("float32", 123.456, {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
                          "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}),
    # float32 -2.5 = 0xC0200000
    ("float32", -2.5, {"ABCD": [0xC020, 0x0000], "CDAB": [0x0000, 0xC020],
                       "BADC": [0x20C0, 0x0000], "DCBA": [0x0000, 0x20C0]}),
    # int32 -123456789 = 0xF8A432EB (two's complement of 0x075BCD15)
    ("int32", -123456789, {"ABCD": [0xF8A4, 0x32EB], "CDAB": [0x32EB, 0xF8A4],
                           "BADC": [0xA4F8, 0xEB32], "DCBA": [0xEB32, 0xA4F8]}),
    # uint32 0xDEADBEEF
    ("uint32", 0xDEADBEEF, {"ABCD": [0xDEAD, 0xBEEF], "CDAB": [0xBEEF, 0xDEAD],
                            "BADC": [0xADDE, 0xEFBE], "DCBA": [0xEFBE, 0xADDE]}),
    # uint32 70000 = 0x00011170: the classic energy counter above 65535
    ("uint32", 70000, {"ABCD": [0x0001, 0x1170], "CDAB": [0x1170, 0x0001],
                       "BADC": [0x0100, 0x7011], "DCBA": [0x7011, 0x0100]}),
    # int64 -1234567890123456789 = 0xEEDDEF0B82167EEB
    ("int64", -1234567890123456789, {"ABCD": [0xEEDD, 0xEF0B, 0x8216, 0x7EEB],
                                     "CDAB": [0x7EEB, 0x8216, 0xEF0B, 0xEEDD],
                                     "BADC": [0xDDEE, 0x0BEF, 0x1682, 0xEB7E],
                                     "DCBA": [0xEB7E, 0x1682, 0x0BEF, 0xDDEE]}),
    # uint64 0x0123456789ABCDEF
    ("uint64", 0x0123456789ABCDEF, {"ABCD": [0x0123, 0x4567, 0x89AB, 0xCDEF],
                                    "CDAB": [0xCDEF, 0x89AB, 0x4567, 0x0123],
                                    "BADC": [0x2301, 0x6745, 0xAB89, 0xEFCD],
                                    "DCBA": [0xEFCD, 0xAB89, 0x6745, 0x2301]}),
    # float64 123.456 = 0x405EDD2F1A9FBE77
    ("float64", 123.456, {"ABCD": [0x405E, 0xDD2F, 0x1A9F, 0xBE77],
                          "CDAB": [0xBE77, 0x1A9F, 0xDD2F, 0x405E],
                          "BADC": [0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
                          "DCBA": [0x77BE, 0x9F1A, 0x2FDD, 0x5E40]}),
    # int16 -2 = 0xFFFE, -32768 = 0x8000, 1234 = 0x04D2; uint16 0xABCD
    ("int16", -2, {"ABCD": [0xFFFE], "BADC": [0xFEFF]}),
    ("int16", -32768, {"ABCD": [0x8000], "BADC": [0x0080]}),
    ("int16", 1234, {"ABCD": [0x04D2], "BADC": [0xD204]}),
    ("uint16", 0xABCD, {"ABCD": [0xABCD], "BADC": [0xCDAB]}),
]
CASES = [(dt, value, order, regs) for dt, value, by_order in VECTORS for order, regs in by_order.items()]


@pytest.mark.parametrize(("dt", "value", "order", "regs"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_byte_vectors_encode_and_decode(dt: str, value: float, order: str, regs: list[int]) -> None:
    p = point(dt, order)
    assert encode_raw(p, value) == regs
    raw = decode_raw(p, regs)
    if dt.startswith("float"):
        assert raw == pytest.approx(value, rel=1e-7 if dt == "float32" else 1e-15)
    else:
        assert raw == value and isinstance(raw, int)


def test_every_type_and_order_has_a_vector() -> None:
    covered = {(dt, order) for dt, _, order, _ in CASES}
    for dt in DataType:
        if dt in (DataType.BITS, DataType.STRING):
            continue
        orders = ORDERS if dt.registers > 1 else ONE_WORD_ORDERS
        assert {(dt.value, o.value) for o in orders} <= covered, dt


def test_bits_of_a_holding_register() -> None:
    p5 = point("bits", bit=5)
    assert decode(p5, [0x0020]) is True
    assert decode(p5, [0xFFDF]) is False  # every bit but 5
    assert encode(p5, True) == [0x0020] and encode(p5, False) == [0x0000]
    p15 = point("bits", bit=15)
    assert decode(p15, [0x8000]) is True and encode(p15, True) == [0x8000]
    assert decode(point("bits"), [0x0001]) is True  # bit defaults to 0


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_coils_and_discrete_inputs(table: str) -> None:
    p = point("bits", table=table)
    assert decode(p, [1]) is True and decode(p, [0]) is False
    assert encode(p, True) == [1] and encode(p, False) == [0]


def test_strings_in_abcd_and_badc() -> None:
    # "FT-1234" = 46 54 2D 31 32 33 34, padded with NUL to 4 registers
    abcd = point("string", length=4)
    assert encode(abcd, "FT-1234") == [0x4654, 0x2D31, 0x3233, 0x3400]
    assert decode(abcd, [0x4654, 0x2D31, 0x3233, 0x3400]) == "FT-1234"
    badc = point("string", "BADC", length=4)
    assert encode(badc, "FT-1234") == [0x5446, 0x312D, 0x3332, 0x0034]
    assert decode(badc, [0x5446, 0x312D, 0x3332, 0x0034]) == "FT-1234"
    assert decode(abcd, [0x4142, 0x0000, 0x4344, 0x4546]) == "AB"  # stops at the first NUL


def test_strings_refuse_what_they_cannot_hold() -> None:
    p = point("string", length=2)
    with pytest.raises(EncodeError, match="longer than 4"):
        encode(p, "ABCDE")
    with pytest.raises(EncodeError, match="not ASCII"):
        encode(p, "Grün")


def test_scale_and_offset() -> None:
    assert decode(point("uint16", scale=0.1), [235]) == 23.5
    assert decode(point("int16", scale=0.1), [0xFF9C]) == -10.0  # -100 * 0.1
    assert decode(point("uint16", scale=0.01), [356]) == 3.56  # JXCT pH register
    # SHT3x conversion: T = -45 + 175 * S / 65535; S = 26214 is exactly 0.4 of full scale
    sht = point("uint16", scale=175 / 65535, offset=-45)
    assert decode(sht, [26214]) == 25.0
    assert encode(sht, 25.0) == [26214]
    assert encode(point("int16", scale=0.1), -10.0) == [0xFF9C]
    assert encode(point("uint16", scale=2, offset=100), 150) == [25]


def test_integer_registers_with_integral_scale_stay_exact_ints() -> None:
    top = [0xFFFF] * 4
    value = decode(point("uint64"), top)
    assert value == 2**64 - 1 and isinstance(value, int)
    assert encode(point("uint64"), 2**64 - 1) == top
    assert decode(point("uint32", offset=5), [0x0001, 0x1170]) == 70005


def test_integer_types_saturate_like_a_device() -> None:
    assert encode(point("int16", scale=0.1), 4000.0) == [0x7FFF]  # raw 40000 > 32767
    assert encode(point("uint16"), -3) == [0x0000]
    assert encode(point("uint16", scale=0.1), 23.46) == [235]  # rounds to the nearest step


@pytest.mark.parametrize(
    ("dt", "regs"),
    [
        ("float32", [0x7FC0, 0x0000]),  # quiet NaN
        ("float32", [0x7F80, 0x0000]),  # +inf
        ("float32", [0xFF80, 0x0000]),  # -inf
        ("float64", [0x7FF8, 0x0000, 0x0000, 0x0000]),  # NaN
        ("float64", [0xFFF0, 0x0000, 0x0000, 0x0000]),  # -inf
    ],
)
def test_nan_and_infinity_are_rejected(dt: str, regs: list[int]) -> None:
    with pytest.raises(DecodeError, match="not a finite number"):
        decode(point(dt), regs)
    with pytest.raises(DecodeError):
        decode(point(dt, "CDAB"), regs[::-1])  # same bytes, other word order


@pytest.mark.parametrize(("dt", "count"), [("uint16", 2), ("int32", 1), ("float32", 3), ("float64", 2), ("uint64", 0)])
def test_wrong_register_count_is_rejected(dt: str, count: int) -> None:
    with pytest.raises(DecodeError, match="expected"):
        decode(point(dt), [0] * count)


@pytest.mark.parametrize("bad", [0x10000, -1, 1.5, True])
def test_register_values_outside_16_bits_are_rejected(bad: object) -> None:
    with pytest.raises(DecodeError, match="16-bit"):
        decode(point("uint16"), [bad])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("p", "value"),
    [
        (point("float32"), math.nan),
        (point("float64"), math.inf),
        (point("int32"), -math.inf),
        (point("float32"), 1e39),  # beyond float32
    ],
)
def test_encode_refuses_values_registers_cannot_hold(p: Point, value: float) -> None:
    with pytest.raises(EncodeError):
        encode(p, value)


def test_encode_raw_refuses_an_integer_out_of_range() -> None:
    with pytest.raises(EncodeError, match="does not fit int16"):
        encode_raw(point("int16"), 40000)


# --- properties over every type and order -------------------------------------------------

NUMERIC = [dt for dt in DataType if dt not in (DataType.BITS, DataType.STRING)]
TYPE_ORDERS = [(dt, o) for dt in NUMERIC for o in (ORDERS if dt.registers > 1 else ONE_WORD_ORDERS)]


@st.composite
def registers_for(draw: st.DrawFn) -> tuple[DataType, ByteOrder, list[int]]:
    dt, order = draw(st.sampled_from(TYPE_ORDERS))
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=dt.registers, max_size=dt.registers))
    return dt, order, regs


@given(registers_for())
def test_registers_survive_decode_then_encode(case: tuple[DataType, ByteOrder, list[int]]) -> None:
    dt, order, regs = case
    p = point(dt.value, order.value)
    try:
        raw = decode_raw(p, regs)
    except DecodeError:
        assert dt in (DataType.FLOAT32, DataType.FLOAT64)  # only NaN/inf patterns may fail
        return
    assert encode_raw(p, raw) == regs
    if dt not in (DataType.FLOAT32, DataType.FLOAT64):
        assert encode(p, decode(p, regs)) == regs


@given(registers_for())
def test_word_order_is_a_pure_rearrangement(case: tuple[DataType, ByteOrder, list[int]]) -> None:
    dt, order, regs = case
    abcd = point(dt.value)
    rearranged = regs[::-1] if order.swap_words else list(regs)
    if order.swap_bytes:
        rearranged = [((r & 0xFF) << 8) | (r >> 8) for r in rearranged]
    try:
        expected = decode_raw(abcd, regs)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_raw(point(dt.value, order.value), rearranged)
        return
    assert decode_raw(point(dt.value, order.value), rearranged) == expected


@given(st.sampled_from(TYPE_ORDERS), st.integers(-30000, 30000))
def test_scaled_values_round_trip_within_half_a_step(type_order: tuple[DataType, ByteOrder], raw: int) -> None:
    dt, order = type_order
    if dt.value.startswith("u"):
        raw = abs(raw)
    p = point(dt.value, order.value, scale=0.1, offset=-40)
    value = raw * 0.1 - 40
    assert decode(p, encode(p, value)) == pytest.approx(value, abs=0.05 + 1e-6 * abs(value))
