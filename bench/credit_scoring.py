"""Credit scoring latency: one application with its explanation, and a batch of 100,000 farms.

``python -m bench.credit_scoring [--applications 2000] [--rows 100000] [--json]``

The model is a scorecard trained on the German Credit data (``rural_credit.scorecard.german_credit``,
fetched with pip when not cached) and read back from its JSON file, as a scoring process would.

* ``explain_p95_ms``: p95 (and p50) of ``ScoreModel.explain`` on ``--applications`` applications
  drawn from the data set: score, grade, points per characteristic, reason codes, counterfactuals.
  Target: <= 50 ms.
* ``batch_s``: ``ScoreModel.score_frame`` with reason codes on ``--rows`` rows, each column sampled
  independently from the data set so the rows are new combinations.  Target: <= 60 s.
  Baseline in the same run: the same batch scored without reason codes (``batch_scores_only_s``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import pandas as pd

from bench import Figure
from rural_credit.scorecard import german_credit
from rural_credit.scorecard.scoring import ScoreModel
from rural_credit.scorecard.training import TrainingConfig, fit_scorecard, target_vector

EXPLAIN_TARGET_MS, BATCH_TARGET_S = 50.0, 60.0


def measure(applications: int, rows: int, seed: int = 0) -> dict[str, float]:
    frame = german_credit.load(download=True)
    bad, bad_value = target_vector(frame, german_credit.TARGET, german_credit.BAD)
    x = frame.drop(columns=[german_credit.TARGET])
    fit = fit_scorecard(x, bad, TrainingConfig(n_bootstrap=0), name="german", target=german_credit.TARGET,
                        bad_value=bad_value)
    scorer = ScoreModel.from_json(fit.model.to_json())
    rng = np.random.default_rng(seed)
    records = x.to_dict(orient="records")
    timings = []
    for i in rng.integers(0, len(records), applications):
        t0 = time.perf_counter()
        scorer.explain(records[i])
        timings.append((time.perf_counter() - t0) * 1000)
    timings.sort()
    batch = pd.DataFrame({c: x[c].to_numpy()[rng.integers(0, len(x), rows)] for c in x.columns})
    t0 = time.perf_counter()
    scored = scorer.score_frame(batch)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.score_frame(batch, reasons=False)
    plain_s = time.perf_counter() - t0
    assert len(scored) == rows
    return {
        "characteristics": len(fit.model.characteristics),
        "explain_p50_ms": statistics.median(timings),
        "explain_p95_ms": timings[int(0.95 * (len(timings) - 1))],
        "explain_target_ms": EXPLAIN_TARGET_MS,
        "batch_rows": rows,
        "batch_s": batch_s,
        "batch_target_s": BATCH_TARGET_S,
        "batch_scores_only_s": plain_s,
    }


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): latency and batch time against their targets."""
    r = measure(200, 10_000) if quick else measure(2000, 100_000)
    return [
        Figure("explain_one_application_p95", round(r["explain_p95_ms"], 2), "ms", target=EXPLAIN_TARGET_MS,
               higher_is_better=False, note=f"p50 {r['explain_p50_ms']:.2f} ms"),
        Figure(f"score_batch_{r['batch_rows']}_with_reasons", round(r["batch_s"], 2), "s", "scores only",
               round(r["batch_scores_only_s"], 2), target=BATCH_TARGET_S * r["batch_rows"] / 100_000,
               higher_is_better=False),
    ]


def table(r: dict[str, float]) -> str:
    return "\n".join([
        f"scorecard: German Credit, {r['characteristics']} characteristics, scored from its JSON model file",
        f"  one application with explanation  p95 {r['explain_p95_ms']:7.2f} ms  (p50 {r['explain_p50_ms']:.2f} ms; "
        f"target <= {r['explain_target_ms']:g} ms, {r['explain_target_ms'] / r['explain_p95_ms']:.0f}x headroom)",
        f"  batch of {r['batch_rows']:,} with reason codes {r['batch_s']:7.2f} s   "
        f"(target <= {r['batch_target_s']:g} s, "
        f"{r['batch_target_s'] / r['batch_s']:.0f}x headroom; {r['batch_rows'] / r['batch_s']:,.0f} rows/s)",
        f"baseline: the same batch, scores and grades only  {r['batch_scores_only_s']:.2f} s "
        f"(reason codes cost {r['batch_s'] / r['batch_scores_only_s']:.1f}x)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.credit_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--applications", type=int, default=2000, help="single applications timed (default 2,000)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the batch (default 100,000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args.applications, args.rows)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
