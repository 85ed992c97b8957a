"""`fieldtrust credit demo-world`, `train` on it and `assess`: the command line an officer's demo runs (SYNTHETIC)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from fieldtrust.cli.main import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_demo_world_train_and_assess(tmp_path: Path) -> None:
    world, models = tmp_path / "world", tmp_path / "models"
    result = runner.invoke(app, ["credit", "demo-world", "--farms", "800", "--out", str(world), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in (world / "SYNTHETIC.txt").read_text()
    registry = pd.read_csv(world / "registry.csv")
    assert registry["synthetic"].all() and len(registry) == 800
    assert set(pd.read_csv(world / "trust.csv").columns) >= {"farm_id", "trust", "coverage", "basis"}

    result = runner.invoke(app, ["credit", "train", "--data", str(world / "training.csv"), "--target", "defaulted",
                                 "--out", str(models), "--owner", "tester", "--folds", "3"])
    assert result.exit_code == 0, result.output

    app_file = tmp_path / "application.json"
    app_file.write_text(json.dumps({"farm_id": "syn-0000005", "season_id": "2025-04", "amount": 400,
                                    "term_months": 9, "purpose": "inputs", "prior_loans": 1, "prior_repaid": 1}))
    result = runner.invoke(app, ["credit", "assess", "--model", str(models), "--farm-data", str(world),
                                 "--application", str(app_file), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["farm_id"] == "syn-0000005" and record["decision"]["outcome"] in {"approve", "refer", "decline"}
    assert 0 < record["trust"]["trust"] <= 1 and record["limit"]["currency"] == "USD"

    result = runner.invoke(app, ["credit", "assess", "--model", str(models), "--farm-data", str(world),
                                 "--application", str(app_file), "--language", "zh-CN"])
    assert result.exit_code == 0 and "decision:" in result.output, result.output

    app_file.write_text(json.dumps({"farm_id": "nobody", "season_id": "2025-04"}))
    result = runner.invoke(app, ["credit", "assess", "--model", str(models), "--farm-data", str(world),
                                 "--application", str(app_file)])
    assert result.exit_code == 2 and "farm 'nobody' is not in registry.csv" in result.output
