"""Limit recommendation: a share of the farm's expected revenue, the share set by the risk grade.

``expected revenue = area × expected yield × price``, with yield and price from a crop table that is
data (``data/crop_revenue.yaml``: each figure with its source).  When the farm's own harvests of the
same crop are on record, the expected yield leans on them by credibility weighting:

    expected yield = (n · farm mean + K · table yield) / (n + K),   K = :data:`CREDIBILITY_SEASONS`

so one good season moves the figure a quarter of the way and a long history almost all of it.  The
limit is ``revenue × share(grade)`` (the policy's ``limit_share``), rounded down to
:data:`ROUND_TO`.  Everything works on arrays, so the batch and the single assessment share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_specs.registry import UniqueKeyLoader
from rural_credit.trust.frames import FrameError, require

CROP_TABLE_PATH = Path(__file__).parent / "data" / "crop_revenue.yaml"
#: seasons of the table's weight in the credibility blend
CREDIBILITY_SEASONS = 3.0
ROUND_TO = 10.0
YIELDS = ("farm_id", "crop", "yield_t_per_ha")


class CropFigures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    yield_t_per_ha: float = Field(gt=0)
    yield_source: str = Field(min_length=3)
    price_per_t: float = Field(gt=0)
    price_source: str = Field(min_length=3)


class CropTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    currency: str = Field(min_length=3, max_length=3)
    crops: dict[str, CropFigures] = Field(min_length=1)


def load_crop_table(path: Path = CROP_TABLE_PATH) -> CropTable:
    try:
        return CropTable.model_validate(yaml.load(Path(path).read_text(encoding="utf-8"), Loader=UniqueKeyLoader))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"crop table {path}: {exc}") from exc


@lru_cache(maxsize=1)
def demo_crop_table() -> CropTable:
    return load_crop_table()


@dataclass(frozen=True)
class LimitRecommendation:
    limit: float  # NaN when the crop is not in the table
    currency: str
    expected_revenue: float
    expected_yield_t_per_ha: float
    table_yield_t_per_ha: float
    own_seasons: int
    own_mean_yield_t_per_ha: float | None
    price_per_t: float
    share: float
    grade: str
    sources: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}


def yield_history(yields: pd.DataFrame | None) -> pd.DataFrame:
    """Per (farm_id, crop): the mean recorded yield and the number of seasons (``yields``: one row per
    farm-season harvest with farm_id, crop, yield_t_per_ha)."""
    if yields is None or yields.empty:
        return pd.DataFrame(columns=["own_mean", "own_seasons"],
                            index=pd.MultiIndex.from_arrays([[], []], names=["farm_id", "crop"]))
    require(yields, YIELDS, "yields")
    y = pd.to_numeric(yields["yield_t_per_ha"], errors="coerce")
    if (y < 0).any() or y.isna().any():
        raise FrameError("yields.yield_t_per_ha must be a number >= 0 in every row")
    return (yields.assign(y=y).groupby(["farm_id", "crop"])["y"].agg(own_mean="mean", own_seasons="size"))


def limits(table: CropTable, shares: Mapping[str, float], crop: Any, area_ha: Any, grade: Any,
           own_mean: Any = None, own_seasons: Any = None) -> dict[str, np.ndarray]:
    """Limit and its parts per row (arrays of equal length; ``own_*`` NaN/0 where no history)."""
    crop = np.asarray(crop, dtype=object).astype(str)
    n = len(crop)
    table_yield = np.array([table.crops[c].yield_t_per_ha if c in table.crops else np.nan for c in crop])
    price = np.array([table.crops[c].price_per_t if c in table.crops else np.nan for c in crop])
    seasons = np.zeros(n) if own_seasons is None else np.nan_to_num(np.asarray(own_seasons, dtype=float))
    mean = np.zeros(n) if own_mean is None else np.nan_to_num(np.asarray(own_mean, dtype=float))
    expected = (seasons * mean + CREDIBILITY_SEASONS * table_yield) / (seasons + CREDIBILITY_SEASONS)
    revenue = np.asarray(area_ha, dtype=float) * expected * price
    share = np.array([float(shares.get(str(g), 0.0)) for g in np.asarray(grade, dtype=object)])
    limit = np.floor(revenue * share / ROUND_TO) * ROUND_TO
    return {"limit": limit, "expected_revenue": revenue, "expected_yield": expected, "table_yield": table_yield,
            "price": price, "share": share, "own_seasons": seasons}


def recommend(table: CropTable, shares: Mapping[str, float], crop: str, area_ha: float, grade: str,
              history: pd.DataFrame | None = None, farm_id: str | None = None) -> LimitRecommendation:
    """One farm's limit; ``history`` as :func:`yield_history` returns (the farm's same-crop seasons count)."""
    own_mean, own_seasons = np.nan, 0
    if history is not None and farm_id is not None and (farm_id, crop) in history.index:
        row = history.loc[(farm_id, crop)]
        own_mean, own_seasons = float(row["own_mean"]), int(row["own_seasons"])
    r = limits(table, shares, [crop], [area_ha], [grade], [own_mean], [own_seasons])
    figures = table.crops.get(crop)
    sources = {"yield": figures.yield_source, "price": figures.price_source} if figures else {}
    if own_seasons:
        sources["own_history"] = f"{own_seasons} recorded season(s) of {crop} on this farm"
    return LimitRecommendation(
        limit=float(r["limit"][0]), currency=table.currency,
        expected_revenue=round(float(r["expected_revenue"][0]), 2),
        expected_yield_t_per_ha=round(float(r["expected_yield"][0]), 3),
        table_yield_t_per_ha=float(r["table_yield"][0]),
        own_seasons=own_seasons, own_mean_yield_t_per_ha=None if not own_seasons else round(own_mean, 3),
        price_per_t=float(r["price"][0]), share=float(r["share"][0]), grade=grade, sources=sources)
