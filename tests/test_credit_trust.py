"""Data trust: each check finds its injected fault and stays quiet on clean data; trust, coverage, provenance.

The readings are SYNTHETIC (hardware.synthetic_farms.farm_readings: four neighbouring farms from the
demo's signal model, every 10 minutes for ten days); each fault is injected by that module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hardware import synthetic_farms as sf
from rural_credit.trust import checks, cross_sensor, score
from rural_credit.trust.frames import FrameError

START, DAYS = "2025-04-01", 10
WINDOW = checks.Window(pd.Timestamp(START, tz="UTC"), pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS))


@pytest.fixture(scope="module")
def world() -> dict:
    readings = sf.farm_readings(farms=4, days=DAYS, start=START)
    limits = checks.limits_from_specs(sf.device_specs(sorted(readings["farm_id"].unique())),
                                      interval_s={d: 600 for d in readings["device_id"].unique()})
    events = sf.provisioning_events(readings)
    clean = score.assess(readings, WINDOW, limits=limits, events=events)
    return {"readings": readings, "limits": limits, "events": events, "clean": clean}


def assess(world: dict, readings: pd.DataFrame, events: pd.DataFrame | None = None) -> score.TrustReport:
    return score.assess(readings, WINDOW, limits=world["limits"], events=world["events"] if events is None else events)


def flagged_farms(report: score.TrustReport, check: str) -> set[str]:
    return set(report.readings.loc[report.flags[check], "farm_id"])


@pytest.mark.parametrize("check", list(score.CHECK_WEIGHTS))
def test_no_check_fires_on_clean_data(world: dict, check: str) -> None:
    assert not world["clean"].flags[check].any()


def test_trust_in_unit_interval_with_its_parts(world: dict) -> None:
    farms = world["clean"].farms
    assert list(farms.index) == ["syn-farm-1", "syn-farm-2", "syn-farm-3", "syn-farm-4"]
    assert farms["trust"].between(0, 1).all() and (farms["trust"] > 0.9).all()
    parts = world["clean"].parts("syn-farm-1")
    assert set(parts) == {"origin", "coverage", *score.CHECK_WEIGHTS}
    assert parts["coverage"] == pytest.approx(1.0)
    # two of three series are gateway-attested (0.9), one node-signed (1.0)
    assert parts["origin"] == pytest.approx((0.9 * 2 + 1.0) / 3)
    assert farms.loc["syn-farm-1", "trust"] == pytest.approx(parts["origin"])


FAULTS = {
    "out_of_range": lambda r: sf.out_of_range(r, "syn-farm-2-soil", "soil_moisture", 150.0, every=10),
    "flat_line": lambda r: sf.flat_line(r, "syn-farm-2-soil", "soil_moisture", "2025-04-04"),
    "clock": lambda r: sf.clock_off(r, "syn-farm-2-weather", 6.0),
    "maintenance": lambda r: sf.rekey(r, "syn-farm-2-soil", "2025-04-06"),
}


@pytest.mark.parametrize("check", list(FAULTS))
def test_each_fault_is_found_on_its_farm_and_lowers_its_trust(world: dict, check: str) -> None:
    report = assess(world, FAULTS[check](world["readings"]))
    assert flagged_farms(report, check) == {"syn-farm-2"}
    trust = report.farms["trust"]
    assert trust["syn-farm-2"] < world["clean"].farms.loc["syn-farm-2", "trust"] - 0.02
    assert trust.drop("syn-farm-2").tolist() == pytest.approx(world["clean"].farms["trust"].drop("syn-farm-2").tolist())


def test_a_spike_is_a_rate_of_change(world: dict) -> None:
    report = assess(world, sf.out_of_range(world["readings"], "syn-farm-3-weather", "air_temperature", 60.0,
                                           every=400))
    r, flags = report.readings, report.flags["rate_of_change"]
    assert set(r.loc[flags, "device_id"]) == {"syn-farm-3-weather"}
    spikes = r.index[r["value"] == 60.0]
    # each spike and the reading after it (the jump back); a spike on the series' first reading shows only then
    assert set(r.index[flags]) == ({*spikes, *(spikes + 1)} - {spikes[0]})


@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_copied_series_flags_both_farms(world: dict, offset: float) -> None:
    metric = "soil_moisture" if offset == 0 else "air_temperature"
    report = assess(world, sf.copy_series(world["readings"], "syn-farm-1", "syn-farm-3", metric, offset))
    assert flagged_farms(report, "duplicates") == {"syn-farm-1", "syn-farm-3"}
    assert (report.farms.loc[["syn-farm-1", "syn-farm-3"], "trust"] < 0.5).all()
    untrusted = report.metric_trust[~report.metric_trust["trusted"]]
    assert set(zip(untrusted["farm_id"], untrusted["metric"], strict=True)) == {("syn-farm-1", metric),
                                                                                ("syn-farm-3", metric)}


def test_registered_replacement_is_not_suspicious(world: dict) -> None:
    readings, events = sf.replace_device(world["readings"], world["events"], "syn-farm-2-soil", "2025-04-06",
                                         "syn-farm-2-soil-b")
    report = assess(world, readings, events)
    assert not report.flags.any().any()
    assert report.farms.loc["syn-farm-2", "coverage"] == pytest.approx(1.0)


def test_unregistered_replacement_is(world: dict) -> None:
    readings, _ = sf.replace_device(world["readings"], world["events"], "syn-farm-2-soil", "2025-04-06",
                                    "syn-farm-2-soil-b")
    report = assess(world, readings)
    flagged = report.readings[report.flags["maintenance"]]
    assert set(flagged["device_id"]) == {"syn-farm-2-soil-b"}


def test_registered_rekey_and_move_are_not_suspicious(world: dict) -> None:
    readings = sf.rekey(world["readings"], "syn-farm-2-soil", "2025-04-06")
    readings.loc[(readings["device_id"] == "syn-farm-4-soil") & (readings["ts"] >= "2025-04-08"), "farm_id"] = \
        "syn-farm-3"
    unregistered = assess(world, readings)
    assert set(unregistered.readings.loc[unregistered.flags["maintenance"], "device_id"]) == {
        "syn-farm-2-soil", "syn-farm-4-soil"}
    recorded = pd.DataFrame({"device_id": ["syn-farm-2-soil", "syn-farm-4-soil"], "kind": ["rekeyed", "moved"],
                             "at": pd.to_datetime(["2025-04-05 23:00", "2025-04-08 01:00"], utc=True)})
    report = assess(world, readings, pd.concat([world["events"], recorded]))
    assert not report.flags["maintenance"].any()


def _hourly_frame(farm: str, rain: list[float], moisture: list[float]) -> pd.DataFrame:
    ts = pd.date_range("2025-04-01", periods=len(rain), freq="h", tz="UTC")
    rows = [pd.DataFrame({"farm_id": farm, "device_id": f"{farm}-{m}", "metric": m, "ts": ts, "value": v,
                          "quality": 0, "origin": "gateway"})
            for m, v in (("rainfall", np.cumsum(rain)), ("soil_moisture", moisture))]
    return pd.concat(rows, ignore_index=True)


def test_rain_that_leaves_the_soil_dry_is_inconsistent() -> None:
    hours = 72
    rain = np.zeros(hours)
    rain[[10, 34, 58]] = 12.0  # one heavy shower on each of three days
    drying = 30.0 - 0.05 * np.arange(hours)
    wetted = drying.copy()
    for h in (10, 34, 58):
        wetted[h:] += 4.0
    frame = checks.prepare(pd.concat([_hourly_frame("wet", rain, wetted), _hourly_frame("dry", rain, drying)]))
    flags = cross_sensor.rain_moisture(frame)
    assert set(frame.loc[flags, "farm_id"]) == {"dry"}
    assert set(frame.loc[flags, "ts"].dt.day) == {1, 2, 3}


def test_neighbours_weather_must_agree(world: dict) -> None:
    readings = world["readings"].copy()
    hot = (readings["farm_id"] == "syn-farm-4") & (readings["metric"] == "air_temperature")
    readings.loc[hot & (readings["ts"] >= "2025-04-07"), "value"] += 6.0
    report = assess(world, readings)
    flagged = report.readings[report.flags["neighbour_weather"]]
    assert set(flagged["farm_id"]) == {"syn-farm-4"}
    assert flagged["ts"].min() >= pd.Timestamp("2025-04-07", tz="UTC")


def test_provenance_is_stable_under_row_order_and_changes_with_one_value(world: dict) -> None:
    rows = world["readings"][world["readings"]["farm_id"] == "syn-farm-1"]
    digest = score.provenance(rows)
    assert digest == score.provenance(rows.sample(frac=1.0, random_state=3))
    assert digest == world["clean"].farms.loc["syn-farm-1", "provenance_sha256"]
    changed = rows.copy()
    changed.iloc[100, changed.columns.get_loc("value")] += 0.1
    assert score.provenance(changed) != digest
    assert len(digest) == 64


def test_coverage_counts_missing_samples(world: dict) -> None:
    readings = world["readings"]
    gap = (readings["device_id"] == "syn-farm-1-soil") & (readings["ts"] < "2025-04-06")  # half the window
    report = assess(world, readings[~gap])
    assert report.farms.loc["syn-farm-1", "coverage"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_bad_frames_are_refused_by_name(world: dict) -> None:
    with pytest.raises(FrameError, match="readings lacks column.*origin"):
        checks.prepare(world["readings"].drop(columns="origin"))
    naive = world["readings"].assign(ts=world["readings"]["ts"].dt.tz_localize(None))
    with pytest.raises(FrameError, match="without a time zone"):
        checks.prepare(naive)
    with pytest.raises(FrameError, match="origin must be one of"):
        checks.prepare(world["readings"].assign(origin="satellite"))
    store_codes = world["readings"].assign(origin=world["readings"]["origin"].map({"node": 1, "gateway": 2}))
    assert checks.prepare(store_codes)["origin"].isin(["node", "gateway"]).all()
