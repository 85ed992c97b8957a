"""``fieldtrust credit``: train a scorecard on a CSV, score and monitor with it, approve versions, assess loans.

Thin: it reads files and prints; the work is in ``rural_credit.scorecard``.  ``--model DIR`` is a
registry folder (its champion, else its latest version) or one version's folder (``DIR/v0001``).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error[/red] {message}", highlight=False)
    return typer.Exit(2)


def _read_csv(path: Path):  # -> pandas.DataFrame
    import pandas as pd

    if not path.is_file():
        raise _fail(f"no file {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise _fail(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _fail(f"{path} is not a readable CSV: {exc}") from None
    if frame.empty:
        raise _fail(f"{path} has a header but no rows")
    return frame


def _resolve(model_dir: Path, version: str | None):  # -> (label, ScoreModel)
    from rural_credit.scorecard.model_file import ModelFileError
    from rural_credit.scorecard.registry import ModelRegistry, RegistryError
    from rural_credit.scorecard.scoring import ScoreModel

    try:
        if (model_dir / "model.json").is_file():  # one version's folder
            registry, version = ModelRegistry(model_dir.parent), model_dir.name
            if not (model_dir / "card.json").is_file():
                return f"{model_dir / 'model.json'} (no model card)", ScoreModel.from_file(model_dir / "model.json")
        else:
            if not model_dir.is_dir():
                raise _fail(f"no model folder {model_dir}")
            registry = ModelRegistry(model_dir)
        card, model = registry.resolve(version)
    except (RegistryError, ModelFileError) as exc:
        raise _fail(str(exc)) from None
    role = f", {card.role}" if card.role else ""
    return f"{card.name} {card.version} ({card.state}{role})", ScoreModel(model)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Training data: a CSV with one row per applicant."),
    target: str = typer.Option(..., "--target", help="The column saying whether the credit went bad."),
    bad: str | None = typer.Option(None, "--bad", help="The target value that means bad (default: 1 of 0/1)."),
    out_dir: Path = typer.Option(..., "--out", help="Model registry folder; the model becomes its next version."),
    exclude: list[str] = typer.Option([], "--exclude", help="A column not to use (identifiers, …); repeatable."),
    owner: str | None = typer.Option(None, "--owner", help="Who trains it (default: the login name)."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the data file's stem)."),
    folds: int = typer.Option(5, "--folds", min=2, max=20, help="Cross-validation folds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold split and the bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
) -> None:
    """Train a scorecard with stratified cross-validation and store it as a draft version."""
    from rural_credit.scorecard.registry import DataSummary, ModelRegistry, file_sha256
    from rural_credit.scorecard.training import TrainingConfig, TrainingError
    from rural_credit.scorecard.training import train as train_scorecard

    frame = _read_csv(data)
    if out_dir.exists() and not out_dir.is_dir():
        raise _fail(f"--out {out_dir} is a file, not a folder")
    config = TrainingConfig(folds=folds, seed=seed)
    try:
        result = train_scorecard(frame, target, bad, config, name=name or data.stem, exclude=tuple(exclude),
                                 data_sha256=file_sha256(data))
    except TrainingError as exc:
        raise _fail(str(exc)) from None
    model = result.model
    summary = DataSummary(sha256=result.data_sha256, source=data.name, rows=model.training_rows,
                          bads=model.training_bads, bad_rate=model.training_bads / model.training_rows)
    metrics = {"cross_validated": {**result.cv.metrics.as_dict(), "folds": folds, "fold_auc": result.cv.fold_auc},
               "in_sample": result.in_sample.as_dict()}
    card = ModelRegistry(out_dir).register(model, owner or getpass.getuser(), summary, metrics, result.dropped)
    if as_json:
        print(card.model_dump_json(indent=2))
        return
    cv, ins = result.cv.metrics, result.in_sample
    out.print(f"trained {card.name} on {data}: {summary.rows} rows, {summary.bads} bad ({summary.bad_rate:.1%}); "
              f"{len(model.characteristics)} of {len(model.characteristics) + len(result.dropped)} "
              "characteristics kept", highlight=False)
    out.print(f"cross-validated ({folds} folds): AUC {cv.auc}  Gini {cv.gini}  KS {cv.ks}", highlight=False)
    out.print(f"in-sample:                    AUC {ins.auc}  Gini {ins.gini}  KS {ins.ks}", highlight=False)
    for col, why in result.dropped.items():
        out.print(f"  dropped {col}: {why}", highlight=False)
    out.print(f"saved {out_dir / card.version} ({card.state}, owner {card.owner}); approve with "
              f"`fieldtrust credit approve --model {out_dir} --version {card.version} --by NAME`", highlight=False)


@app.command()
def score(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder or one version's folder."),
    data: Path = typer.Option(..., "--data", help="Applications to score: a CSV."),
    version: str | None = typer.Option(None, "--version", help="Registry version (default: champion, else latest)."),
    id_column: str | None = typer.Option(None, "--id", help="A column to copy to the output to identify rows."),
    out_file: Path | None = typer.Option(None, "--out", help="Write the CSV here instead of standard output."),
    as_json: bool = typer.Option(False, "--json", help="One JSON explanation per row instead of CSV."),
) -> None:
    """Scores, grades and up to four reason codes per application (CSV), or full explanations (--json)."""
    from rural_credit.scorecard.scoring import ScoringError

    label, scorer = _resolve(model_dir, version)
    frame = _read_csv(data)
    if id_column is not None and id_column not in frame.columns:
        raise _fail(f"--id {id_column!r}: {data} has no such column")
    try:
        result = scorer.score_frame(frame)
    except ScoringError as exc:
        raise _fail(f"{data}: {exc}") from None
    err.print(f"scored {len(frame)} rows with {label}", highlight=False)
    if as_json:
        sink = out_file.open("w") if out_file else sys.stdout
        for i, row in enumerate(frame.to_dict(orient="records")):
            record = scorer.explain(row).as_dict()
            if id_column is not None:
                record = {id_column: _json_safe(frame[id_column].iloc[i]), **record}
            sink.write(json.dumps(record, default=str) + "\n")
        if out_file:
            sink.close()
        return
    if id_column is not None:
        result.insert(0, id_column, frame[id_column].to_numpy())
    result.to_csv(out_file if out_file else sys.stdout, index=False, float_format="%.6f")


@app.command()
def monitor(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder or one version's folder."),
    data: Path = typer.Option(..., "--data", help="Recent applications: a CSV."),
    version: str | None = typer.Option(None, "--version", help="Registry version (default: champion, else latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Population stability against the training data: PSI of the score, CSI of each characteristic."""
    from rural_credit.scorecard.monitoring import EPSILON, SHIFT, WATCH, monitor
    from rural_credit.scorecard.scoring import ScoringError

    label, scorer = _resolve(model_dir, version)
    frame = _read_csv(data)
    try:
        report = monitor(scorer, frame)
    except ScoringError as exc:
        raise _fail(f"{data}: {exc}") from None
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    out.print(f"{report.rows} rows of {data} against the training data of {label}: {report.verdict}",
              highlight=False)
    table = Table("", "index", "verdict")
    table.add_row("score (PSI)", f"{report.score.index:.4f}", report.score.verdict)
    for c in report.characteristics:
        table.add_row(f"{c.name} (CSI)", f"{c.index:.4f}", c.verdict)
    out.print(table)
    out.print(f"stable < {WATCH:g} <= watch <= {SHIFT:g} < shift; empty shares count as {EPSILON:g}",
              highlight=False)


