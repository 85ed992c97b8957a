"""Query latency of the series layer over a year of readings, with raw aggregation as the baseline.

``python -m bench.query_latency [--devices 100 --days 365 --interval-min 15 --metrics 5] [--json]``

The data set (devices × metrics × one reading per interval, for ``--days`` days ending at the
UTC midnight when it was generated, ten devices per farm) is generated once into a database of
its own on the server (``ft_bench_query_<size>``, created by the benchmark; no other database is
touched) and reused by later runs of the same size; ``--regenerate`` rebuilds it, ``--drop``
removes it.  Loading goes the way a writer's rows go: partitions for the day, then one COPY per
day into ``ft.readings`` (its rollup trigger included), then the rollups are computed.

Measured, each as p50/p95 over ``--repeat`` queries on random devices, metrics and farms:

* a 90-day hourly series of one device (``series(..., bucket=1 h)``: hourly rollups);
* a 1-year daily series of a farm (``farm_series(..., bucket=1 day)``: daily rollups);

and, as baselines, the same answers computed by a direct aggregate over the raw rows (checked
equal to the layer's), with the ratio baseline / layer.  Target: p95 <= 50 ms for both.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import Figure
from cloud.store import db, partitions, rollups, scope, series
from cloud.store.migrate import migrate
from cloud.store.rollups import ORIGIN

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEVICES_PER_FARM = 10
TENANT = "bench"

_RAW_DEVICE = """
SELECT b.bucket, a.v, a.lo, a.hi, coalesce(a.n, 0)
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, make_interval(secs => %(s)s)) AS b(bucket)
LEFT JOIN (
    SELECT date_bin(make_interval(secs => %(s)s), ts, %(o)s) AS bucket, avg(value) AS v, min(value) AS lo,
           max(value) AS hi, count(value) AS n
    FROM ft.readings
    WHERE device_id = %(d)s AND metric_id = %(m)s AND ts >= %(first)s AND ts < %(stop)s AND value IS NOT NULL
    GROUP BY 1
) a USING (bucket)
ORDER BY b.bucket
"""

_RAW_FARM = """
WITH per_device AS (
    SELECT device_id, date_bin(make_interval(secs => %(s)s), ts, %(o)s) AS bucket, avg(value) AS v,
           min(value) AS lo, max(value) AS hi, count(value) AS n
    FROM ft.readings
    WHERE device_id IN (SELECT id FROM ft.devices WHERE farm_id = %(f)s) AND metric_id = %(m)s
      AND ts >= %(first)s AND ts < %(stop)s AND value IS NOT NULL
    GROUP BY 1, 2
)
SELECT b.bucket, a.v, a.lo, a.hi, coalesce(a.n, 0)
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, make_interval(secs => %(s)s)) AS b(bucket)
LEFT JOIN (SELECT bucket, avg(v) AS v, min(lo) AS lo, max(hi) AS hi, sum(n) AS n FROM per_device GROUP BY 1) a
USING (bucket)
ORDER BY b.bucket
"""


def database_url(server_url: str, name: str) -> str:
    return make_conninfo(**(conninfo_to_dict(server_url) | {"dbname": name}))


def bench_name(args: argparse.Namespace) -> str:
    return f"ft_bench_query_{args.devices}x{args.metrics}x{args.days}d_{args.interval_min}m"


def ready(url: str) -> dict | None:
    """The stored description of a complete data set in ``url``, or None."""
    try:
        with db.connect(url) as conn:
            if conn.execute("SELECT to_regclass('bench.meta')").fetchone() == (None,):
                return None
            row = conn.execute("SELECT meta FROM bench.meta WHERE complete").fetchone()
            return row[0] if row else None
    except psycopg.OperationalError:
        return None


def recreate(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def generate(url: str, args: argparse.Namespace) -> dict:
    """Build the data set; returns its description, with how long each phase took."""
    t0 = time.perf_counter()
    migrate(url, backend=args.backend)
    end = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)
    start = end - timedelta(days=args.days)
    rng = random.Random(42)
    farms = math.ceil(args.devices / DEVICES_PER_FARM)
    devices = [f"dev-{i:05d}" for i in range(args.devices)]
    with db.connect(url) as conn:
        conn.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, 'Benchmark')", (TENANT,))
        for f in range(farms):
            conn.execute("INSERT INTO ft.farms (id, tenant_id, name) VALUES (%s, %s, %s)",
                         (f"farm-{f:03d}", TENANT, f"farm {f}"))
        for i, device in enumerate(devices):
            conn.execute("INSERT INTO ft.devices (id, tenant_id, farm_id, kind) VALUES (%s, %s, %s, 'bus')",
                         (device, TENANT, f"farm-{i // DEVICES_PER_FARM:03d}"))
        metric_ids = [conn.execute("INSERT INTO ft.metrics (name, unit) VALUES (%s, 'u') RETURNING id",
                                   (f"metric_{k}",)).fetchone()[0] for k in range(args.metrics)]
        conn.commit()
        partitions.ensure_partitions(conn, start, end)
        t_load = time.perf_counter()
        per_day = 24 * 60 // args.interval_min
        rows = 0
        for day in range(args.days):
            buf = io.StringIO()
            base = start + timedelta(days=day)
            for d, device in enumerate(devices):
                phase = d / 7
                for step in range(per_day):
                    ts = (base + timedelta(minutes=step * args.interval_min)).isoformat()
                    seq = day * per_day + step
                    for k, mid in enumerate(metric_ids):
                        value = 20 + 8 * math.sin((seq + d) / 48 + k + phase) + rng.random()
                        buf.write(f"{TENANT}\t{device}\t{mid}\t{ts}\t{value:.3f}\t\\N\t0\t2\t1\t{seq}\n")
                        rows += 1
            with conn.cursor() as cur, cur.copy(
                "COPY ft.readings (tenant_id, device_id, metric_id, ts, value, value_text, quality, trust, epoch,"
                " seq) FROM STDIN"
            ) as copy:
                copy.write(buf.getvalue())
            conn.commit()
            if args.progress and (day + 1) % 30 == 0:
                print(f"  loaded {day + 1}/{args.days} days ({rows:,} rows, {time.perf_counter() - t_load:.0f} s)")
        load_s = time.perf_counter() - t_load
        t_roll = time.perf_counter()
        plain = db.backend(conn) == "postgres"
        if plain:  # the marks cover every hour of the load: range refreshes do the same work in bulk
            conn.execute("TRUNCATE ft.rollup_dirty")
            conn.commit()
        window = start
        while window < end:
            rollups.refresh_rollups(conn, window, min(window + timedelta(days=30), end))
            window += timedelta(days=30)
        rollup_s = time.perf_counter() - t_roll
    with db.connect(url, autocommit=True) as conn:
        t_vac = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) ft.readings")
        if plain:
            conn.execute("VACUUM (ANALYZE) ft.readings_hourly, ft.readings_daily")
        vacuum_s = time.perf_counter() - t_vac
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        meta = {
            "backend": db.backend(conn), "devices": args.devices, "metrics": args.metrics, "days": args.days,
            "interval_min": args.interval_min, "farms": farms, "rows": rows, "start": start.isoformat(),
            "end": end.isoformat(), "load_s": round(load_s, 1), "rows_per_s": round(rows / load_s),
            "rollup_s": round(rollup_s, 1), "vacuum_s": round(vacuum_s, 1),
            "total_s": round(time.perf_counter() - t0, 1), "database_bytes": size,
        }
        conn.execute("CREATE SCHEMA bench")
        conn.execute("CREATE TABLE bench.meta (meta jsonb NOT NULL, complete boolean NOT NULL)")
        conn.execute("INSERT INTO bench.meta VALUES (%s, true)", (psycopg.types.json.Jsonb(meta),))
    return meta


def timed(fn: Callable[[], list], repeat: int) -> tuple[list[float], list]:
    for _ in range(3):  # warm caches and plans
        fn()
    times, answers = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        answers.append(fn())
        times.append((time.perf_counter() - t) * 1000)
    return times, answers


def summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(statistics.quantiles(times, n=20)[18], 2)}


def same(points: list[series.Point], rows: list[tuple]) -> bool:
    if len(points) != len(rows):
        return False
    for p, (ts, value, low, high, n) in zip(points, rows, strict=True):
        if p.ts != ts or p.n != int(n) or (p.min, p.max) != (low, high):
            return False
        if (p.value is None) != (value is None) or (value is not None and not math.isclose(p.value, value,
                                                                                              rel_tol=1e-9)):
            return False
    return True


def measure(url: str, meta: dict, repeat: int) -> dict:
    end = datetime.fromisoformat(meta["end"])
    rng = random.Random(7)
    picks = [(f"dev-{rng.randrange(meta['devices']):05d}", f"farm-{rng.randrange(meta['farms']):03d}",
              f"metric_{rng.randrange(meta['metrics'])}") for _ in range(repeat + 3)]
    results = {}
    with db.connect(url, autocommit=True) as conn:
        scope.platform_session(conn)  # the rollup views filter by scope (migration 040); the raw rows need none here
        ids = dict(conn.execute("SELECT name, id FROM ft.metrics").fetchall())
        cases = {
            "device_90d_hourly": (timedelta(days=90), rollups.HOUR, "device"),
            "farm_365d_daily": (timedelta(days=365), rollups.DAY, "farm"),
        }
        for name, (span, step, kind) in cases.items():
            start = end - span
            first, stop = rollups.floor(start, step), rollups.ceil(end, step)
            it = iter(picks)
            it_raw = iter(picks)

            def layer(kind=kind, start=start, step=step, it=it) -> list:
                device, farm, metric = next(it)
                if kind == "device":
                    return series.series(conn, device, metric, start, end, step)
                return series.farm_series(conn, farm, metric, start, end, step)

            def raw(kind=kind, step=step, it=it_raw, first=first, stop=stop) -> list:
                device, farm, metric = next(it)
                params = {"first": first, "stop": stop, "last": stop - step, "s": step.total_seconds(), "o": ORIGIN,
                          "d": device, "f": farm, "m": ids[metric]}
                return conn.execute(_RAW_DEVICE if kind == "device" else _RAW_FARM, params).fetchall()

            layer_times, layer_answers = timed(layer, repeat)
            raw_times, raw_answers = timed(raw, repeat)
            agree = all(same(a, b) for a, b in zip(layer_answers, raw_answers, strict=True))
            lay, base = summary(layer_times), summary(raw_times)
            results[name] = {
                "buckets": len(layer_answers[0]),
                "layer": lay,
                "baseline_raw_aggregate": base,
                "ratio_p95": round(base["p95_ms"] / lay["p95_ms"], 1),
                "same_answers": agree,
                "target_p95_ms": 50,
                "met": lay["p95_ms"] <= 50,
            }
    return results


def measure_all(args: argparse.Namespace) -> dict:
    """Generate the data set unless a complete one of this size exists, then measure both queries."""
    name = bench_name(args)
    url = database_url(args.server_url, name)
    meta = None if args.regenerate else ready(url)
    generated = meta is None
    if meta is None:
        if args.progress:
            print(f"generating {name} ...")
        recreate(args.server_url, name)
        meta = generate(url, args)
    return {"database": name, "generated_now": generated, "data": meta, "results": measure(url, meta, args.repeat)}


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): each query's p95 against the raw aggregate's p95."""
    size = dict(devices=10, days=30, interval_min=60, repeat=20) if quick else dict(devices=100, days=365,
                                                                                  interval_min=15, repeat=100)
    args = argparse.Namespace(**size, server_url=DEFAULT_SERVER, metrics=5, backend=None, regenerate=False,
                              progress=False)
    report = measure_all(args)
    out = []
    for case, r in report["results"].items():
        if not r["same_answers"]:
            raise RuntimeError(f"{case}: the series layer and the raw aggregate disagree")
        out.append(Figure(f"{case}_p95", r["layer"]["p95_ms"], "ms", "raw aggregate p95",
                          r["baseline_raw_aggregate"]["p95_ms"], target=float(r["target_p95_ms"]),
                          higher_is_better=False,
                          note=f"{report['data']['rows']:,} rows, p50 {r['layer']['p50_ms']} ms"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-url", default=DEFAULT_SERVER,
                        help="a database on the server to create the benchmark's own database from")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval-min", type=int, default=15)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--backend", choices=["timescale", "postgres"], default=None,
                        help="layout of a newly generated database (default: TimescaleDB if the server has it)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data set even if it exists")
    parser.add_argument("--drop", action="store_true", help="drop the benchmark's database and exit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if min(args.devices, args.days, args.metrics, args.repeat) < 1 or not 1 <= args.interval_min <= 1440:
        parser.error("--devices, --days, --metrics, --repeat must be >= 1; --interval-min 1..1440")
    args.progress = not args.json
    name = bench_name(args)
    if args.drop:
        with psycopg.connect(args.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        print(f"dropped {name}")
        return
    report = measure_all(args)
    meta, results, generated = report["data"], report["results"], report["generated_now"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"data: {meta['rows']:,} rows ({meta['devices']} devices x {meta['metrics']} metrics x {meta['days']} days"
          f" every {meta['interval_min']} min, {meta['farms']} farms), backend {meta['backend']},"
          f" {meta['database_bytes'] / 1e9:.2f} GB")
    print(f"generation: load {meta['load_s']} s ({meta['rows_per_s']:,} rows/s by COPY), rollups {meta['rollup_s']} s,"
          f" vacuum {meta['vacuum_s']} s, total {meta['total_s']} s" + ("" if generated else " (earlier run, reused)"))
    print(f"{'query':<20} {'buckets':>7} {'p50 ms':>8} {'p95 ms':>8} {'raw p50':>8} {'raw p95':>8} {'ratio':>6} same")
    for case, r in results.items():
        print(f"{case:<20} {r['buckets']:>7} {r['layer']['p50_ms']:>8} {r['layer']['p95_ms']:>8}"
              f" {r['baseline_raw_aggregate']['p50_ms']:>8} {r['baseline_raw_aggregate']['p95_ms']:>8}"
              f" {r['ratio_p95']:>5}x {r['same_answers']}")


if __name__ == "__main__":
    main()
