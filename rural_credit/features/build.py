"""One frame of features per farm-season, with an explicit mark of what is missing and what is untrusted.

Convention (agreed with the scorecard, which scores NaN at the neutral point):

* ``Features.values``: one row per farm-season (index ``farm_id``, ``season_id``), one column per
  catalogue feature, in catalogue order.  **NaN means missing** (no data, too little data, no
  application row).
* ``Features.trusted``: a boolean frame of the same shape.  False where the value is missing or
  where the sensor quantity it comes from failed the data-trust checks for that farm-season
  (``trust.score.TrustReport.metric_trust``: a metric with ``trusted`` False).  Declared data
  (registry, application) and coverage figures are trusted when present.
* ``Features.for_scoring()``: ``values`` with every untrusted cell set to NaN — what a scorecard
  reads, so untrusted data is scored neutrally instead of helping or hurting the farmer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rural_credit.features import agronomy
from rural_credit.features.application import application_features, registry_features
from rural_credit.features.catalogue import CATALOGUE, NAMES
from rural_credit.trust.frames import FrameError, require


@dataclass(frozen=True)
class Features:
    values: pd.DataFrame
    trusted: pd.DataFrame

    def for_scoring(self) -> pd.DataFrame:
        """Values with untrusted cells as NaN (missing, hence neutral in the scorecard)."""
        return self.values.where(self.trusted)


def build_features(rollups: pd.DataFrame, seasons: pd.DataFrame, registry: pd.DataFrame | None = None,
                   applications: pd.DataFrame | None = None, metric_trust: pd.DataFrame | None = None) -> Features:
    """Features of every farm-season in ``seasons`` (shapes: ``rural_credit.trust.frames``).

    ``metric_trust``: farm_id, metric, trusted, optionally season_id (without it a farm's verdict
    applies to all its seasons) — as ``TrustReport.metric_trust`` gives it.
    """
    keys = agronomy.season_keys(seasons)
    values = agronomy.agronomy(rollups, seasons)
    area = pd.Series(float("nan"), index=keys.index)
    if registry is not None:
        reg = registry_features(registry, keys)
        values = values.join(reg)
        area = reg["area_ha"]
    if applications is not None:
        values = values.join(application_features(applications, keys, area))
    values = values.reindex(columns=list(NAMES))
    trusted = values.notna()
    if metric_trust is not None:
        untrusted = _untrusted_sources(metric_trust, keys)
        for feature in CATALOGUE:
            if feature.trust_source is not None:
                trusted[feature.name] &= ~untrusted[feature.trust_source]
    index = pd.MultiIndex.from_frame(keys[["farm_id", "season_id"]])
    values.index, trusted.index = index, index
    return Features(values, trusted)


def _untrusted_sources(metric_trust: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """Per farm-season row of ``keys``: True for each source quantity with an untrusted metric."""
    require(metric_trust, ("farm_id", "metric", "trusted"), "metric_trust")
    if metric_trust["trusted"].isna().any():
        raise FrameError("metric_trust.trusted must be True or False for every row")
    source_of = {m: s for s, ms in agronomy.SOURCES.items() for m in ms}
    bad = metric_trust[~metric_trust["trusted"].astype(bool)].assign(source=lambda f: f["metric"].map(source_of))
    bad = bad[bad["source"].notna()]
    on = ["farm_id", "season_id"] if "season_id" in metric_trust.columns else ["farm_id"]
    flags = bad.assign(flag=True).pivot_table(index=on, columns="source", values="flag", aggfunc="any")
    joined = keys[on].merge(flags, left_on=on, right_index=True, how="left")
    out = pd.DataFrame(False, index=keys.index, columns=list(agronomy.SOURCES))
    for source in out.columns:
        if source in joined.columns:
            out[source] = joined[source].fillna(False).astype(bool).to_numpy()
    return out
