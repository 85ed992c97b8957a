"""Experiments that prove the credit pipeline on SYNTHETIC farms (``hardware.synthetic_farms``).

1. **Lift** (:func:`lift_experiment`): on one world, cross-validate two scorecards with the same
   folds — application-only (registry and application features) and application + farm data (the
   agronomic features too) — and compare out-of-fold AUC.  The same on the **null world**, where
   outcomes do not depend on the farm: a correct pipeline shows no lift there (≤ 0.01 AUC).  The
   data-quality features (season length, coverage) are in neither model: they route to review.
2. **Corruption** (:func:`corruption_experiment`): raw readings of a few neighbouring farms, assessed
   once clean and once with faults injected into some farms (a frozen sensor, a clock six hours
   off, a re-key without a maintenance record, readings out of range).  The faulty farms' trust
   drops and they are referred; the clean farms' trust, score and decision do not change.

This module belongs to the demo (``fieldtrust credit experiment`` prints the tables, tests assert
their properties, docs/credit.md reports them): it imports ``hardware`` (the synthetic world),
which only tests, benches and the demo may, so it lives here and not in ``rural_credit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hardware import synthetic_farms as sf
from rural_credit.assessment.pipeline import DATA_QUALITY_FEATURES, Assessor, assess
from rural_credit.features.application import APPLICATION_COLUMNS, REGISTRY_COLUMNS
from rural_credit.features.build import Features, build_features
from rural_credit.features.catalogue import NAMES
from rural_credit.scorecard.metrics import Discrimination
from rural_credit.scorecard.scoring import ScoreModel
from rural_credit.scorecard.training import TrainingConfig, cross_validate, fit_scorecard
from rural_credit.trust import checks
from rural_credit.trust import score as trust_score

APPLICATION_ONLY = (*REGISTRY_COLUMNS, *APPLICATION_COLUMNS)
WITH_FARM_DATA = tuple(n for n in NAMES if n not in DATA_QUALITY_FEATURES)
TARGET = "defaulted"


def world_features(world: sf.World) -> tuple[Features, np.ndarray]:
    """Features of every farm-season of the world and its outcomes (1 = defaulted), row for row."""
    features = build_features(world.rollups, world.seasons, world.registry, world.applications)
    outcomes = world.outcomes.set_index(["farm_id", "season_id"])["defaulted"]
    y = outcomes.reindex(features.values.index).to_numpy(dtype=int)
    return features, y


def training_frame(world: sf.World) -> pd.DataFrame:
    """The farm-data model's training table (features for scoring plus the target), SYNTHETIC."""
    features, y = world_features(world)
    frame = features.for_scoring()[list(WITH_FARM_DATA)].reset_index(drop=True)
    frame[TARGET] = y
    frame.attrs["synthetic"] = True
    return frame


@dataclass(frozen=True)
class Lift:
    world: str  # "real" or "null"
    farms: int
    bad_rate: float
    application_only: Discrimination
    with_farm_data: Discrimination
    kept_application_only: int
    kept_with_farm_data: int

    @property
    def lift(self) -> float:
        return self.with_farm_data.auc.value - self.application_only.auc.value

    def as_dict(self) -> dict[str, Any]:
        return {"world": self.world, "farms": self.farms, "bad_rate": self.bad_rate,
                "auc_application_only": self.application_only.auc.value,
                "auc_application_only_ci": [self.application_only.auc.ci_low, self.application_only.auc.ci_high],
                "auc_with_farm_data": self.with_farm_data.auc.value,
                "auc_with_farm_data_ci": [self.with_farm_data.auc.ci_low, self.with_farm_data.auc.ci_high],
                "gini_application_only": self.application_only.gini.value,
                "gini_with_farm_data": self.with_farm_data.gini.value,
                "ks_application_only": self.application_only.ks.value,
                "ks_with_farm_data": self.with_farm_data.ks.value,
                "lift_auc": self.lift, "characteristics_application_only": self.kept_application_only,
                "characteristics_with_farm_data": self.kept_with_farm_data}


def lift(world: sf.World, config: TrainingConfig) -> Lift:
    """Both scorecards cross-validated on the same folds of one world (see the module docstring)."""
    features, y = world_features(world)
    x = features.for_scoring().reset_index(drop=True)
    base = cross_validate(x[list(APPLICATION_ONLY)], y, config)
    full = cross_validate(x[list(WITH_FARM_DATA)], y, config)

    def kept(cv: Any) -> int:
        return int(np.median([len(m.characteristics) for m in cv.fold_models]))

    return Lift("null" if world.null_world else "real", len(y), float(y.mean()), base.metrics, full.metrics,
                kept(base), kept(full))


