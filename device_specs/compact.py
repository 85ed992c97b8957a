"""The compact form of a Modbus RTU spec: what a sensor node needs to poll one device, and nothing more.

A node has a few tens of KB of heap and reads its settings from a JSON file, so it gets the spec
compiled: the register blocks to read (points merged into as few requests as the spec's timing
allows, exactly as the gateway merges a full poll cycle) and, per point, where its value sits in
its block and how raw registers become a physical value.  The node driver
(``firmware/drivers/modbus_rtu.py``) decodes with it; a test proves that for every shipped RTU
spec it gives the same values and range flags as ``device_specs.codec`` on the gateway.

Format (JSON, keys kept short; absent keys take the default)::

    {"v": 1,                        format version
     "m": "cwt-soil-7in1@1.0.0",    the spec's model@version
     "to": 300,                     response timeout, ms (timing.response_timeout_ms)
     "b": [                         blocks, one read request each, in table and address order
       {"f": 3,                     function: 3 read holding registers, 4 read input registers
        "a": 0,                     first register address
        "c": 7,                     register count
        "p": [                      the points read by this block
          {"n": "soil_moisture",    metric
           "u": "%",                unit (default "")
           "at": 0,                 register offset of the value in the block
           "t": "u16",              type: u16 s16 u32 s32 u64 s64 f32 f64 bit
           "bo": "CDAB",            byte/word order (default ABCD): ABCD BADC CDAB DCBA
           "bit": 3,                bit number, type bit only (default 0)
           "s": 0.1, "o": 0,        value = raw * s + o (defaults 1 and 0; bits take neither)
           "r": [0, 100]}]}]}       valid physical range, inclusive (default: none)

Numbers are written as integers when integral, so an integer register with an integral scale
and offset decodes to an exact integer on the node as it does on the gateway.  Line settings
(baud, parity, unit id) are not part of it: they belong to the installation and sit beside it in
the node's settings.  Not served on a node, and refused here with the point and key named:
interfaces other than ``modbus-rtu`` (a Modbus TCP device is the gateway's), coil and discrete
tables and strings.  ``stuck_after`` (needs the value history of many wakes) and ``warmup_ms``
are left to the gateway and the cloud.
"""

from __future__ import annotations

import json

from device_specs.schema import DataType, DeviceSpec, Interface, Point, Table, Timing

FORMAT_VERSION = 1
TYPE_CODES = {
    DataType.UINT16: "u16", DataType.INT16: "s16", DataType.UINT32: "u32", DataType.INT32: "s32",
    DataType.UINT64: "u64", DataType.INT64: "s64", DataType.FLOAT32: "f32", DataType.FLOAT64: "f64",
    DataType.BITS: "bit",
}
FUNCTIONS = {Table.HOLDING: 3, Table.INPUT: 4}


class CompactError(ValueError):
    """A valid spec that a node cannot serve; the message names the spec, the point and the key."""


def _number(x: float) -> int | float:
    """An integral float as an int: shorter JSON, and exact integer arithmetic on the node."""
    return int(x) if float(x).is_integer() else x


def _width(p: Point) -> int:
    return max(p.register_count, 1)


def blocks(points: list[Point], timing: Timing) -> list[tuple[Table, int, int, list[Point]]]:
    """``(table, first address, count, points)`` reads covering ``points``: neighbours merged, holes of up to
    ``max_gap`` registers bridged, at most ``max_registers_per_read`` registers per read (a wider point alone).

    The rule of the gateway's full poll cycle (``edge_agent.bus.planner.merge``; a test holds them equal).
    """
    out: list[tuple[Table, int, int, list[Point]]] = []
    for table in sorted({p.table for p in points if p.table is not None}):
        run: list[Point] = []
        start = end = 0  # the current read covers [start, end)
        for p in sorted((q for q in points if q.table == table), key=lambda q: (q.address, _width(q))):
            addr = p.address or 0
            new_end = max(end, addr + _width(p))
            if run and addr - end <= timing.max_gap and new_end - start <= timing.max_registers_per_read:
                run.append(p)
                end = new_end
                continue
            if run:
                out.append((table, start, end - start, run))
            run, start, end = [p], addr, addr + _width(p)
        if run:
            out.append((table, start, end - start, run))
    return out


def _check(spec: DeviceSpec) -> None:
    if spec.interface != Interface.MODBUS_RTU:
        where = "the gateway reads it" if spec.interface == Interface.MODBUS_TCP else "not a Modbus RTU device"
        raise CompactError(f"{spec.key}: interface: {spec.interface.value} is not served by the node's RS485 "
                           f"Modbus RTU reader ({where})")
    for i, p in enumerate(spec.points):
        at = f"{spec.key}: points[{i}] ({p.metric})"
        if p.table not in FUNCTIONS:
            raise CompactError(f"{at}.table: {p.table.value if p.table else None} is not served by the node "
                               "(it reads holding and input registers, functions 3 and 4)")
        if p.type not in TYPE_CODES:
            raise CompactError(f"{at}.type: {p.type.value} is not served by the node "
                               f"(types: {', '.join(t.value for t in TYPE_CODES)})")


def _point(p: Point, start: int) -> dict:
    out: dict = {"n": p.metric}
    if p.unit:
        out["u"] = p.unit
    out["at"] = (p.address or 0) - start
    out["t"] = TYPE_CODES[p.type]
    if p.type == DataType.BITS:
        if p.bit:
            out["bit"] = p.bit
        return out  # the codec gives bits as booleans: no order, scale, offset or range
    if p.order.value != "ABCD":
        out["bo"] = p.order.value
    if p.scale != 1:
        out["s"] = _number(p.scale)
    if p.offset != 0:
        out["o"] = _number(p.offset)
    if p.range is not None:
        out["r"] = [_number(p.range[0]), _number(p.range[1])]
    return out


def compact(spec: DeviceSpec) -> dict:
    """The compact form of a Modbus RTU spec (see the module docstring); CompactError when a node cannot serve it."""
    _check(spec)
    reads = blocks(list(spec.points), spec.timing)
    return {
        "v": FORMAT_VERSION,
        "m": spec.key,
        "to": spec.timing.response_timeout_ms,
        "b": [
            {"f": FUNCTIONS[table], "a": start, "c": count, "p": [_point(p, start) for p in points]}
            for table, start, count, points in reads
        ],
    }


def to_json(form: dict) -> str:
    """The compact form as the node stores it: JSON without spaces."""
    return json.dumps(form, separators=(",", ":"), ensure_ascii=False)
