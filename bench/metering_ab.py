"""What metering costs the ingest: the ingest benchmark's workloads with metering on and off, in one run.

``python -m bench.metering_ab [--messages 200] [--node-messages 10000] [--repeat 4] [--workers 1,2] [--no-e2e]
[--json]``

Metering adds, to every commit transaction, a sum over its batches and two statements (the month's
devices, the tenants' counters: cloud.metering.ingest).  This measures it on bench/ingest.py's two
workloads (gateway batches of 1,000 readings; single-node messages of 5 readings, the worst case per
reading) and its two views of the ingest:

* ``write_path``: the database side alone (:func:`cloud.ingest.commit.commit_units` over messages
  already parsed, in transactions of ``ingest_batch_rows`` readings), where metering's share is the
  largest, since nothing else is left;
  its own time there is also clocked directly (``metering_share``: the time spent in
  cloud.metering.ingest's functions over the commit time), which a loaded machine blurs far less
  than a difference of two rates;
* ``e2e``: one or two worker processes (``fieldtrust cloud ingest``, ``FIELDTRUST_METERING`` true or
  false; two workers share the tenant's counters, where a shared counter row would serialise them) fed
  every message through the broker, timed from release to the last commit (bench/ingest.py's method).

A/B in the same run: each repetition runs both modes back to back, the order alternating (off-on,
on-off, ...), each on emptied tables, so a drift of the machine (other processes, caches, the
server's checkpoints) falls on both alike.  Reported per figure: the median of each mode, their ratio
(``on / off`` in readings per second: 0.97 = 3 % slower) and each repetition's own ratio.  The
target (issue 5): ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import Figure
from bench import ingest as bench
from cloud.ingest.commit import commit_units
from cloud.ingest.handler import Prepared
from cloud.metering import ingest as metering
from cloud.store import db, partitions, writes
from cloud.store.migrate import migrate
from fieldtrust.services.mosquitto import PrivateMosquitto

MODES = (False, True)  # metering off, on


def reset(conn: psycopg.Connection) -> None:
    """bench/ingest.py's reset, and the usage counters too (each run starts from the same tables)."""
    conn.execute("TRUNCATE ft.usage_monthly, ft.usage_devices")
    bench.reset(conn)


def write_path(conn: psycopg.Connection, units: list[Prepared], metering_on: bool) -> None:
    """bench/ingest.py's write path, metering on or off."""
    group: list[Prepared] = []
    size = 0
    for unit in [*units, None]:
        if unit is not None:
            group.append(unit)
            size += unit.readings
        if group and (unit is None or size >= bench.BATCH_ROWS):
            with conn.transaction():
                commit_units(conn, group, metering_on=metering_on)
            group, size = [], 0


@contextlib.contextmanager
def metering_env(on: bool) -> Iterator[None]:
    """Workers spawned meanwhile get FIELDTRUST_METERING (they inherit this process's environment)."""
    before = os.environ.get("FIELDTRUST_METERING")
    os.environ["FIELDTRUST_METERING"] = "true" if on else "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FIELDTRUST_METERING", None)
        else:
            os.environ["FIELDTRUST_METERING"] = before


class MeteringClock:
    """Time spent inside cloud.metering.ingest's functions (this process only: the write path), to give its
    share of the commit time directly, less exposed to a noisy machine than a difference of two rates."""

    NAMES = ("usage_of_commit", "settle_overlaps", "record")

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        originals = {name: getattr(metering, name) for name in self.NAMES}

        def timed(fn: Callable[..., object]) -> Callable[..., object]:
            def wrapper(*args: object, **kwargs: object) -> object:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0
            return wrapper

        for name, fn in originals.items():
            setattr(metering, name, timed(fn))
        try:
            yield
        finally:
            for name, fn in originals.items():
                setattr(metering, name, fn)


def check(conn: psycopg.Connection, on: bool) -> None:
    """Metering on counted exactly the readings stored; off, nothing."""
    row = conn.execute("SELECT coalesce(sum(quantity), 0) FROM ft.usage_monthly WHERE meter = 'readings_stored'"
                       ).fetchone()  # over every shard (migration 049)
    counted, stored = int(row[0]) if row else 0, bench.count(conn, "ft.readings")
    if counted != (stored if on else 0):
        raise RuntimeError(f"metering {'on' if on else 'off'} counted {counted} readings; {stored} are stored")


