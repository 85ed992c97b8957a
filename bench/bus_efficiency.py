"""How close the RTU master runs to the line's ceiling, and how much read merging saves.

Run ``python -m bench.bus_efficiency``.  Everything printed is measured in this run against the
simulated RS485 line (``hardware.rtu_bus``), which takes a request as complete one 3.5-character
silence after its last byte, waits the turnaround, and delivers the answer when its last character
would arrive.  The ceiling for one transaction is computed from the same frames::

    T = (request_bytes + response_bytes) * bits_per_char / baud + 2 * 3.5 * bits_per_char / baud

(the two silences: the one that ends the request, and the one the master keeps before the next
request), plus the turnaround when there is one.  8E1 has 11 bits per character.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import time
from dataclasses import dataclass

from bench import Figure
from device_specs.registry import builtin_specs
from device_specs.schema import DeviceSpec, Table
from edge_agent.bus.master import Master, read_reply_len
from edge_agent.bus.planner import ReadPlan, per_point_reads
from edge_agent.bus.rtu import RtuTransport, bits_per_char
from edge_agent.bus.transport import CrcError
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice

BAUD, PARITY, STOP = 9600, "E", 1
BPC = bits_per_char(PARITY, STOP)
REQUEST_BYTES = 8  # unit, function, address(2), count(2), crc(2)


def ceiling_s(request_bytes: int, response_bytes: int, turnaround_s: float = 0.0) -> float:
    return (request_bytes + response_bytes) * BPC / BAUD + 2 * 3.5 * BPC / BAUD + turnaround_s


@dataclass
class Throughput:
    label: str
    registers: int
    turnaround_ms: float
    transactions: int
    tps: float
    ceiling_tps: float

    @property
    def ratio(self) -> float:
        return self.tps / self.ceiling_tps


def soil_device(unit: int = 1) -> SimulatedDevice:
    return SimulatedDevice(builtin_specs()["jxct-soil-7in1"], unit_id=unit, seed=1)


def measure_master(registers: int, n: int, turnaround_ms: float) -> Throughput:
    """Back-to-back reads of ``registers`` holding registers through the project's RTU master."""
    dev = soil_device()
    address = 0x06  # the soil probe's map starts here; 27 registers reach its last point
    with RtuBusSimulator([dev], baud=BAUD, parity=PARITY, turnaround_ms=turnaround_ms) as sim:
        master = Master(RtuTransport(sim.port, BAUD, PARITY, STOP), timeout_s=0.5)
        try:
            master.read(1, Table.HOLDING, address, registers)  # open the port, settle
            t0 = time.perf_counter()
            for _ in range(n):
                master.read(1, Table.HOLDING, address, registers)
            elapsed = time.perf_counter() - t0
        finally:
            master.close()
    response = 3 + read_reply_len(Table.HOLDING, registers)
    return Throughput("edge_agent RTU master", registers, turnaround_ms, n, n / elapsed,
                      1 / ceiling_s(REQUEST_BYTES, response, turnaround_ms / 1000))


def measure_pymodbus(registers: int, n: int) -> tuple[Throughput, float, str]:
    """pymodbus's sync serial client on the same line, and how it reports a CRC error.

    It opens the pty with parity N (see ``hardware.pty_port``); the simulator times the line as
    8E1 regardless, so the ceiling is the same.
    """
    from pymodbus.client import ModbusSerialClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every failed request at ERROR
    dev = soil_device()
    with RtuBusSimulator([dev], baud=BAUD, parity=PARITY) as sim:
        client = ModbusSerialClient(sim.port, baudrate=BAUD, parity="N", timeout=0.3, retries=0)
        client.connect()
        try:
            client.read_holding_registers(0x06, count=registers, device_id=1)
            t0 = time.perf_counter()
            for _ in range(n):
                client.read_holding_registers(0x06, count=registers, device_id=1)
            elapsed = time.perf_counter() - t0
            dev.faults.crc_error_rate = 1.0
            t0 = time.perf_counter()
            try:
                client.read_holding_registers(0x06, count=registers, device_id=1)
                reported = "no error"
            except Exception as exc:  # noqa: BLE001 - recording what pymodbus raises is the point
                reported = type(exc).__name__
            crc_s = time.perf_counter() - t0
        finally:
            client.close()
    response = 3 + read_reply_len(Table.HOLDING, registers)
    tp = Throughput("pymodbus sync client", registers, 0.0, n, n / elapsed, 1 / ceiling_s(REQUEST_BYTES, response))
    return tp, crc_s, reported


