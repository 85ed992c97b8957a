"""``fieldtrust bench ingest`` runs end to end on a tiny workload and reports every figure against its baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fieldtrust import processes

REPO = Path(__file__).resolve().parents[1]


def test_the_ingest_benchmark_reports_figures_with_baselines_and_ratios(pg_server_url, tmp_path):
    proc = processes.spawn(
        [sys.executable, "-m", "fieldtrust.cli.main", "bench", "ingest", "--messages", "2", "--node-messages", "20",
         "--repeat", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "FIELDTRUST_TEST_DATABASE_URL": pg_server_url},
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        processes.stop(proc)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out)
    assert result["workloads"] == {"batches": {"messages": 2, "readings": 2000}, "node": {"messages": 20,
                                                                                       "readings": 100}}
    figures = result["figures"]
    assert set(figures) == {
        "copy_batches", "write_path_batches", "scheme_direct", "scheme_merge", "e2e_batches_1_worker",
        "e2e_batches_2_workers", "copy_node", "write_path_node", "e2e_node_1_worker", "e2e_node_2_workers"}
    for name, figure in figures.items():
        assert figure["readings_per_s"] > 0
        if not name.startswith("copy_"):
            baseline = figures["copy_node" if name.endswith("node") or "_node_" in name else "copy_batches"]
            assert figure["baseline"] == baseline["readings_per_s"]
            assert abs(figure["ratio"] - figure["readings_per_s"] / figure["baseline"]) < 0.01
