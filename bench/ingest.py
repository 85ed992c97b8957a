"""Ingest throughput, broker to committed rows, against the COPY ceiling and the write path alone.

``python -m bench.ingest [--messages 200] [--node-messages 10000] [--repeat 3] [--json]``
(also ``fieldtrust bench ingest``)

It runs against a private Mosquitto (its own port and folder) and a private database (a new one
on the server at ``FIELDTRUST_TEST_DATABASE_URL``, else the local PostgreSQL, dropped at the end;
the embedded PostgreSQL when no server is reachable): the machine's services are not disturbed.

Two workloads, each measured against its own baseline rows:

* gateway batches: 200 telemetry bodies of 5 records, 1,000 gateway-attested readings a message;
* single-node messages: a batch carrying one node frame of 5 records (node-signed), the worst
  case per reading (a message, a signature, a ledger row for every 5 readings).

Figures, all from one run:

* ``copy``: the same rows by one plain binary COPY into ``ft.readings`` (its rollup trigger
  included): the ceiling;
* ``write_path``: the database side of the ingest (``cloud.ingest.commit``: ledger claims, COPY,
  batches, in transactions of ``ingest_batch_rows`` readings) fed messages already parsed and
  verified — what is left when Python parsing and the broker are taken out;
* ``scheme_direct`` / ``scheme_merge``: the rows alone through ``write_readings``'s two schemes
  (COPY with a staging fallback, against staging + INSERT … ON CONFLICT DO NOTHING always);
* ``e2e_*``: worker processes (``fieldtrust cloud ingest``) subscribed and stopped (SIGSTOP)
  while every message is published into the broker, then timed from SIGCONT until the last
  batch is committed — so the publisher's own cost is not counted.  1 and 2 workers, with
  their default commit threads (two each) unless ``--committers`` says otherwise.

Each figure is the median of ``--repeat`` runs and carries its ``baseline`` (the workload's COPY rate)
and ``ratio``; the end-to-end figures list their runs too.  Target:
``e2e_batches_1_worker`` >= 50 % of COPY.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import Figure
from cloud.config import CloudSettings
from cloud.ingest.commit import commit_units
from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler, Prepared
from cloud.store import db, partitions, registry, writes
from cloud.store.migrate import migrate
from contract import topics
from contract.telemetry import encode_body, record, sign, telemetry
from fieldtrust import processes
from fieldtrust.services.mosquitto import PrivateMosquitto

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = os.environ.get("FIELDTRUST_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
KEK = bytes(range(32))
GW_KEY = hashlib.sha256(b"bench gateway").digest()
TENANT, FARM, GW = "bench", "bench-farm", "gw-bench"
SPEC = "jxct-soil-7in1"
METRICS = [("soil_moisture", "%", 20.0), ("soil_temperature", "Cel", 15.0), ("soil_ec", "uS/cm", 800.0),
           ("soil_ph", "pH", 6.5), ("soil_nitrogen", "mg/kg", 40.0)]
BUS_DEVICES = [f"soil-{i:03d}" for i in range(50)]
NODES = [f"node-{i:03d}" for i in range(20)]
BODIES_PER_BATCH = 200
#: the transaction size the worker uses by default
BATCH_ROWS: int = CloudSettings.model_fields["ingest_batch_rows"].default
TOPIC = topics.gateway(TENANT, GW, "up")
BROKER = {"max_packet_size": str(2 * 1024 * 1024), "max_queued_messages": "0", "log_type": "error"}


def node_key(node: str) -> bytes:
    return hashlib.sha256(f"bench node {node}".encode()).digest()


# -- workloads ------------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    frames: list[bytes]
    readings: int


def _records(i: int) -> list[dict]:
    return [record(name, unit, round(base + (i % 97) / 10, 2), t) for t, (name, unit, base) in enumerate(METRICS)]


def signed_batch(seq: int, tel: list[bytes], nodes: list[bytes], gw: str = GW, key: bytes = GW_KEY,
                 tenant: str = TENANT) -> bytes:
    """A signed gateway batch, spliced the way ``edge_agent.uplink.Uplink.build_frame`` splices it."""
    header = encode_body({"v": 1, "k": "batch", "gw": gw, "tenant": tenant, "ep": 1, "seq": seq, "sw": "edge/bench",
                          "sent": int(time.time() * 1000)})
    body = (header[:-1] + b',"tel":[' + b",".join(tel) + b'],"nodes":['
            + b",".join(json.dumps(n.decode()).encode() for n in nodes) + b"]}")
    return sign(key, body)


def gateway_batches(messages: int, start_ms: int) -> Workload:
    frames = []
    for m in range(messages):
        tel = []
        for j in range(BODIES_PER_BATCH):
            i = m * BODIES_PER_BATCH + j
            dev, seq = BUS_DEVICES[i % len(BUS_DEVICES)], i // len(BUS_DEVICES)
            tel.append(encode_body(telemetry(dev, 1, seq, start_ms + seq * 1000, _records(i), "edge/bench", 0)))
        frames.append(signed_batch(m, tel, []))
    return Workload("batches", frames, messages * BODIES_PER_BATCH * len(METRICS))


def node_messages(messages: int, start_ms: int, first_seq: int) -> Workload:
    frames = []
    for m in range(messages):
        node, seq = NODES[m % len(NODES)], m // len(NODES)
        body = encode_body(telemetry(node, 1, seq, start_ms + seq * 1000, _records(m), "fw/bench", 5))
        frames.append(signed_batch(first_seq + m, [], [sign(node_key(node), body)]))
    return Workload("node", frames, messages * len(METRICS))


# -- the private database and broker --------------------------------------------------------------


@contextlib.contextmanager
def private_database(server_url: str) -> Iterator[str]:
    """A new database for the run, dropped afterwards; on the embedded PostgreSQL when no server answers."""
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=3):
            pass
    except psycopg.OperationalError:
        from fieldtrust.services import postgres

        with postgres.temporary_server() as server:
            yield server.create_database(f"ft_bench_ingest_{uuid.uuid4().hex[:8]}")
        return
    name = f"ft_bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(**(conninfo_to_dict(server_url) | {"dbname": name}))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def register(url: str) -> None:
    with db.connect(url) as conn:
        registry.register_tenant(conn, TENANT, "Benchmark")
        registry.register_farm(conn, TENANT, FARM, "Benchmark farm")
        registry.register_gateway(conn, TENANT, GW, FARM, GW_KEY, KEK, None, None)
        for dev in BUS_DEVICES:
            registry.register_device(conn, TENANT, dev, "bus", None, GW, SPEC, None, KEK)
        for node in NODES:
            registry.register_device(conn, TENANT, node, "node", None, GW, SPEC, node_key(node), KEK)
        conn.commit()


def reset(conn: psycopg.Connection) -> None:
    """Empty what a run writes, so every figure starts from the same tables."""
    tables = ["ft.readings", "ft.messages", "ft.batches", "ft.dead_letters", "ft.ingest_workers"]
    row = conn.execute("SELECT to_regclass('ft.rollup_dirty') IS NOT NULL").fetchone()
    if row and row[0]:
        tables.append("ft.rollup_dirty")
    conn.execute(f"TRUNCATE {', '.join(tables)}")
    conn.execute("VACUUM ANALYZE ft.readings")


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


# -- measurements ---------------------------------------------------------------------------------


def prepare_all(url: str, workload: Workload) -> list[Prepared]:
    with db.connect(url, autocommit=True) as conn:
        handler = Handler(Directory(conn, KEK), max_past_days=30, max_future_s=600)
        units = [handler.prepare(TOPIC, frame) for frame in workload.frames]
    refused = [u for u in units if u.batch is None or u.dead_letters]
    if refused:
        raise RuntimeError(f"the benchmark's own messages were refused: {refused[0].dead_letters[:1]}")
    return units


def timed(conn: psycopg.Connection, repeat: int, run: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(repeat):
        reset(conn)
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def copy_rows(conn: psycopg.Connection, rows: list[writes.ReadingRow]) -> None:
    with conn.transaction():
        writes.copy_readings(conn, rows)


def write_path(conn: psycopg.Connection, units: list[Prepared]) -> None:
    group: list[Prepared] = []
    size = 0
    for unit in units + [None]:  # type: ignore[list-item]
        if unit is not None:
            group.append(unit)
            size += unit.readings
        if group and (unit is None or size >= BATCH_ROWS):
            with conn.transaction():
                commit_units(conn, group)
            group, size = [], 0


def scheme(conn: psycopg.Connection, rows: list[writes.ReadingRow], name: writes.WriteScheme) -> None:
    for start in range(0, len(rows), BATCH_ROWS):
        with conn.transaction():
            writes.write_readings(conn, rows[start : start + BATCH_ROWS], name)


def spawn_worker(url: str, mqtt_url: str, worker_id: str, group: str, log: Path,
                 committers: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "FIELDTRUST_DATABASE_URL": url, "FIELDTRUST_MQTT_URL": mqtt_url, "FIELDTRUST_KEK": KEK.hex(),
           "FIELDTRUST_INGEST_GROUP": group}
    extra = ["--committers", str(committers)] if committers is not None else []
    with log.open("ab") as out:
        return processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "cloud", "ingest", "--worker-id",
                                worker_id, "--session-expiry", "0", "--no-migrate", *extra],
                               stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def publish_all(host: str, port: int, frames: list[bytes]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-gw-{uuid.uuid4().hex[:6]}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(TOPIC, frame, qos=1) for frame in frames]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()


#: called with the stopped workers just before they are released; returns what to call after the last commit
Probe = Callable[[list[subprocess.Popen]], Callable[[], None]]


def end_to_end(conn: psycopg.Connection, url: str, broker: PrivateMosquitto, workload: Workload, workers: int,
               workdir: Path, committers: int | None = None, probe: Probe | None = None) -> float:
    """Seconds from releasing ``workers`` stopped workers (their messages queued) to the last commit.

    ``probe`` (bench/ingest_scaleout.py) measures the processes over exactly the timed span.
    """
    reset(conn)
    group = f"ingest-{uuid.uuid4().hex[:6]}"
    logs = [workdir / f"{group}-{i}.log" for i in range(workers)]
    procs = [spawn_worker(url, f"mqtt://{broker.host}:{broker.port}", f"bench-{group}-{i}", group, log, committers)
             for i, log in enumerate(logs)]
    try:
        deadline = time.monotonic() + 120  # start-up is not timed; on a loaded machine imports alone take a while
        while not all(log.exists() and "subscribed to" in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker did not start: " + " | ".join(log.read_text()[-500:] for log in logs))
            time.sleep(0.05)
        for proc in procs:
            os.kill(proc.pid, signal.SIGSTOP)
        publish_all(broker.host, broker.port, workload.frames)
        finish = probe(procs) if probe is not None else None
        t0 = time.perf_counter()
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)
        expected = len(workload.frames)
        deadline = time.monotonic() + 600
        while count(conn, "ft.batches") < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all batches committed: {count(conn, 'ft.batches')} of {expected}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        if finish is not None:
            finish()
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            processes.stop(proc)
    stored = count(conn, "ft.readings")
    if stored != workload.readings:
        raise RuntimeError(f"{stored} readings stored, {workload.readings} expected")
    return elapsed


# -- the run --------------------------------------------------------------------------------------


def figure(readings: int, messages: int | None, seconds: float, baseline: float | None) -> dict:
    rate = readings / seconds
    out: dict = {"readings_per_s": round(rate), "seconds": round(seconds, 3)}
    if messages is not None:
        out["messages_per_s"] = round(messages / seconds)
    if baseline is not None:
        out["baseline"] = round(baseline)
        out["ratio"] = round(rate / baseline, 3)
    return out


def measure(args: argparse.Namespace) -> dict:
    now_ms = int(time.time() * 1000)
    workloads = [gateway_batches(args.messages, now_ms - 6 * 3_600_000),
                 node_messages(args.node_messages, now_ms - 3 * 3_600_000, args.messages)]
    result: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "nproc": os.cpu_count(), "python": platform.python_version(),
        "workloads": {w.name: {"messages": len(w.frames), "readings": w.readings} for w in workloads},
        "committers": args.committers,  # commit threads per worker (None: the worker's default)
        "figures": {},
    }
    figures = result["figures"]
    with private_database(args.server) as url, tempfile.TemporaryDirectory(prefix="ft-bench-ingest-") as tmp:
        migrate(url)
        register(url)
        with db.connect(url, autocommit=True) as conn:
            result["postgres"] = conn.info.parameter_status("server_version")
            result["backend"] = db.backend(conn)
            writes.prefer_lz4(conn)  # as the worker's writing connection does (no effect on the COPY of readings)
            partitions.ensure_ahead(conn, 1)
            with PrivateMosquitto(Path(tmp) / "broker", overrides=BROKER) as broker:
                for w in workloads:
                    units = prepare_all(url, w)
                    rows = [row for unit in units for item in unit.items for row in item.rows]
                    copy_s = statistics.median(timed(conn, args.repeat, lambda rows=rows: copy_rows(conn, rows)))
                    ceiling = w.readings / copy_s
                    figures[f"copy_{w.name}"] = figure(w.readings, None, copy_s, None)
                    path_s = statistics.median(timed(conn, args.repeat, lambda u=units: write_path(conn, u)))
                    figures[f"write_path_{w.name}"] = figure(w.readings, len(w.frames), path_s, ceiling)
                    if w.name == "batches":
                        for name in ("direct", "merge"):
                            secs = statistics.median(timed(conn, args.repeat,
                                                           lambda n=name, r=rows: scheme(conn, r, n)))
                            figures[f"scheme_{name}"] = figure(w.readings, None, secs, ceiling)
                    for workers in (1, 2):
                        runs = [end_to_end(conn, url, broker, w, workers, Path(tmp), args.committers)
                                for _ in range(args.repeat)]
                        name = f"e2e_{w.name}_{workers}_worker{'s' if workers > 1 else ''}"
                        figures[name] = figure(w.readings, len(w.frames), statistics.median(runs), ceiling)
                        figures[name]["runs_readings_per_s"] = [round(w.readings / r) for r in runs]
                    print(f"... {w.name} done", file=sys.stderr, flush=True)
    return result


def figures(result: dict) -> list[Figure]:
    """The result protocol's figures (bench/__init__.py): each rate against its workload's COPY."""
    out = []
    for name, f in result["figures"].items():
        if name.startswith("copy_"):
            out.append(Figure(name, f["readings_per_s"], "readings/s", note="plain binary COPY: the ceiling"))
            continue
        out.append(Figure(name, f["readings_per_s"], "readings/s", f"copy_{'node' if 'node' in name else 'batches'}",
                          f["baseline"], target=0.5 if name == "e2e_batches_1_worker" else None, target_on="ratio"))
    return out


def run(quick: bool) -> list[Figure]:
    sizes = dict(messages=10, node_messages=500, repeat=1) if quick else dict(messages=200, node_messages=10_000,
                                                                             repeat=3)
    return figures(measure(argparse.Namespace(**sizes, server=DEFAULT_SERVER, committers=None)))


def table(result: dict) -> str:
    lines = [f"ingest benchmark {result['date']}, nproc={result['nproc']}, PostgreSQL {result['postgres']} "
             f"({result['backend']}), Python {result['python']}",
             f"{'figure':28} {'readings/s':>11} {'messages/s':>11} {'seconds':>8} {'COPY/s':>10} {'ratio':>6}"]
    for name, f in result["figures"].items():
        lines.append(f"{name:28} {f['readings_per_s']:>11,} {f.get('messages_per_s', ''):>11} {f['seconds']:>8} "
                     f"{f.get('baseline', ''):>10} {f.get('ratio', ''):>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="gateway batches of 1,000 readings (default 200)")
    parser.add_argument("--node-messages", type=int, default=10_000, help="single-node messages (default 10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure; the median is reported")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server for the private database")
    parser.add_argument("--committers", type=int, default=None,
                        help="commit threads of every worker (default: the worker's own default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
