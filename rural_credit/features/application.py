"""Features from the farm registry and the loan application: what the farmer and the registry declare.

These are not measured, so they carry no data-trust mask of their own; they are what an
application-only scorecard has, and the baseline the farm-data features must add to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rural_credit.trust.frames import APPLICATIONS, REGISTRY, FrameError, require

REGISTRY_COLUMNS = ("area_ha", "crop", "tenure", "seasons_observed")
APPLICATION_COLUMNS = ("amount", "term_months", "purpose", "prior_loans", "prior_repaid_share", "first_loan",
                       "amount_per_ha")


def registry_features(registry: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """Per farm-season of ``keys`` (farm_id, season_id): the farm's registry row (NaN where none)."""
    require(registry, REGISTRY, "registry")
    if registry["farm_id"].duplicated().any():
        raise FrameError("registry: one row per farm_id expected")
    joined = keys[["farm_id"]].merge(registry[list(REGISTRY)], on="farm_id", how="left")
    out = joined[list(REGISTRY_COLUMNS)].copy()
    out["area_ha"] = pd.to_numeric(out["area_ha"], errors="coerce")
    out["seasons_observed"] = pd.to_numeric(out["seasons_observed"], errors="coerce")
    out.index = keys.index
    return out


def application_features(applications: pd.DataFrame, keys: pd.DataFrame, area_ha: pd.Series) -> pd.DataFrame:
    """Per farm-season of ``keys``: the application's terms and credit history, NaN where none applied."""
    require(applications, APPLICATIONS, "applications")
    if applications.duplicated(["farm_id", "season_id"]).any():
        raise FrameError("applications: one row per (farm_id, season_id) expected")
    a = keys[["farm_id", "season_id"]].merge(applications[list(APPLICATIONS)], on=["farm_id", "season_id"],
                                             how="left")
    numbers = {c: pd.to_numeric(a[c], errors="coerce") for c in ("amount", "term_months", "prior_loans",
                                                                  "prior_repaid")}
    if (numbers["prior_repaid"] > numbers["prior_loans"]).any():
        raise FrameError("applications: prior_repaid exceeds prior_loans")
    out = pd.DataFrame({
        "amount": numbers["amount"],
        "term_months": numbers["term_months"],
        "purpose": a["purpose"],
        "prior_loans": numbers["prior_loans"],
        "prior_repaid_share": numbers["prior_repaid"] / numbers["prior_loans"].where(numbers["prior_loans"] > 0),
        "first_loan": (numbers["prior_loans"] == 0).astype(float).where(numbers["prior_loans"].notna()),
        "amount_per_ha": numbers["amount"] / area_ha.where(area_ha > 0).to_numpy(),
    })
    out.index = keys.index
    return out.replace([np.inf, -np.inf], np.nan)
