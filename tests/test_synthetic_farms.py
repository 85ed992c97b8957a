"""The SYNTHETIC farm world: deterministic by seed, labelled synthetic, consistent with its causal model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hardware import synthetic_farms as sf
from rural_credit.features.build import build_features

FRAMES = ("registry", "seasons", "rollups", "applications", "outcomes")


@pytest.fixture(scope="module")
def world() -> sf.World:
    return sf.generate_world(4000, seed=11)


@pytest.fixture(scope="module")
def null_world() -> sf.World:
    return sf.generate_world(4000, seed=11, null_world=True)


def test_deterministic_by_seed(world: sf.World) -> None:
    again = sf.generate_world(4000, seed=11)
    for name in FRAMES:  # DataFrame.equals: assert_frame_equal is slow on large categoricals
        assert getattr(world, name).equals(getattr(again, name)), name
    other = sf.generate_world(4000, seed=12)
    assert not other.outcomes["defaulted"].equals(world.outcomes["defaulted"])
    readings = sf.farm_readings(farms=2, days=2, seed=5)
    pd.testing.assert_frame_equal(readings, sf.farm_readings(farms=2, days=2, seed=5))


def test_every_table_is_labelled_synthetic(world: sf.World) -> None:
    for name in FRAMES:
        frame = getattr(world, name)
        assert frame.attrs["synthetic"] is True, name
        if name != "rollups":
            assert frame["synthetic"].all(), name
    assert sf.farm_readings(farms=1, days=1).attrs["synthetic"] is True


def test_shapes_match_what_rural_credit_reads(world: sf.World) -> None:
    assert len(world.registry) == len(world.seasons) == len(world.applications) == 4000
    assert set(world.rollups["metric"].unique()) == {"air_temperature", "rainfall", "soil_moisture"}
    coverage = len(world.rollups) / (4000 * 120 * 3)
    assert 0.9 < coverage < 1.0
    assert world.outcomes["defaulted"].between(0, 1).all()
    assert 0.08 < world.outcomes["defaulted"].mean() < 0.3


def test_features_see_the_model_the_world_was_drawn_from(world: sf.World) -> None:
    values = build_features(world.rollups, world.seasons).values.reset_index(drop=True)
    truth = world.outcomes
    # features from the rollups recover the model's stress days (scaled over the missing days)
    assert np.corrcoef(values["moisture_stress_days"], truth["stress_days"])[0, 1] > 0.98
    # management shows in the irrigation a farm's sensors record
    assert np.corrcoef(values["irrigation_events"], truth["management"])[0, 1] > 0.5


def test_null_world_outcomes_ignore_farm_data(world: sf.World, null_world: sf.World) -> None:
    def default_vs_stress(w: sf.World) -> float:
        return float(np.corrcoef(w.outcomes["defaulted"], w.outcomes["stress_days"])[0, 1])

    assert default_vs_stress(world) > 0.1
    assert abs(default_vs_stress(null_world)) < 0.04
    # the same farms and applications: only the outcomes' dependence changed
    assert world.applications.equals(null_world.applications)
    assert world.rollups.equals(null_world.rollups)


def test_injectors_return_corrupted_copies() -> None:
    readings = sf.farm_readings(farms=2, days=2)
    before = readings.copy()
    flat = sf.flat_line(readings, "syn-farm-1-soil", "soil_moisture", "2025-04-02")
    copied = sf.copy_series(readings, "syn-farm-1", "syn-farm-2", "air_temperature")
    shifted = sf.clock_off(readings, "syn-farm-2-weather", 3)
    rekeyed = sf.rekey(readings, "syn-farm-1-soil", "2025-04-02")
    pd.testing.assert_frame_equal(readings, before)
    late = (flat["device_id"] == "syn-farm-1-soil") & (flat["ts"] >= "2025-04-02")
    assert flat.loc[late, "value"].nunique() == 1
    a, b = (copied[(copied["farm_id"] == f) & (copied["metric"] == "air_temperature")]["value"].to_numpy()
            for f in ("syn-farm-1", "syn-farm-2"))
    assert np.array_equal(a, b)
    moved = shifted["device_id"] == "syn-farm-2-weather"
    assert (shifted.loc[moved, "ts"] - readings.loc[moved, "ts"] == pd.Timedelta(hours=3)).all()
    assert set(rekeyed.loc[rekeyed["device_id"] == "syn-farm-1-soil", "epoch"]) == {1, 2}
    with pytest.raises(ValueError, match="no readings of device"):
        sf.flat_line(readings, "nope", "soil_moisture", "2025-04-02")