def master_crc_report_s() -> tuple[float, str]:
    dev = soil_device()
    dev.faults.crc_error_rate = 1.0
    with RtuBusSimulator([dev], baud=BAUD, parity=PARITY) as sim:
        master = Master(RtuTransport(sim.port, BAUD, PARITY, STOP), timeout_s=0.3)
        t0 = time.perf_counter()
        try:
            master.read(1, Table.HOLDING, 0x06, 1)
            reported = "no error"
        except CrcError as exc:
            reported = type(exc).__name__
        finally:
            master.close()
        return time.perf_counter() - t0, reported


@dataclass
class Merging:
    model: str
    points: int
    naive_per_cycle: int
    merged_per_cycle: int
    naive_cycle_ms: float
    merged_cycle_ms: float
    naive_per_hour: float
    merged_per_hour: float


def per_hour(plan: ReadPlan) -> tuple[float, float]:
    """Transactions in one hour of polling at the spec's own intervals: one per point vs merged."""
    naive = sum(len(g.points) * 3600 / g.interval_s for g in plan.groups)
    times: dict[int, set[float]] = {}
    for g in plan.groups:
        step = round(g.interval_s * 1000)
        for t in range(0, 3_600_000, step):
            times.setdefault(t, set()).add(g.interval_s)
    merged = sum(len(plan.reads(frozenset(due))) for due in times.values())
    return naive, merged


def measure_merging(specs: list[DeviceSpec]) -> list[Merging]:
    """One full poll cycle of each spec on the line, merged and one read per point, counted and timed."""
    devices = [SimulatedDevice(s, unit_id=i + 1, seed=1) for i, s in enumerate(specs)]
    rows = []
    with RtuBusSimulator(devices, baud=BAUD, parity=PARITY) as sim:
        master = Master(RtuTransport(sim.port, BAUD, PARITY, STOP), timeout_s=0.5)
        try:
            for dev in devices:
                plan = ReadPlan(dev.spec)
                cycle = {}
                for label, reads in (("merged", plan.full_cycle()), ("naive", per_point_reads(dev.spec))):
                    before = master.counters["transactions"]
                    t0 = time.perf_counter()
                    for r in reads:
                        master.read(dev.unit_id, r.table, r.address, r.count)
                    cycle[label] = (master.counters["transactions"] - before, (time.perf_counter() - t0) * 1000)
                naive_h, merged_h = per_hour(plan)
                rows.append(Merging(dev.spec.model, plan.point_count(), cycle["naive"][0], cycle["merged"][0],
                                    cycle["naive"][1], cycle["merged"][1], naive_h, merged_h))
        finally:
            master.close()
    return rows


