"""Ingest scale-out: 1, 2 and 4 workers on one shared subscription, the same load each time, and the limit.

``python -m bench.ingest_scaleout [--messages 200] [--node-messages 10000] [--workers 1,2,4] [--repeat 2] [--json]``
(also ``fieldtrust bench scaleout``)

The workers are ``fieldtrust cloud ingest`` processes in one ingest group (``$share/<group>/…``: the
broker hands each message to one of them), against a private Mosquitto with the project's own
configuration (deploy/mosquitto/gateway.conf, on a spare port) and a bench database on the shared
PostgreSQL server, dropped afterwards.  Each run is bench/ingest.py's end-to-end method: the workers
subscribe and are stopped (SIGSTOP), every message is published into the broker, and the run is
timed from their release to the last committed batch.  Over exactly that span it measures, with
psutil, the CPU time of every process involved — each worker, the broker, the PostgreSQL backends
serving the bench database — plus the database's own busy time (``pg_stat_database.active_time``:
statements executing, commits included) and the whole machine's CPU.  The limit is the first of:

* the machine: all cores ≥ 85 % busy (other processes included) — more workers only share them;
* the broker: Mosquitto is single-threaded, so ≥ 85 % of one core is its ceiling;
* a worker: one worker's Python (its prepare thread holds the GIL) ≥ 85 % of one core;
* the database: its backends' busy time ≥ 85 % of the span per committing connection in use;

and otherwise "none saturated" (waits: network round trips, acknowledgement order).  Baselines in the
same run: the workload's plain COPY rate (for one worker) and the one-worker rate (for 2 and 4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench import Figure
from bench import ingest as base
from cloud.store import db, partitions, writes
from cloud.store.migrate import migrate
from fieldtrust.services.mosquitto import PrivateMosquitto

SATURATED = 0.85


def cpu_s(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def broker_process(broker: PrivateMosquitto) -> psutil.Process:
    """The private broker's process: this process's child started with the broker's own config file."""
    for child in psutil.Process().children(recursive=True):
        try:
            if str(broker.conf) in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise RuntimeError(f"no mosquitto process with {broker.conf} among this process's children")


def backends(conn: psycopg.Connection) -> list[psutil.Process]:
    """The PostgreSQL server processes serving the bench database (the workers' connections), but ours."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
                        "pg_backend_pid()").fetchall()
    out = []
    for (pid,) in rows:
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


def active_ms(conn: psycopg.Connection) -> float:
    """Milliseconds the database's backends spent executing statements (PostgreSQL 14+), as flushed so far."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT active_time FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return float(row[0] or 0.0) if row else 0.0


def machine_busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


