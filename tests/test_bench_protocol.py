"""The benchmarks' result protocol (bench/__init__.py, bench/runner.py): every module speaks it, and
``fieldtrust bench all --quick --json`` gathers real figures through it.  Not a timing test: the sizes
are tiny and no figure's value is asserted, only its shape and its arithmetic."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import Figure, runner
from fieldtrust import processes

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "bench", *args], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        processes.stop(proc)
    return proc.returncode, out, err


@pytest.mark.parametrize("name", runner.MODULES)
def test_every_benchmark_module_has_run_quick(name):
    # read, not imported: the credit benchmarks' imports alone take half a minute on a busy machine
    tree = ast.parse((REPO / "bench" / f"{name}.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    run = functions["run"]
    assert [a.arg for a in run.args.args] == ["quick"] and ast.unparse(run.args.args[0].annotation) == "bool"
    assert ast.unparse(run.returns) == "list[Figure]"
    assert "main" in functions, f"python -m bench.{name} must keep working"


def test_every_benchmark_file_is_in_the_suite():
    files = {p.stem for p in (REPO / "bench").glob("*.py")} - {"__init__", "runner"}
    assert files == set(runner.MODULES)


def test_a_figure_computes_its_ratio_and_verdict():
    up = Figure("e2e", 120.0, "readings/s", "copy", 200.0, target=0.5, target_on="ratio")
    assert up.ratio == pytest.approx(0.6) and up.passed is True
    down = Figure("p95", 60.0, "ms", target=50.0, higher_is_better=False)
    assert down.ratio is None and down.passed is False
    assert Figure("plain", 1.0, "x").passed is None
    assert Figure.from_dict(up.as_dict()) == up
    with pytest.raises(ValueError, match="baseline"):
        Figure("half", 1.0, "x", baseline=2.0)
    with pytest.raises(ValueError, match="finite"):
        Figure("nan", float("nan"), "x")
    with pytest.raises(ValueError, match="not a figure"):
        Figure.from_dict({"name": "x", "value": 1, "unit": "u", "colour": "red"})


def test_bench_all_quick_json_gathers_figures_from_a_child_process():
    code, out, err = cli("all", "--quick", "--json", "--only", "outbox_rates")
    assert code == 0, err[-3000:]
    suite = json.loads(out)
    assert suite["ok"] is True and suite["quick"] is True
    assert {"cores", "cpu", "memory_gb", "date"} <= set(suite["machine"])
    [result] = suite["results"]
    assert result["module"] == "outbox_rates" and result["error"] is None
    names = {f["name"] for f in result["figures"]}
    assert {"outbox_capture", "outbox_drain_200_per_batch"} <= names
    for f in result["figures"]:
        assert f["value"] > 0 and f["baseline"] > 0 and f["baseline_name"]
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"])


def test_an_unknown_benchmark_is_refused_by_name():
    code, _, err = cli("all", "--only", "no_such_bench", timeout=60)
    assert code == 2
    assert "no_such_bench" in err


def test_a_failed_module_fails_the_suite_and_shows_in_the_table():
    suite = runner.Suite(runner.machine(), True, [
        runner.ModuleResult("ingest", 1.0, error="exit status 1: RuntimeError: boom"),
        runner.ModuleResult("outbox_rates", 1.0, [Figure("outbox_capture", 10.0, "readings/s", "sqlite", 20.0)]),
    ])
    assert not suite.ok
    table = runner.rows(suite)
    assert table[0][0] == "ingest" and table[0][-1] == "FAILED" and "boom" in table[0][4]
    assert table[1][1:7] == ["outbox_capture", "10", "readings/s", "sqlite", "20", "0.5"]


def test_write_docs_replaces_only_the_generated_block(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nIntro.\n\n## Field bus\n\nHand-written.\n")
    suite = runner.Suite(runner.machine(), False, [
        runner.ModuleResult("outbox_rates", 1.0, [Figure("outbox_capture", 10.0, "readings/s", "sqlite", 20.0)])])
    runner.write_docs(suite, doc)
    first = doc.read_text()
    assert first.index(runner.DOC_START) < first.index("## Field bus") and "Hand-written." in first
    assert "| outbox_rates | outbox_capture | 10 |" in first
    suite.results[0].figures = [Figure("outbox_capture", 30.0, "readings/s", "sqlite", 20.0)]
    runner.write_docs(suite, doc)
    second = doc.read_text()
    assert second.count(runner.DOC_START) == 1 and "| outbox_capture | 30 |" in second
    assert "| outbox_capture | 10 |" not in second and second.endswith("Hand-written.\n")