@app.command("models")
def list_models(model_dir: Path = typer.Option(..., "--model", help="Registry folder.")) -> None:
    """The versions in a registry with their state, role and cross-validated AUC."""
    from rural_credit.scorecard.registry import ModelRegistry, RegistryError

    try:
        cards = ModelRegistry(model_dir).cards()
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    if not cards:
        raise _fail(f"{model_dir} holds no model")
    table = Table("version", "name", "state", "role", "owner", "approved by", "CV AUC", "rows")
    for c in cards:
        auc = c.metrics.get("cross_validated", {}).get("auc", {}).get("value")
        table.add_row(c.version, c.name, c.state, c.role or "", c.owner, c.approved_by or "",
                      "" if auc is None else f"{auc:.3f}", str(c.data.rows))
    out.print(table)


def _registry_action(model_dir: Path, action):  # -> ModelCard
    from rural_credit.scorecard.registry import ModelRegistry, RegistryError

    try:
        return action(ModelRegistry(model_dir))
    except RegistryError as exc:
        raise _fail(str(exc)) from None


@app.command()
def approve(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder."),
    version: str = typer.Option(..., "--version", help="The draft version to approve."),
    by: str = typer.Option(..., "--by", help="Who approves (not the model's owner)."),
) -> None:
    """Approve a draft version (four eyes: someone other than its owner)."""
    card = _registry_action(model_dir, lambda r: r.approve(version, by))
    out.print(f"{card.version} approved by {card.approved_by}", highlight=False)