@dataclass
class Usage:
    """CPU seconds of each part over one timed run, and the run's length."""

    seconds: float = 0.0
    workers: list[float] = field(default_factory=list)
    broker: float = 0.0
    backends: float = 0.0
    db_active: float = 0.0
    machine: float = 0.0
    me: float = 0.0  # this process (it polls the database for the end of the run)
    backend_count: int = 0

    def shares(self) -> dict[str, float]:
        """Each part's CPU as a fraction of one core over the run (the machine's: of all cores)."""
        s = self.seconds or 1e-9
        return {"workers_total": sum(self.workers) / s, "busiest_worker": max(self.workers, default=0.0) / s,
                "broker": self.broker / s, "postgres_backends": self.backends / s, "db_active": self.db_active / s,
                "machine": self.machine / s / (os.cpu_count() or 1),
                "others": max(0.0, self.machine - sum(self.workers) - self.broker - self.backends - self.me) / s}

    def limit(self) -> str:
        sh = self.shares()
        if sh["machine"] >= SATURATED:
            return (f"the machine ({os.cpu_count()} cores {sh['machine']:.0%} busy, {sh['others']:.2f} of them "
                    "by processes outside this benchmark)")
        if sh["broker"] >= SATURATED:
            return f"the broker (mosquitto {sh['broker']:.0%} of its one core)"
        if sh["busiest_worker"] >= SATURATED:
            return f"worker CPU (busiest worker {sh['busiest_worker']:.0%} of a core)"
        committers = max(1, self.backend_count * 2 // 3)  # of each worker's 3 connections, 2 commit
        if sh["db_active"] >= SATURATED * committers:
            return f"database commit time (busy {sh['db_active']:.2f} connections of {committers})"
        return "none saturated (waits)"


def probe_into(usage: Usage, conn: psycopg.Connection, broker: psutil.Process) -> base.Probe:
    """A bench.ingest probe filling ``usage`` over the timed span of one end-to-end run."""

    def start(procs: list[subprocess.Popen]) -> Callable[[], None]:
        workers = [psutil.Process(p.pid) for p in procs]
        pg = backends(conn)
        me = psutil.Process()
        w0, b0, p0, me0 = [cpu_s(w) for w in workers], cpu_s(broker), [cpu_s(b) for b in pg], cpu_s(me)
        a0, m0, t0 = active_ms(conn), machine_busy_s(), time.perf_counter()

        def finish() -> None:
            usage.seconds = time.perf_counter() - t0
            usage.machine = machine_busy_s() - m0
            usage.workers = [cpu_s(w) - c for w, c in zip(workers, w0, strict=True)]
            usage.broker = cpu_s(broker) - b0
            usage.me = cpu_s(me) - me0
            usage.backends = sum(cpu_s(b) - c for b, c in zip(pg, p0, strict=True))
            usage.backend_count = len(pg)
            time.sleep(0.6)  # backends flush their statistics at most every 500 ms when idle
            usage.db_active = (active_ms(conn) - a0) / 1000

        return finish

    return start


def measure(args: argparse.Namespace) -> dict:
    now_ms = int(time.time() * 1000)
    workloads = [base.gateway_batches(args.messages, now_ms - 6 * 3_600_000),
                 base.node_messages(args.node_messages, now_ms - 3 * 3_600_000, args.messages)]
    result: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "workloads": {w.name: {"messages": len(w.frames), "readings": w.readings} for w in workloads},
                    "runs": {}, "copy": {}}
    with base.private_database(args.server) as url, tempfile.TemporaryDirectory(prefix="ft-bench-scale-") as tmp:
        migrate(url)
        base.register(url)
        with db.connect(url, autocommit=True) as conn:
            result["postgres"] = conn.info.parameter_status("server_version")
            writes.prefer_lz4(conn)
            partitions.ensure_ahead(conn, 1)
            with PrivateMosquitto(Path(tmp) / "broker", overrides=base.BROKER) as broker:
                mosquitto = broker_process(broker)
                for w in workloads:
                    units = base.prepare_all(url, w)
                    rows = [row for unit in units for item in unit.items for row in item.rows]
                    copy_s = statistics.median(base.timed(conn, args.repeat,
                                                          lambda rows=rows: base.copy_rows(conn, rows)))
                    result["copy"][w.name] = round(w.readings / copy_s)
                    for workers in args.workers:
                        runs = []
                        for _ in range(args.repeat):
                            usage = Usage()
                            base.end_to_end(conn, url, broker, w, workers, Path(tmp),
                                            probe=probe_into(usage, conn, mosquitto))
                            runs.append(usage)
                        best = sorted(runs, key=lambda u: u.seconds)[len(runs) // 2]  # the median run
                        result["runs"][f"{w.name}_{workers}"] = {
                            "workload": w.name, "workers": workers, "readings_per_s": round(w.readings / best.seconds),
                            "messages_per_s": round(len(w.frames) / best.seconds),
                            "runs_readings_per_s": [round(w.readings / u.seconds) for u in runs],
                            "cpu_share": {k: round(v, 3) for k, v in best.shares().items()},
                            "per_worker_cpu_share": [round(c / best.seconds, 3) for c in best.workers],
                            "limit": best.limit()}
                    print(f"... {w.name} done", file=sys.stderr, flush=True)
    return result


def figures(result: dict) -> list[Figure]:
    out = []
    for r in result["runs"].values():
        w, n = r["workload"], r["workers"]
        sh = r["cpu_share"]
        note = (f"limit: {r['limit']}; CPU (cores): workers {sh['workers_total']:.2f}, broker {sh['broker']:.2f}, "
                f"postgres {sh['postgres_backends']:.2f}, machine {sh['machine']:.0%}")
        if n == 1:
            out.append(Figure(f"{w}_{n}_worker", r["readings_per_s"], "readings/s", f"COPY ({w})", result["copy"][w],
                              note=note))
        else:
            one = result["runs"][f"{w}_1"]["readings_per_s"]
            out.append(Figure(f"{w}_{n}_workers", r["readings_per_s"], "readings/s", "1 worker", one, note=note))
    return out


def table(result: dict) -> str:
    lines = [f"ingest scale-out {result['date']}, nproc {result['nproc']}, load {result['load_average']}, "
             f"PostgreSQL {result['postgres']}; COPY: " + ", ".join(f"{k} {v:,}/s" for k, v in result["copy"].items()),
             f"{'run':11} {'readings/s':>10} {'msgs/s':>7} {'workers':>8} {'broker':>7} {'pg':>6} {'db busy':>8} "
             f"{'machine':>8} {'others':>7}  limit"]
    for name, r in result["runs"].items():
        sh = r["cpu_share"]
        lines.append(f"{name:11} {r['readings_per_s']:>10,} {r['messages_per_s']:>7,} {sh['workers_total']:>8.2f} "
                     f"{sh['broker']:>7.2f} {sh['postgres_backends']:>6.2f} {sh['db_active']:>8.2f} "
                     f"{sh['machine']:>8.0%} {sh['others']:>7.2f}  {r['limit']}")
    lines.append("CPU columns: cores used over the timed span (workers summed; db busy: statements executing; "
                 "others: processes outside the benchmark)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.ingest_scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="gateway batches of 1,000 readings (default 200)")
    parser.add_argument("--node-messages", type=int, default=10_000, help="single-node messages (default 10,000)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per worker count; the median run is reported")
    parser.add_argument("--server", default=base.DEFAULT_SERVER, help="PostgreSQL server for the bench database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        args.workers = [int(n) for n in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers: comma-separated counts expected, not {args.workers!r}")
    if 1 not in args.workers or min(args.workers) < 1 or min(args.messages, args.node_messages, args.repeat) < 1:
        parser.error("--workers must include 1 (the baseline); counts, --messages and --repeat must be >= 1")
    return args


def run(quick: bool) -> list[Figure]:
    sizes = ["--messages", "10", "--node-messages", "500", "--repeat", "1"] if quick else []
    return figures(measure(parse_args(sizes)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
