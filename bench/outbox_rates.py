"""Outbox rates: sustained capture and drain (readings/s) and bytes per reading on disk.

``python -m bench.outbox_rates [--readings N] [--dir DIR]``

A *reading* here is one device's sample (a 7-record soil telemetry body, as the agent builds
it), captured the way the agent captures it: body built and checked, one committed transaction
with ``synchronous=FULL``.  Draining is the uplink's side: seal a batch (build and sign the
frame, move the items) and delete it on its receipt.  The baseline, measured in the same run on
the same disk, is a bare SQLite insert of the same bytes, one transaction each, with FULL and
with NORMAL: what a durable capture costs before any of our code.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from bench import Figure
from contract.telemetry import record
from device_specs.registry import get_spec
from edge_agent.agent import attested_body
from edge_agent.config import GatewayIdentity, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.sample import Sample
from edge_agent.uplink import Uplink

KEY = bytes(range(32))


def soil_sample(i: int) -> Sample:
    spec = get_spec("jxct-soil-7in1")
    records = [record(p.metric, p.unit, round(10 + (i % 500) / 10, 1), t_ms=k * 12) for k, p in enumerate(spec.points)]
    return Sample(f"soil-{i % 50:02d}", 1_764_480_000_000 + i * 1000, records, 0)


def enqueue_rate(box: Outbox, n: int) -> float:
    samples = [soil_sample(i) for i in range(n)]
    t0 = time.perf_counter()
    for s in samples:
        box.capture_attested(s.device_id, 1, lambda seq, s=s: attested_body(s, 1, seq))
    return n / (time.perf_counter() - t0)


def drain_rate(box: Outbox, batch_items: int) -> tuple[float, int]:
    gateway = GatewayIdentity(id="gw-bench", tenant="bench", key_hex=KEY.hex())
    uplink = Uplink(gateway, KEY, UplinkConfig(batch_max_items=batch_items), box, sw="edge/bench")
    n = box.pending
    frame_bytes = 0
    t0 = time.perf_counter()
    while box.pending:
        sealed = box.seal_batch(1, batch_items, newest_first=False, build=uplink.build_frame)
        assert sealed is not None
        frame_bytes += len(sealed.frame)
        box.mark_sent(sealed.ep, sealed.seq)
        box.confirm([(sealed.ep, sealed.seq)])
    return n / (time.perf_counter() - t0), frame_bytes


def disk_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size, pages, free = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count",
                                                                               "freelist_count"))
    db.close()
    return page_size * (pages - free)


def raw_sqlite_rate(path: Path, bodies: list[bytes], synchronous: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    t0 = time.perf_counter()
    for body in bodies:
        db.execute("BEGIN")
        db.execute("INSERT INTO t (data) VALUES (?)", (body,))
        db.execute("COMMIT")
    rate = len(bodies) / (time.perf_counter() - t0)
    db.close()
    return rate


def measure(readings: int = 2000, workdir: Path | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        box = Outbox(d / "outbox.db", 1 << 30)
        enqueue = enqueue_rate(box, readings)
        payload = box.stats().bytes
        on_disk = disk_bytes(d / "outbox.db")
        drain, frame_bytes = drain_rate(box, 200)
        box.close()
        bodies = [attested_body(soil_sample(i), 1, i) for i in range(readings)]
        return {
            "readings": readings,
            "enqueue_per_s": enqueue,
            "drain_per_s": drain,
            "body_bytes_per_reading": payload / readings,
            "disk_bytes_per_reading": on_disk / readings,
            "uplink_bytes_per_reading": frame_bytes / readings,
            "baseline_sqlite_full_per_s": raw_sqlite_rate(d / "raw-full.db", bodies, "FULL"),
            "baseline_sqlite_normal_per_s": raw_sqlite_rate(d / "raw-normal.db", bodies, "NORMAL"),
        }


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): capture and drain against bare SQLite, bytes against the body."""
    r = measure(300 if quick else 2000)
    full = "bare SQLite insert, WAL, synchronous=FULL"
    return [
        Figure("outbox_capture", round(r["enqueue_per_s"]), "readings/s", full, round(r["baseline_sqlite_full_per_s"])),
        Figure("outbox_drain_200_per_batch", round(r["drain_per_s"]), "readings/s", full,
               round(r["baseline_sqlite_full_per_s"])),
        Figure("outbox_on_disk", round(r["disk_bytes_per_reading"]), "bytes/reading", "telemetry body",
               round(r["body_bytes_per_reading"]), higher_is_better=False),
        Figure("uplink_frame", round(r["uplink_bytes_per_reading"]), "bytes/reading", "telemetry body",
               round(r["body_bytes_per_reading"]), higher_is_better=False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: the temp dir)")
    args = parser.parse_args()
    r = measure(args.readings, args.dir)
    print(f"outbox, {r['readings']:.0f} soil readings (7 records each), synchronous=FULL")
    print(f"  capture (one committed transaction each) {r['enqueue_per_s']:9.0f} readings/s")
    print(f"  drain (seal + sign + receipt, 200/batch) {r['drain_per_s']:9.0f} readings/s")
    print(f"  body bytes per reading                   {r['body_bytes_per_reading']:9.0f}")
    print(f"  on disk per reading (SQLite pages)       {r['disk_bytes_per_reading']:9.0f}")
    print(f"  uplink frame bytes per reading           {r['uplink_bytes_per_reading']:9.0f}")
    print("baseline: bare SQLite insert of the same bodies, one transaction each, WAL")
    print(f"  synchronous=FULL                         {r['baseline_sqlite_full_per_s']:9.0f} inserts/s")
    print(f"  synchronous=NORMAL                       {r['baseline_sqlite_normal_per_s']:9.0f} inserts/s")


if __name__ == "__main__":
    main()