@app.command()
def promote(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder."),
    version: str = typer.Option(..., "--version", help="An approved version."),
    challenger: bool = typer.Option(False, "--challenger", help="Make it a challenger instead of the champion."),
) -> None:
    """Make an approved version the champion (the previous champion becomes a challenger)."""
    card = _registry_action(model_dir, lambda r: r.promote(version, "challenger" if challenger else "champion"))
    out.print(f"{card.version} is now {card.role}", highlight=False)


@app.command()
def retire(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder."),
    version: str = typer.Option(..., "--version", help="The version to retire."),
) -> None:
    """Retire a version: it keeps its files but no longer scores."""
    card = _registry_action(model_dir, lambda r: r.retire(version))
    out.print(f"{card.version} retired", highlight=False)


@app.command("demo-world")
def demo_world(
    farms: int = typer.Option(2000, "--farms", min=10, help="Farm-seasons to generate."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the SYNTHETIC world's CSV files into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world."),
    null_world: bool = typer.Option(False, "--null-world", help="Outcomes that ignore the farm data."),
) -> None:
    """Write a SYNTHETIC world of farms (registry, seasons, rollups, trust, applications, outcomes) as CSV."""
    from fieldtrust.demo.credit_world import write_demo_world
    from hardware.synthetic_farms import generate_world

    rows = write_demo_world(generate_world(farms, seed=seed, null_world=null_world), out_dir)
    out.print(f"wrote a SYNTHETIC world to {out_dir} (see SYNTHETIC.txt): "
              + ", ".join(f"{name} {n:,}" for name, n in rows.items()), highlight=False, soft_wrap=True)
    out.print(f"train on it: fieldtrust credit train --data {out_dir / 'training.csv'} --target defaulted "
              f"--out MODELS", highlight=False, soft_wrap=True)


@app.command()
def experiment(
    farms: int = typer.Option(4000, "--farms", min=500, help="Farm-seasons per world."),
    seed: int = typer.Option(3, "--seed", help="Seed of the worlds."),
    folds: int = typer.Option(5, "--folds", min=2, max=20, help="Cross-validation folds."),
    corruption: bool = typer.Option(True, "--corruption/--no-corruption", help="Also run the fault experiment."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """On SYNTHETIC farms: AUC with and without farm data (real and null world), and injected faults."""
    from dataclasses import asdict

    from fieldtrust.demo import credit_world as experiments
    from rural_credit.scorecard.training import TrainingConfig

    lifts = experiments.lift_experiment(farms, seed, TrainingConfig(folds=folds))
    rows = experiments.corruption_experiment(*experiments.corruption_world()) if corruption else []
    if as_json:
        print(json.dumps({"lift": [r.as_dict() for r in lifts], "corruption": [asdict(r) for r in rows]}, indent=2))
        return
    out.print(f"SYNTHETIC farms, {folds}-fold cross-validated AUC (95% CI), same folds for both scorecards",
              highlight=False, soft_wrap=True)
    out.print(experiments.lift_table(lifts), highlight=False, soft_wrap=True)
    if rows:
        out.print("\nfaults injected into some farms' raw readings (trust, score, decision: clean → faulty)",
                  highlight=False, soft_wrap=True)
        out.print(experiments.corruption_table(rows), highlight=False, soft_wrap=True)


@app.command()
def assess(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder or one version's folder."),
    farm_data: Path = typer.Option(..., "--farm-data", help="Farm data folder (e.g. from `credit demo-world`)."),
    application: Path = typer.Option(..., "--application", help="The application: a JSON object."),
    version: str | None = typer.Option(None, "--version", help="Registry version (default: champion, else latest)."),
    language: str = typer.Option("en", "--language", help="Language of the reasons: en or zh-CN."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole assessment as JSON."),
) -> None:
    """Assess one application: trust, features, score, reasons, decision, limit and products."""
    from rural_credit.assessment.farm_folder import assess_from_folder, read_farm_folder
    from rural_credit.assessment.notice import adverse_action_notice
    from rural_credit.assessment.pipeline import AssessmentError, Assessor

    label, scorer = _resolve(model_dir, version)
    if language not in ("en", "zh-CN"):
        raise _fail(f"--language must be en or zh-CN; got {language!r}")
    try:
        request = json.loads(application.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(f"{application}: {exc}") from None
    if not isinstance(request, dict):
        raise _fail(f"{application} must hold one JSON object")
    try:
        result = assess_from_folder(Assessor.demo(scorer, label), read_farm_folder(farm_data), request)
    except (AssessmentError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str))
        return
    e, d, t = result.explanation, result.decision, result.trust
    trust = "no farm data" if t.trust is None else f"{t.trust:.2f}"
    coverage = "none" if t.coverage is None else f"{t.coverage:.0%}"
    out.print(f"{result.farm_id} {result.season_id} with {label}: score {e.score}, grade {e.grade}; "
              f"data trust {trust}, coverage {coverage}", highlight=False, soft_wrap=True)
    out.print(f"decision: {d.outcome.upper()}", highlight=False, soft_wrap=True)
    for r in d.reasons:
        out.print(f"  - {r.text(language)}", highlight=False, soft_wrap=True)
    for r in e.reasons:
        out.print(f"  {r.code} {r.characteristic}: -{r.points_lost} points", highlight=False, soft_wrap=True)
    limit = "none" if d.limit is None else f"{d.limit:,.0f} {d.currency}"
    out.print(f"limit: {limit}; product: {d.product_id or '-'}", highlight=False, soft_wrap=True)
    if d.outcome == "decline":
        out.print(adverse_action_notice(d, result.counterfactual_hint).text[language], highlight=False, soft_wrap=True)


def _json_safe(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


_DB_OPTION = typer.Option(None, "--database-url", help="PostgreSQL DSN (default: FIELDTRUST_DATABASE_URL).")


def _in_tenant(tenant: str, database_url: str | None, action):  # noqa: ANN001, ANN202 - (conn) -> result
    """``action(conn)`` in one transaction of the owner scoped to ``tenant``, as ``cli:<user>`` (cloud.credit)."""
    from cloud.credit.errors import CreditError
    from cloud.store.scope import tenant_scope
    from fieldtrust.cli import cloud_support as support

    def run(conn):  # noqa: ANN001, ANN202
        if conn.execute("SELECT 1 FROM ft.tenants WHERE id = %s", (tenant,)).fetchone() is None:
            raise _fail(f"no tenant {tenant!r}")
        tenant_scope(conn, tenant)
        try:
            return action(conn)
        except CreditError as exc:
            raise _fail(str(exc)) from None

    return support.in_transaction(support.settings(database_url), run)


def _cli_actor():  # noqa: ANN202 - a cloud.auth.principal.Principal
    from cloud.auth.scopes import admin_principal

    return admin_principal().model_copy(update={"id": f"cli:{getpass.getuser()}"})


@app.command()
def deploy(
    model_dir: Path = typer.Option(..., "--model", help="Registry folder (its champion) or one version's folder."),
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose applications it will score."),
    version: str | None = typer.Option(None, "--version", help="Registry version (default: the champion)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Deploy an approved scorecard to a tenant's credit service as its champion (audited)."""
    from cloud.credit import models

    deployed = _in_tenant(tenant, database_url,
                          lambda conn: models.deploy(conn, _cli_actor(), tenant, model_dir, version))
    out.print(f"{deployed.name} {deployed.version} (model SHA-256 {deployed.model_sha256[:12]}…) is the champion "
              f"of {tenant}", highlight=False, soft_wrap=True)


@app.command()
def shelf(
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose product shelf this is."),
    shelf_file: Path = typer.Option(..., "--shelf", help="Product shelf, YAML or JSON (rural_credit products)."),
    policy_file: Path | None = typer.Option(None, "--policy", help="Credit policy file (default: the sample)."),
    crops_file: Path | None = typer.Option(None, "--crops", help="Crop yield and price table (default: the sample)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Set a tenant's product shelf, credit policy and crop table (a new version; audited)."""
    from cloud.credit import shelves

    def put(conn):  # noqa: ANN001, ANN202
        docs = [shelves.read_document(p) if p is not None else None for p in (shelf_file, policy_file, crops_file)]
        return shelves.put_shelf(conn, _cli_actor(), tenant, *docs)

    stored = _in_tenant(tenant, database_url, put)
    out.print(f"{tenant}: shelf version {stored.version} ({', '.join(p.id for p in stored.shelf.products)}; "
              f"policy {stored.policy.version})", highlight=False, soft_wrap=True)
