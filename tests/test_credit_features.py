"""Credit features: hand-computed values on a tiny series, the catalogue, missing and untrusted data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rural_credit.features import agronomy
from rural_credit.features.build import build_features
from rural_credit.features.catalogue import BY_NAME, NAMES, render_markdown
from rural_credit.trust.frames import FrameError

DOC = Path(__file__).resolve().parents[1] / "docs" / "credit-features.md"
START = pd.Timestamp("2025-04-01", tz="UTC")

# five days of one maize farm: (tmin, tmax), soil moisture (mean, max), rain counter (min, max)
TEMPS = [(12, 28), (8, 20), (15, 36), (-2, 9), (20, 34)]
MOISTURE = [(30, 31), (20, 21), (15, 16), (16, 26), (25, 27)]
RAIN = [(100, 100), (100, 100), (100, 105), (105, 105), (105, 115)]


def rows(farm: str, device: str, metric: str, days: list[tuple[float, float, float]], start: pd.Timestamp = START,
         n: int = 24) -> pd.DataFrame:
    """Daily rollup rows from (mean, min, max) per day."""
    return pd.DataFrame({"farm_id": farm, "device_id": device, "metric": metric,
                         "bucket": [start + pd.Timedelta(days=i) for i in range(len(days))], "n": n,
                         "sum": [mean * n for mean, _, _ in days], "min": [lo for _, lo, _ in days],
                         "max": [hi for _, _, hi in days]})


def tiny_farm(farm: str = "f1", start: pd.Timestamp = START) -> pd.DataFrame:
    return pd.concat([
        rows(farm, f"{farm}-mast", "air_temperature", [((lo + hi) / 2, lo, hi) for lo, hi in TEMPS], start),
        rows(farm, f"{farm}-soil", "soil_moisture", [(mean, mean - 1, hi) for mean, hi in MOISTURE], start),
        rows(farm, f"{farm}-mast", "rainfall", [((lo + hi) / 2, lo, hi) for lo, hi in RAIN], start),
    ], ignore_index=True)


def season(farm: str = "f1", days: int = 5, crop: str = "maize", season_id: str = "s1",
           start: pd.Timestamp = START) -> dict:
    return {"farm_id": farm, "season_id": season_id, "start": start, "end": start + pd.Timedelta(days=days),
            "crop": crop}


def test_hand_computed_agronomy() -> None:
    out = agronomy.agronomy(tiny_farm(), pd.DataFrame([season()])).iloc[0]
    # maize: base 10, cap 30 -> (28+12)/2-10, (20+10)/2-10, (30+15)/2-10, 0, (30+20)/2-10
    assert out["gdd"] == pytest.approx(10 + 5 + 12.5 + 0 + 15)
    assert out["heat_days"] == 1  # 36 > 35
    assert out["frost_days"] == 1  # -2 < 0
    assert out["moisture_stress_days"] == 2  # means 15 and 16 < 18
    assert out["soil_moisture_mean"] == pytest.approx(np.mean([m for m, _ in MOISTURE]))
    assert out["rainfall_mm"] == pytest.approx(0 + 0 + 5 + 0 + 10)
    # day 4: max 26 over day 3's mean 15 without rain; day 5 rises too, but it rained 10 mm
    assert out["irrigation_events"] == 1
    assert math.isnan(out["irrigation_regularity"])  # fewer than three events
    assert out["data_coverage"] == 1.0


def test_counts_are_scaled_to_the_season_and_too_little_data_is_missing() -> None:
    frame = tiny_farm()
    no_day_3 = frame[~((frame["metric"] == "air_temperature") & (frame["bucket"] == START + pd.Timedelta(days=2)))]
    out = agronomy.agronomy(no_day_3, pd.DataFrame([season()])).iloc[0]
    assert out["gdd"] == pytest.approx((10 + 5 + 0 + 15) * 5 / 4)
    assert out["heat_days"] == 0 and out["frost_days"] == pytest.approx(5 / 4)
    assert out["temperature_coverage"] == pytest.approx(0.8)
    # a season of 12 days holds only 5 observed: under half, so missing
    sparse = agronomy.agronomy(frame, pd.DataFrame([season(days=12)])).iloc[0]
    assert math.isnan(sparse["gdd"]) and math.isnan(sparse["moisture_stress_days"])
    assert sparse["data_coverage"] == pytest.approx(5 / 12)


def test_irrigation_regularity() -> None:
    # moisture that dries 1 point a day and is watered (+6) every third day, then every other day
    days, level = [], 30.0
    watering = {3, 6, 9, 12, 14, 16}
    for d in range(18):
        level -= 1.0
        high = level + 6 if d in watering else level + 0.5
        level = level + 6 if d in watering else level
        days.append((level, level - 1, high))
    frame = rows("f1", "soil", "soil_moisture", days)
    out = agronomy.agronomy(frame, pd.DataFrame([season(days=18)])).iloc[0]
    assert out["irrigation_events"] == 6
    gaps = np.diff(sorted(watering))
    assert out["irrigation_regularity"] == pytest.approx(1 / (1 + gaps.std(ddof=1) / gaps.mean()))


def test_rain_counter_reset_and_gap() -> None:
    frame = rows("f1", "gauge", "rainfall_total", [(0, 50, 52), (0, 52, 60), (0, 1, 3), (0, 3, 3), (0, 9, 9)])
    frame = frame[frame["bucket"] != START + pd.Timedelta(days=3)]  # a missing day
    out = agronomy.agronomy(frame, pd.DataFrame([season()])).iloc[0]
    # day 1: own 2; day 2: 60-52 = 8; day 3: reset -> own 3-1 = 2; day 5 after a gap: own 0
    assert out["rainfall_mm"] == pytest.approx((2 + 8 + 2 + 0) * 5 / 4)


def test_daily_from_hourly_sums_like_the_store() -> None:
    hourly = rows("f1", "soil", "soil_moisture", [(10, 9, 11), (20, 18, 22)], n=6)
    hourly["bucket"] = [START, START + pd.Timedelta(hours=5)]
    daily = agronomy.daily_from_hourly(hourly)
    assert daily[["n", "sum", "min", "max"]].iloc[0].tolist() == [12, 180, 9, 22]
    assert daily["bucket"].iloc[0] == START


def test_several_seasons_per_farm_and_farms_without_data() -> None:
    later = START + pd.Timedelta(days=30)
    frame = pd.concat([tiny_farm(), tiny_farm(start=later)])
    seasons = pd.DataFrame([season(), season(season_id="s2", start=later), season(farm="f9")])
    out = agronomy.agronomy(frame, seasons)
    assert out["gdd"].iloc[:2].tolist() == pytest.approx([42.5, 42.5])
    assert math.isnan(out["gdd"].iloc[2]) and out["data_coverage"].iloc[2] == 0


def registry() -> pd.DataFrame:
    return pd.DataFrame({"farm_id": ["f1"], "area_ha": [2.0], "crop": ["maize"], "tenure": ["owned"],
                         "seasons_observed": [3]})


def applications(prior_loans: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"farm_id": ["f1"], "season_id": ["s1"], "amount": [500.0], "term_months": [12],
                         "purpose": ["inputs"], "prior_loans": [prior_loans], "prior_repaid": [min(1, prior_loans)]})


def test_catalogue_covers_every_output_column_and_the_doc_is_current() -> None:
    features = build_features(tiny_farm(), pd.DataFrame([season()]), registry(), applications())
    assert tuple(features.values.columns) == NAMES
    assert all(BY_NAME[n].unit is not None and BY_NAME[n].formula for n in NAMES)
    assert DOC.read_text() == render_markdown(), "regenerate docs/credit-features.md from the catalogue"
    row = features.values.loc[("f1", "s1")]
    assert row["amount_per_ha"] == 250.0 and row["prior_repaid_share"] == 0.5 and row["first_loan"] == 0
    assert features.trusted.loc[("f1", "s1")].drop("irrigation_regularity").all()


def test_missing_is_nan_and_untrusted_is_masked() -> None:
    trust = pd.DataFrame({"farm_id": ["f1", "f1"], "metric": ["soil_moisture", "air_temperature"],
                          "trusted": [False, True]})
    features = build_features(tiny_farm(), pd.DataFrame([season()]), registry(), applications(prior_loans=0),
                              metric_trust=trust)
    row, ok = features.values.loc[("f1", "s1")], features.trusted.loc[("f1", "s1")]
    assert math.isnan(row["prior_repaid_share"]) and not ok["prior_repaid_share"]
    assert row["moisture_stress_days"] == 2 and not ok["moisture_stress_days"] and not ok["irrigation_events"]
    assert ok["gdd"] and ok["rainfall_mm"] and ok["amount"]
    scoring = features.for_scoring().loc[("f1", "s1")]
    assert math.isnan(scoring["moisture_stress_days"]) and scoring["gdd"] == pytest.approx(42.5)


def test_bad_inputs_name_what_is_wrong() -> None:
    with pytest.raises(FrameError, match="rollups lacks column.*max"):
        agronomy.agronomy(tiny_farm().drop(columns="max"), pd.DataFrame([season()]))
    with pytest.raises(FrameError, match="end must be after"):
        agronomy.agronomy(tiny_farm(), pd.DataFrame([season(days=0)]))
    bad = applications().assign(prior_repaid=5)
    with pytest.raises(FrameError, match="prior_repaid exceeds prior_loans"):
        build_features(tiny_farm(), pd.DataFrame([season()]), registry(), bad)