def lift_experiment(farms: int = 4000, seed: int = 3, config: TrainingConfig | None = None) -> list[Lift]:
    """The lift on a world and on its null twin (same seed: same farms, applications and sensor data)."""
    config = config or TrainingConfig()
    return [lift(sf.generate_world(farms, seed=seed, null_world=null), config) for null in (False, True)]


def lift_table(results: list[Lift]) -> str:
    lines = [f"{'world':<6} {'farms':>6} {'bad rate':>8}  {'AUC application only':>26}  "
             f"{'AUC + farm data':>26}  {'lift':>7}"]
    for r in results:
        a, b = r.application_only.auc, r.with_farm_data.auc
        lines.append(f"{r.world:<6} {r.farms:>6} {r.bad_rate:>8.1%}  {str(a):>26}  {str(b):>26}  {r.lift:>+7.3f}")
    return "\n".join(lines)


# -- corruption -----------------------------------------------------------------------------------

#: fault name → (farm index, injector over the readings); farms are syn-farm-1 …
FAULTS: dict[str, tuple[int, Callable[[pd.DataFrame, str], pd.DataFrame]]] = {
    "frozen soil sensor": (2, lambda r, start: sf.flat_line(r, "syn-farm-2-soil", "soil_moisture",
                                                            str(pd.Timestamp(start) + pd.Timedelta(days=3)))),
    "weather station clock 6 h late": (3, lambda r, start: sf.clock_off(r, "syn-farm-3-weather", 6.0)),
    "soil node re-keyed, no record": (4, lambda r, start: sf.rekey(r, "syn-farm-4-soil",
                                                                   str(pd.Timestamp(start) + pd.Timedelta(days=7)))),
    "soil readings out of range": (5, lambda r, start: sf.out_of_range(r, "syn-farm-5-soil", "soil_moisture",
                                                                       150.0, every=2)),
}


@dataclass(frozen=True)
class CorruptionRow:
    farm_id: str
    fault: str  # "" for a clean farm
    trust_clean: float
    trust_faulty: float
    score_clean: int
    score_faulty: int
    outcome_clean: str
    outcome_faulty: str
    reasons_faulty: list[str]
    untrusted_faulty: list[str]  # features present but from a quantity that failed the checks
    newly_neutral: list[str]  # scored characteristics that earn neutral points only with the faults


def corruption_world(farms: int = 6, days: int = 21, start: str = "2025-04-01", model_farms: int = 3000,
                     seed: int = 5) -> tuple[Assessor, sf.World, pd.DataFrame]:
    """A farm-data scorecard trained on a world with ``days``-day seasons, the world, and raw readings
    of ``farms`` neighbouring farms over one such season (``syn-farm-1`` …)."""
    world = sf.generate_world(model_farms, seed=seed, season_start=start, season_days=days)
    fit = fit_scorecard(training_frame(world).drop(columns=[TARGET]), world_features(world)[1],
                        TrainingConfig(n_bootstrap=0), name="synthetic-farm-data", target=TARGET)
    assessor = Assessor.demo(ScoreModel.from_json(fit.model.to_json()), "synthetic-farm-data (in memory)")
    readings = sf.farm_readings(farms=farms, days=days, start=start)
    return assessor, world, readings


def corruption_experiment(assessor: Assessor, world: sf.World, readings: pd.DataFrame,
                          faults: dict[str, tuple[int, Callable[[pd.DataFrame, str], pd.DataFrame]]] | None = None
                          ) -> list[CorruptionRow]:
    """Assess every farm of ``readings`` clean and with ``faults`` injected (see the module docstring).

    Each farm borrows the registry row and application of one world farm (renamed), so its farm
    data is the only thing the two runs differ in.
    """
    faults = FAULTS if faults is None else faults
    farm_ids = sorted(readings["farm_id"].unique(), key=lambda f: int(f.rsplit("-", 1)[1]))
    start, end = readings["ts"].min().floor("D"), readings["ts"].max().floor("D") + pd.Timedelta(days=1)
    season = {"season_id": f"{start.year}-{start.month:02d}", "start": start, "end": end}
    limits = checks.limits_from_specs(sf.device_specs(farm_ids), interval_s={d: 600 for d in readings["device_id"]
                                                                               .unique()})
    events = sf.provisioning_events(readings)
    window = checks.Window(start, end)
    faulty = readings
    for _, (_, inject) in faults.items():
        faulty = inject(faulty, str(start.date()))
    fault_of = {f"syn-farm-{k}": name for name, (k, _) in faults.items()}
    reports = {kind: trust_score.assess(r, window, limits=limits, events=events)
               for kind, r in (("clean", readings), ("faulty", faulty))}
    rows = []
    for i, farm_id in enumerate(farm_ids):
        reg = world.registry.iloc[i]
        app = world.applications.iloc[i]
        farm = {"farm_id": farm_id, **{k: reg[k] for k in ("area_ha", "crop", "tenure", "seasons_observed")}}
        application = {k: app[k] for k in ("amount", "term_months", "purpose", "prior_loans", "prior_repaid")}
        a = {kind: assess(assessor, farm, application, season, trust_report=rep) for kind, rep in reports.items()}
        rows.append(CorruptionRow(
            farm_id, fault_of.get(farm_id, ""), float(a["clean"].trust.trust or 0.0),
            float(a["faulty"].trust.trust or 0.0), a["clean"].explanation.score, a["faulty"].explanation.score,
            a["clean"].decision.outcome, a["faulty"].decision.outcome,
            [r.key for r in a["faulty"].decision.reasons], a["faulty"].untrusted_features,
            sorted(_neutral(a["faulty"]) - _neutral(a["clean"]))))
    return rows


