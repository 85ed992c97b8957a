"""Reference builds as data, the energy budget, `fieldtrust hw` and the technician's guide.

A build error must say where to look: the file and the key.  Budget figures are checked against
numbers worked out by hand for small builds, so a change in the arithmetic cannot slip through.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fieldtrust.cli.main import app
from hardware.energy_budget import energy_budget, parse_interval, standard_panel_w
from hardware.reference_build import (
    REFERENCE_DIR,
    BuildError,
    get_build,
    load_build_file,
    parse_build,
    reference_builds,
)
from hardware.reference_docs import GUIDE, render_guide

PRICE = {"amount": 1.0, "currency": "USD", "as_of": "2026-11-30", "source": "test"}


def tiny_build() -> dict:
    """A battery build small enough to budget by hand (see test_budget_by_hand)."""
    return {
        "schema": "fieldtrust.reference-build/1",
        "name": "tiny",
        "kind": "node",
        "title": "Tiny node",
        "supply_v": 3.7,
        "rails": {"bat": {"voltage_v": 3.7, "feed": "direct"}},
        "parts": [
            {"ref": "U1", "name": "radio MCU", "manufacturer": "acme", "part_number": "MCU-1", "quantity": 1,
             "price": PRICE,
             "currents": {"rail": "bat", "active_ma": 100, "sleep_ma": 0.01, "tx_ma": 200, "basis": "measured",
                          "source": "bench"}},
            {"ref": "U2", "name": "sensor", "manufacturer": "acme", "part_number": "S-1", "quantity": 2,
             "price": PRICE, "currents": {"rail": "bat", "active_ma": 2.5, "basis": "measured", "source": "bench"}},
            {"ref": "BT1", "name": "cell", "manufacturer": "acme", "part_number": "C-1", "quantity": 1,
             "datasheet": "https://example.org/cell.pdf", "price": {**PRICE, "amount": 4.0},
             "battery": {"chemistry": "Li-ion", "capacity_mah": 1000, "nominal_v": 3.7, "cutoff_v": 3.4,
                         "capacity_to_cutoff": 0.9, "source": "test"}},
            {"ref": "PV1", "name": "panel", "manufacturer": "acme", "part_number": "P-1", "quantity": 1,
             "price": PRICE, "panel_w": 0.01},
        ],
        "wiring": [{"title": "sensor", "part": "U2", "wires": [{"from": "U2.OUT", "to": "U1.GPIO4", "colour": "red"}]}],
    }


def parse(data: dict, origin: str = "tiny.yaml"):
    return parse_build(yaml.safe_dump(data, sort_keys=False), origin)


# --- the shipped builds -----------------------------------------------------------------------


def test_shipped_builds_load_by_name_and_carry_what_the_budget_needs() -> None:
    builds = reference_builds()
    assert set(builds) == {"node-esp32-soil", "gateway-rpi"} == {p.stem for p in REFERENCE_DIR.glob("*.yaml")}
    node, gateway = builds["node-esp32-soil"], builds["gateway-rpi"]
    assert get_build("node-esp32-soil") is node
    assert get_build(str(REFERENCE_DIR / "gateway-rpi.yaml")).name == "gateway-rpi"
    assert node.battery_part is not None and node.panel_w == 2
    assert gateway.battery_part is None and gateway.panel_w is None
    for b in builds.values():
        assert all(p.price.currency == "USD" for p in b.parts)
        assert all(t.part in {p.ref for p in b.parts} for t in b.wiring)
    # every sensor the node reads has its wiring table and its device spec
    sensors = {p.ref for p in node.parts if p.spec}
    assert sensors == {"U4", "U5", "U6"} and sensors <= {t.part for t in node.wiring}


def test_unknown_build_lists_the_known_ones() -> None:
    with pytest.raises(BuildError, match="unknown reference build 'nope'; known: gateway-rpi, node-esp32-soil"):
        get_build("nope")


# --- schema errors name file and key ----------------------------------------------------------


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _del(path: tuple) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


BROKEN = {
    "unknown key in a part": (_set(("parts", 1, "colour"), "red"), "tiny.yaml: parts[1] (U2).colour: unknown key"),
    "bad currency": (_set(("parts", 0, "price", "currency"), "usd"), "tiny.yaml: parts[0] (U1).price.currency:"),
    "negative current": (_set(("parts", 0, "currents", "sleep_ma"), -1), "parts[0] (U1).currents.sleep_ma:"),
    "missing quantity": (_del(("parts", 2, "quantity")), "parts[2] (BT1).quantity: required key is missing"),
    "unknown rail": (_set(("parts", 1, "currents", "rail"), "5v"),
                     "tiny.yaml: parts[1] (U2).currents.rail: unknown rail '5v' (rails: bat)"),
    "duplicate ref": (_set(("parts", 1, "ref"), "U1"), "tiny.yaml: parts[1] (U1).ref: duplicate of parts[0]"),
    "datasheet figure without datasheet": (
        _set(("parts", 0, "currents", "basis"), "datasheet"),
        "tiny.yaml: parts[0] (U1): datasheet: required key is missing"),
    "battery not the supply": (_set(("parts", 2, "battery", "nominal_v"), 3.6),
                               "parts[2] (BT1).battery.nominal_v: 3.6 V must equal supply_v 3.7 V"),
    "wire to an unknown part": (_set(("wiring", 0, "wires", 0, "to"), "U9.GPIO4"),
                                "tiny.yaml: wiring[0] (sensor).wires[0].to: unknown part 'U9'"),
    "switching rail without efficiency": (_set(("rails", "bat", "feed"), "switching"),
                                          "tiny.yaml: rails.bat: efficiency is required for a switching rail"),
    "unknown device spec": (_set(("parts", 1, "spec"), "no-such-sensor"),
                            "parts[1] (U2).spec: unknown device spec 'no-such-sensor'"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_schema_errors_name_file_and_key(case: str) -> None:
    edit, expected = BROKEN[case]
    data = copy.deepcopy(tiny_build())
    parse(data)  # valid before the edit
    edit(data)
    with pytest.raises(BuildError) as exc:
        parse(data)
    assert expected in str(exc.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\n")
    with pytest.raises(BuildError, match=rf"{dup}: not valid YAML at line 2, column 1: duplicate key 'name'"):
        load_build_file(dup)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- just a list\n")
    with pytest.raises(BuildError, match=rf"{scalar}: a build must be a YAML mapping"):
        load_build_file(scalar)
    renamed = tmp_path / "other.yaml"
    renamed.write_text(yaml.safe_dump(tiny_build()))
    with pytest.raises(BuildError, match=rf"{renamed}: name: 'tiny' must match the file name 'other'"):
        load_build_file(renamed)
    with pytest.raises(BuildError, match="cannot read"):
        load_build_file(tmp_path / "missing.yaml")


# --- the budget, by hand ----------------------------------------------------------------------


def test_budget_by_hand() -> None:
    r = energy_budget(parse(tiny_build()), parse_interval("15m"), awake_s=2.5, tx_s=0.5, sun_hours=4,
                      system_efficiency=0.5, battery_derating=0.8)
    # 96 wakes; per wake U1 100 mA × 2.5 s + (200 − 100) mA × 0.5 s = 300 mA·s, U2 2 × 2.5 mA × 2.5 s = 12.5 mA·s
    assert r.wakes_per_day == 96
    assert r.charge_per_wake_mas == pytest.approx(312.5)
    # asleep 86400 − 96 × 2.5 = 86160 s at 0.01 mA (U2 is switched off)
    assert r.sleep_current_ma == pytest.approx(0.01)
    by_ref = {p.ref: p for p in r.parts}
    assert by_ref["U1"].sleep_mah_per_day == pytest.approx(861.6 / 3600)
    assert by_ref["U2"].sleep_mah_per_day == 0
    assert r.mah_per_day == pytest.approx(30000 / 3600 + 861.6 / 3600)  # 8.5727 mAh
    assert r.wh_per_day == pytest.approx(8.572667 * 3.7 / 1000, rel=1e-6)
    assert r.average_current_ma == pytest.approx(8.572667 / 24, rel=1e-6)
    # 1000 mAh × 0.9 above cut-off × 0.8 derating = 720 mAh
    assert r.battery_usable_mah == pytest.approx(720)
    assert r.battery_life_days == pytest.approx(720 / 8.572667, rel=1e-6)  # 84 days
    # 31.72 mWh / (4 h × 0.5) = 15.86 mW; the 10 mW panel is too small, 0.5 W is the next standard size
    assert r.panel_w_needed == pytest.approx(0.031718867 / 2, rel=1e-6)
    assert r.panel_w_recommended == 0.5
    assert r.panel_w_installed == 0.01 and r.panel_sufficient is False


def test_budget_through_a_switching_rail_without_battery() -> None:
    data = tiny_build()
    data.update(supply_v=12, rails={"5v": {"voltage_v": 5, "feed": "switching", "efficiency": 0.8}})
    data["parts"] = [{**data["parts"][0], "currents": {"rail": "5v", "active_ma": 100, "sleep_ma": 50,
                                                      "basis": "measured", "source": "bench"}}]
    data["wiring"] = []
    r = energy_budget(parse(data), 3600, awake_s=10, tx_s=0, sun_hours=5, system_efficiency=0.5)
    k = 5 / (0.8 * 12)  # power in = power out / efficiency: 100 mA at 5 V is 52.08 mA at 12 V
    assert r.sleep_current_ma == pytest.approx(50 * k)
    assert r.mah_per_day == pytest.approx(50 * k * (86400 - 240) / 3600 + 100 * k * 10 * 24 / 3600)
    assert r.battery_usable_mah is None and r.battery_life_days is None
    assert r.panel_w_installed is None and r.panel_sufficient is None
    assert r.panel_w_needed == pytest.approx(r.wh_per_day / 2.5)


@pytest.mark.parametrize(("needed", "size"), [(0.01, 0.5), (0.5, 0.5), (0.51, 1.0), (36.4, 50.0), (301, None)])
def test_next_standard_panel(needed: float, size: float | None) -> None:
    assert standard_panel_w(needed) == size


def test_budget_refuses_impossible_profiles() -> None:
    b = parse(tiny_build())
    with pytest.raises(ValueError, match="awake time must be above 0 and below the interval"):
        energy_budget(b, 60, awake_s=60)
    with pytest.raises(ValueError, match="tx time must be between 0 and the awake time"):
        energy_budget(b, 60, awake_s=2, tx_s=3)
    with pytest.raises(ValueError, match="sun hours"):
        energy_budget(b, 60, sun_hours=0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("1h", 3600), ("900s", 900), (" 2.5m ", 150), ("24h", 86400)]
)
def test_interval_parsing(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("15", "expected a number with a unit s, m or h"),
    ("15x", "expected a number with a unit s, m or h"),
    ("-5m", "expected a number with a unit s, m or h"),
    ("2d", "expected a number with a unit s, m or h"),
    ("5s", "must be between 10 s and 24 h, got 5 s"),
    ("25h", "must be between 10 s and 24 h, got 90000 s"),
])
def test_interval_errors_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_interval(text)


# --- fieldtrust hw ----------------------------------------------------------------------------

runner = CliRunner()


def test_cli_budget_json_matches_the_library() -> None:
    res = runner.invoke(app, ["hw", "budget", "--build", "node-esp32-soil", "--interval", "15m", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    expected = energy_budget(get_build("node-esp32-soil"), 900)
    assert out["mah_per_day"] == pytest.approx(expected.mah_per_day)
    assert out["battery_life_days"] == pytest.approx(expected.battery_life_days)
    assert out["wakes_per_day"] == 96 and out["awake_s"] == 2.5


def test_cli_budget_table_and_options(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_build()))
    res = runner.invoke(app, ["hw", "budget", "--build", str(path), "--interval", "900s", "--awake-s", "2.5",
                              "--tx-s", "0.5", "--sun-hours", "4", "--efficiency", "0.5"])
    assert res.exit_code == 0, res.output
    assert "8.57 mAh" in res.stdout and "84 days" in res.stdout and "too small" in res.stdout


def test_cli_errors() -> None:
    res = runner.invoke(app, ["hw", "budget", "--build", "node-esp32-soil", "--interval", "15x"],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "expected a number with a unit s, m or h" in res.output
    res = runner.invoke(app, ["hw", "budget", "--build", "node-esp32-soil", "--interval", "1m", "--awake-s", "60"])
    assert res.exit_code == 2 and "awake time must be above 0" in res.output
    res = runner.invoke(app, ["hw", "bom", "--build", "nope"])
    assert res.exit_code == 1 and "known: gateway-rpi, node-esp32-soil" in res.output


def test_cli_bom_and_wiring() -> None:
    res = runner.invoke(app, ["hw", "bom", "--build", "node-esp32-soil"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    total = get_build("node-esp32-soil").totals()["USD"]
    assert f"total {total:.2f} USD" in res.stdout and "ESP32-WROOM-32E-N4" in res.stdout
    res = runner.invoke(app, ["hw", "wiring", "--build", "node-esp32-soil"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "U4.AOUT" in res.stdout and "U1.GPIO34" in res.stdout


# --- the technician's guide -------------------------------------------------------------------


def test_committed_guide_is_the_rendered_one() -> None:
    assert GUIDE.read_text(encoding="utf-8") == render_guide(), (
        "docs/technician-guide.md is out of date: run `python -m hardware.reference_docs`"
    )


def test_guide_renders_every_wiring_row() -> None:
    text = render_guide()
    for b in reference_builds().values():
        assert f"## {b.title}" in text
        for t in b.wiring:
            assert f"#### {t.title} ({t.part})" in text
            assert all(f"| {w.from_pin} | {w.to_pin} |" in text for w in t.wires)
