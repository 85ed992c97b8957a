"""Credit features at scale: 100,000 farm-seasons of daily rollups to one feature frame, target under a minute.

``python -m bench.credit_features [--farm-seasons 100000] [--chunk 20000] [--days 120] [--json]``

The rollups are SYNTHETIC (``hardware.synthetic_farms.generate_world``: a weather station with air
temperature and a rain counter and a soil-moisture node per farm, one row per device, metric and
day, about 3 % of days missing), generated chunk by chunk outside the timing.  Timed: building every
feature (``rural_credit.features.build.build_features`` with registry and application) for each
chunk, as the cloud would hand over a batch of farm-seasons.  Printed: the figure, the target and
their ratio (target / figure: above 1 meets it).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench import Figure
from hardware.synthetic_farms import generate_world
from rural_credit.features.build import build_features

TARGET_S = 60.0


def measure(farm_seasons: int, chunk: int, days: int) -> dict:
    built_s, rows, features = 0.0, 0, 0
    for first in range(0, farm_seasons, chunk):
        size = min(chunk, farm_seasons - first)
        world = generate_world(size, seed=first, first_index=first, season_days=days)
        t0 = time.perf_counter()
        result = build_features(world.rollups, world.seasons, world.registry, world.applications)
        built_s += time.perf_counter() - t0
        rows += len(world.rollups)
        features = result.values.shape[1]
        assert len(result.values) == size
    return {"farm_seasons": farm_seasons, "rollup_rows": rows, "features": features, "season_days": days,
            "build_s": round(built_s, 2), "farm_seasons_per_s": round(farm_seasons / built_s),
            "target_s": TARGET_S, "ratio": round(TARGET_S / built_s, 2)}


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): the build time against the target (scaled for --quick)."""
    seasons = 5_000 if quick else 100_000
    r = measure(seasons, min(seasons, 20_000), 120)
    return [Figure(f"features_{seasons}_farm_seasons", r["build_s"], "s", target=TARGET_S * seasons / 100_000,
                   higher_is_better=False,
                   note=f"{r['farm_seasons_per_s']:,} farm-seasons/s, {r['features']} features")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--farm-seasons", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = measure(args.farm_seasons, args.chunk, args.days)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"credit features (synthetic rollups), nproc {os.cpu_count()}")
    print(f"  {r['farm_seasons']:,} farm-seasons x {r['season_days']} days, {r['rollup_rows']:,} daily rollup rows, "
          f"{r['features']} features, chunks of {args.chunk:,}")
    print(f"{'figure':>12} {'target':>8} {'ratio':>6}")
    print(f"{r['build_s']:>10.2f} s {r['target_s']:>6.0f} s {r['ratio']:>6.2f}   "
          f"({r['farm_seasons_per_s']:,} farm-seasons/s)")


if __name__ == "__main__":
    main()