def _neutral(a: Any) -> set[str]:
    return {c.characteristic for c in a.explanation.contributions if c.status != "scored"}


def corruption_table(rows: list[CorruptionRow]) -> str:
    lines = [f"{'farm':<11} {'fault':<32} {'trust':>13} {'score':>9}  {'decision':<17} reasons (faulty)"]
    for r in rows:
        lines.append(f"{r.farm_id:<11} {r.fault or '(clean)':<32} {r.trust_clean:>5.2f} → {r.trust_faulty:<5.2f} "
                     f"{r.score_clean:>4}→{r.score_faulty:<4}  {r.outcome_clean:>7} → {r.outcome_faulty:<7} "
                     f"{', '.join(r.reasons_faulty)}")
    return "\n".join(lines)


def rollup_trust(world: sf.World) -> pd.DataFrame:
    """Trust per farm of a SYNTHETIC world that has only daily rollups: the parts computable without raw
    readings — origin (each device's origin weight) and day coverage — combined as ``trust.score``
    combines them.  The reading-level checks need raw readings; a world has none, so they count as passed.
    (For the demo and benches; the cloud computes real trust from readings.)"""
    r = world.rollups
    device = r["device_id"].astype("category")
    suffix_weight = {f"-{suffix}": trust_score.ORIGIN_WEIGHTS[o] for suffix, _, o, _ in sf.DEVICES}
    weight_of = np.array([next((w for s, w in suffix_weight.items() if str(d).endswith(s)), np.nan)
                          for d in device.cat.categories])
    farm = r["farm_id"].astype(str)
    n = r["n"].to_numpy(dtype=float)
    g = pd.DataFrame({"farm_id": farm, "w": weight_of[device.cat.codes.to_numpy()] * n, "n": n}).groupby("farm_id")
    seasons = world.seasons.set_index("farm_id")
    days = ((seasons["end"] - seasons["start"]) / pd.Timedelta(days=1)).round()
    metrics = sum(len(ms) for *_, ms in sf.DEVICES)
    coverage = (g.size() / (days.reindex(g.size().index) * metrics)).clip(upper=1.0)
    part_origin = g["w"].sum() / g["n"].sum()
    out = pd.DataFrame({"trust": part_origin ** trust_score.ORIGIN_WEIGHT_EXPONENT
                        * coverage ** trust_score.COVERAGE_EXPONENT, "coverage": coverage, "part_origin": part_origin})
    out = out.reindex(world.registry["farm_id"]).fillna({"coverage": 0.0})
    out.index.name = "farm_id"
    out["basis"] = "origin and coverage only (synthetic rollups, no raw readings)"
    return out.reset_index()


SYNTHETIC_NOTE = """SYNTHETIC DATA — generated by `fieldtrust credit demo-world` (hardware/synthetic_farms.py).
No row in this folder describes a real farm, farmer, loan or repayment.  Outcomes follow the documented
causal model of hardware/synthetic_farms.py (management → irrigation → soil-moisture stress → yield →
repayment).  trust.csv holds only the parts of trust computable from rollups (origin and coverage).
"""


def write_demo_world(world: sf.World, out: Any) -> dict[str, int]:
    """Write the world as a farm-data folder (``assessment.farm_folder``) plus applications.csv,
    outcomes.csv and training.csv (the farm-data scorecard's training table); rows per file."""
    from pathlib import Path

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tables = {"registry.csv": world.registry, "seasons.csv": world.seasons, "rollups.csv": world.rollups,
              "applications.csv": world.applications, "outcomes.csv": world.outcomes,
              "trust.csv": rollup_trust(world), "training.csv": training_frame(world).assign(synthetic=True)}
    for name, frame in tables.items():
        frame.to_csv(folder / name, index=False, float_format="%.6g")
    (folder / "SYNTHETIC.txt").write_text(SYNTHETIC_NOTE, encoding="utf-8")
    return {name: len(frame) for name, frame in tables.items()}