def measure(n: int) -> dict:
    """Every figure of this benchmark: throughput rows, CRC error reports, read merging per spec."""
    results = [measure_master(1, n, 0.0), measure_master(27, max(n // 2, 1), 0.0), measure_master(1, n, 5.0),
               measure_master(27, max(n // 2, 1), 5.0)]
    pym, pym_crc_s, pym_reported = measure_pymodbus(1, n)
    ours_crc_s, ours_reported = master_crc_report_s()
    specs = sorted((s for s in builtin_specs().values() if s.interface.is_modbus), key=lambda s: s.model)
    return {"throughput": results, "pymodbus": pym, "pymodbus_crc": (pym_crc_s, pym_reported),
            "ours_crc": (ours_crc_s, ours_reported), "merging": measure_merging(specs)}


def figures(r: dict) -> list[Figure]:
    """The result protocol's figures (bench/__init__.py) from :func:`measure`'s result."""
    out = []
    for t in [*r["throughput"], r["pymodbus"]]:
        who = "pymodbus" if t is r["pymodbus"] else "rtu_master"
        out.append(Figure(f"{who}_{t.registers}reg_{t.turnaround_ms:g}ms_turnaround", round(t.tps, 2), "tx/s",
                          "line ceiling (computed from the frames)", round(t.ceiling_tps, 2),
                          target=0.9 if who == "rtu_master" and t.turnaround_ms == 0 else None, target_on="ratio"))
    (ours_s, _), (pym_s, pym_reported) = r["ours_crc"], r["pymodbus_crc"]
    out.append(Figure("crc_error_reported_after", round(ours_s * 1000, 1), "ms",
                      f"pymodbus ({pym_reported})", round(pym_s * 1000, 1), higher_is_better=False))
    multi = [m for m in r["merging"] if m.points >= 6]
    out.append(Figure("merged_tx_per_poll_cycle_multipoint_specs", sum(m.merged_per_cycle for m in multi), "tx",
                      "one read per point", sum(m.naive_per_cycle for m in multi), higher_is_better=False))
    out.append(Figure("merging_cut_worst_multipoint_spec", round(min(m.naive_per_cycle / m.merged_per_cycle
                                                                     for m in multi), 2), "x", target=3.0))
    return out


def run(quick: bool) -> list[Figure]:
    return figures(measure(20 if quick else 200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=200, help="reads per throughput figure")
    args = parser.parse_args()
    n = args.transactions
    print(f"# bus efficiency — {datetime.date.today().isoformat()}, nproc {os.cpu_count()}, "
          f"simulated RTU line {BAUD} 8{PARITY}{STOP} ({BPC} bits/char)")
    print("T = (request_bytes + response_bytes) * 11/9600 + 2 * 3.5 * 11/9600 [+ turnaround]\n")
    r = measure(n)
    results, pym = r["throughput"], r["pymodbus"]
    (pym_crc_s, pym_reported), (ours_crc_s, ours_reported) = r["pymodbus_crc"], r["ours_crc"]
    print(f"{'client':24} {'regs':>4} {'turn ms':>7} {'n':>5} {'tx/s':>7} {'ceiling':>8} {'ratio':>6}")
    for t in [*results, pym]:
        print(f"{t.label:24} {t.registers:>4} {t.turnaround_ms:>7.1f} {t.transactions:>5} {t.tps:>7.2f} "
              f"{t.ceiling_tps:>8.2f} {t.ratio:>6.1%}")
    line_only = 1 / ceiling_s(REQUEST_BYTES, 7)
    print(f"with 5 ms turnaround, 1 register: {results[2].tps:.2f} tx/s = {results[2].tps / line_only:.1%} of the "
          f"zero-turnaround ceiling ({line_only:.2f} tx/s)")
    print(f"a CRC error is reported after {ours_crc_s * 1000:.0f} ms as {ours_reported} (edge_agent); "
          f"after {pym_crc_s * 1000:.0f} ms as {pym_reported} (pymodbus, same as a timeout)\n")
    rows = r["merging"]
    print(f"{'spec':28} {'points':>6} {'tx/cycle naive':>14} {'merged':>6} {'ratio':>6} {'cycle ms naive':>14} "
          f"{'merged':>7} {'tx/h naive':>10} {'merged':>7} {'ratio':>6}")
    for m in rows:
        print(f"{m.model:28} {m.points:>6} {m.naive_per_cycle:>14} {m.merged_per_cycle:>6} "
              f"{m.naive_per_cycle / m.merged_per_cycle:>5.1f}x {m.naive_cycle_ms:>14.0f} {m.merged_cycle_ms:>7.0f} "
              f"{m.naive_per_hour:>10.0f} {m.merged_per_hour:>7.0f} {m.naive_per_hour / m.merged_per_hour:>5.1f}x")
    multi = [m for m in rows if m.points >= 6]
    print(f"multi-point specs (>= 6 points): transactions per cycle cut "
          f"{statistics.mean(m.naive_per_cycle / m.merged_per_cycle for m in multi):.1f}x on average, "
          f"at least {min(m.naive_per_cycle / m.merged_per_cycle for m in multi):.1f}x")


if __name__ == "__main__":
    main()