def ab(repeat: int, run: Callable[[bool], float]) -> dict[bool, list[float]]:
    """Seconds of ``run(mode)`` per mode, ``repeat`` pairs, the order alternating."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(repeat):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            times[mode].append(run(mode))
    return times


def figure(readings: int, times: dict[bool, list[float]]) -> dict:
    off, on = (statistics.median(times[m]) for m in MODES)
    return {"off_readings_per_s": round(readings / off), "on_readings_per_s": round(readings / on),
            "ratio": round(off / on, 3),
            "pair_ratios": [round(a / b, 3) for a, b in zip(times[False], times[True], strict=True)]}


def measure(args: argparse.Namespace) -> dict:
    now_ms = int(time.time() * 1000)
    workloads = [bench.gateway_batches(args.messages, now_ms - 6 * 3_600_000),
                 bench.node_messages(args.node_messages, now_ms - 3 * 3_600_000, args.messages)]
    result: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
                    "python": platform.python_version(), "repeat": args.repeat,
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "workloads": {w.name: {"messages": len(w.frames), "readings": w.readings} for w in workloads},
                    "figures": {}}
    figures = result["figures"]
    with bench.private_database(args.server) as url, tempfile.TemporaryDirectory(prefix="ft-bench-meter-") as tmp:
        migrate(url)
        bench.register(url)
        with db.connect(url, autocommit=True) as conn:
            result["postgres"] = conn.info.parameter_status("server_version")
            result["backend"] = db.backend(conn)
            writes.prefer_lz4(conn)
            partitions.ensure_ahead(conn, 1)
            broker = PrivateMosquitto(Path(tmp) / "broker", overrides=bench.BROKER) if args.e2e else None
            with broker if broker is not None else contextlib.nullcontext():
                for w in workloads:
                    units = bench.prepare_all(url, w)

                    clock, on_seconds = MeteringClock(), []

                    def path_once(on: bool, units: list[Prepared] = units, clock: MeteringClock = clock,
                                  on_seconds: list[float] = on_seconds) -> float:
                        reset(conn)
                        with clock.installed():
                            t0 = time.perf_counter()
                            write_path(conn, units, on)
                            elapsed = time.perf_counter() - t0
                        check(conn, on)
                        if on:
                            on_seconds.append(elapsed)
                        return elapsed

                    figures[f"write_path_{w.name}"] = figure(w.readings, ab(args.repeat, path_once))
                    figures[f"write_path_{w.name}"]["metering_share"] = round(clock.seconds / sum(on_seconds), 4)
                    for workers in (args.workers if broker is not None else ()):
                        def e2e_once(on: bool, w: bench.Workload = w, workers: int = workers) -> float:
                            conn.execute("TRUNCATE ft.usage_monthly, ft.usage_devices")
                            with metering_env(on):
                                elapsed = bench.end_to_end(conn, url, broker, w, workers, Path(tmp))
                            check(conn, on)
                            return elapsed

                        name = f"e2e_{w.name}_{workers}_worker{'s' if workers > 1 else ''}"
                        figures[name] = figure(w.readings, ab(args.repeat, e2e_once))
                    print(f"... {w.name} done", file=sys.stderr, flush=True)
    return result


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): metering on against off (target: on >= 95 % of off)."""
    sizes = dict(messages=10, node_messages=500, repeat=1, e2e=False, workers=[1]) if quick else dict(
        messages=200, node_messages=10_000, repeat=4, e2e=True, workers=[1, 2])
    result = measure(argparse.Namespace(**sizes, server=bench.DEFAULT_SERVER))
    out = []
    for name, f in result["figures"].items():
        share = f.get("metering_share")
        out.append(Figure(f"{name}_metering_on", f["on_readings_per_s"], "readings/s", "metering off",
                          f["off_readings_per_s"], target=0.95, target_on="ratio",
                          note="" if share is None else f"metering {share:.2%} of the commit time"))
    return out


def table(result: dict) -> str:
    lines = [f"metering A/B {result['date']}, nproc={result['nproc']}, load {result['load_average']}, PostgreSQL "
             f"{result['postgres']} ({result['backend']}), Python {result['python']}, {result['repeat']} pairs",
             f"{'figure':26} {'off readings/s':>15} {'on readings/s':>14} {'on/off':>7}  pairs"]
    for name, f in result["figures"].items():
        lines.append(f"{name:26} {f['off_readings_per_s']:>15,} {f['on_readings_per_s']:>14,} {f['ratio']:>7}  "
                     f"{' '.join(str(r) for r in f['pair_ratios'])}")
    shares = {n: f["metering_share"] for n, f in result["figures"].items() if "metering_share" in f}
    lines += [f"{name}: time inside metering {share:.2%} of the commit time (metering on)"
              for name, share in shares.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.metering_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="gateway batches of 1,000 readings (default 200)")
    parser.add_argument("--node-messages", type=int, default=10_000, help="single-node messages (default 10,000)")
    parser.add_argument("--repeat", type=int, default=4, help="pairs (off, on) of runs per figure")
    parser.add_argument("--no-e2e", dest="e2e", action="store_false", help="the write path only (no broker, workers)")
    parser.add_argument("--workers", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2],
                        help="worker counts of the e2e figures, comma-separated (default 1,2)")
    parser.add_argument("--server", default=bench.DEFAULT_SERVER, help="PostgreSQL server for the private database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
