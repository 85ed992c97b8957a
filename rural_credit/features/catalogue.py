"""Every credit feature: its name, unit, formula and source — the table docs/credit-features.md renders.

The catalogue is the contract between ``build`` (which must produce exactly these columns, a test
checks it) and whoever reads a score's explanation.  ``trust_source`` names the sensor quantity whose
data trust a feature inherits (``agronomy.SOURCES``); None for declared data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    kind: str  # numerical or categorical
    group: str  # agronomy, coverage, registry, application
    source: str
    formula: str
    trust_source: str | None = None


_ROLLUP = "daily rollups"
CATALOGUE: tuple[Feature, ...] = (
    Feature("gdd", "°C·day", "numerical", "agronomy", f"air_temperature {_ROLLUP}",
            "Σ_days max(0, (min(Tmax, cap) + max(Tmin, base)) / 2 − base), base/cap by crop "
            "(maize 10/30, rice 10/35, sorghum 10/38, cassava 12/35), scaled to the season", "temperature"),
    Feature("heat_days", "days", "numerical", "agronomy", f"air_temperature {_ROLLUP}",
            "days with Tmax above the crop's heat limit (maize, rice 35; cassava 37; sorghum 38 °C), scaled",
            "temperature"),
    Feature("frost_days", "days", "numerical", "agronomy", f"air_temperature {_ROLLUP}",
            "days with Tmin below 0 °C, scaled", "temperature"),
    Feature("moisture_stress_days", "days", "numerical", "agronomy", f"soil_moisture {_ROLLUP}",
            "days whose mean soil moisture (sum / n) is below the crop's stress level (rice 25 %, others 18 %), "
            "scaled", "moisture"),
    Feature("soil_moisture_mean", "%", "numerical", "agronomy", f"soil_moisture {_ROLLUP}",
            "mean over observed days of the daily mean soil moisture", "moisture"),
    Feature("rainfall_mm", "mm", "numerical", "agronomy", f"rainfall / rainfall_total counters, {_ROLLUP}",
            "Σ_days (counter max − previous day's max; the day's max − min after a gap or reset), scaled", "rain"),
    Feature("irrigation_events", "events", "numerical", "agronomy", f"soil_moisture and rain {_ROLLUP}",
            "days where max soil moisture − previous day's mean ≥ 2 %-points with under 2 mm of rain, scaled",
            "moisture"),
    Feature("irrigation_regularity", "1", "numerical", "agronomy", "irrigation events",
            "1 / (1 + std / mean of the days between consecutive irrigation events); NaN under 3 events",
            "moisture"),
    Feature("season_days", "days", "numerical", "coverage", "seasons", "end − start of the season"),
    Feature("temperature_coverage", "1", "numerical", "coverage", f"air_temperature {_ROLLUP}",
            "days with temperature data / season days"),
    Feature("moisture_coverage", "1", "numerical", "coverage", f"soil_moisture {_ROLLUP}",
            "days with soil moisture data / season days"),
    Feature("rain_coverage", "1", "numerical", "coverage", f"rain counter {_ROLLUP}",
            "days with rain data / season days"),
    Feature("data_coverage", "1", "numerical", "coverage", "the three coverages",
            "mean of temperature_coverage, moisture_coverage and rain_coverage"),
    Feature("area_ha", "ha", "numerical", "registry", "registry", "registered farm area"),
    Feature("crop", "", "categorical", "registry", "registry", "registered crop of the farm"),
    Feature("tenure", "", "categorical", "registry", "registry", "owned, leased or communal"),
    Feature("seasons_observed", "seasons", "numerical", "registry", "registry",
            "seasons of sensor data the platform holds for the farm"),
    Feature("amount", "currency", "numerical", "application", "application", "amount applied for"),
    Feature("term_months", "months", "numerical", "application", "application", "loan term"),
    Feature("purpose", "", "categorical", "application", "application", "inputs, equipment, irrigation, livestock"),
    Feature("prior_loans", "loans", "numerical", "application", "application", "loans taken before"),
    Feature("prior_repaid_share", "1", "numerical", "application", "application",
            "prior_repaid / prior_loans; NaN without prior loans"),
    Feature("first_loan", "0/1", "numerical", "application", "application", "1 when prior_loans = 0"),
    Feature("amount_per_ha", "currency/ha", "numerical", "application", "application and registry",
            "amount / area_ha"),
)
BY_NAME = {f.name: f for f in CATALOGUE}
NAMES = tuple(f.name for f in CATALOGUE)


def render_markdown() -> str:
    """The catalogue as the Markdown page docs/credit-features.md (regenerate it from here)."""
    lines = [
        "# Credit features",
        "",
        "Generated from `rural_credit/features/catalogue.py` (edit there; a test keeps this page equal to it).",
        "",
        "One row per farm-season (`rural_credit.features.build.build_features`).  Agronomic features come",
        "from the daily rollups (`ft.readings_daily`, or hourly ones folded into days); counts are per season:",
        "the count over observed days × season days / observed days, NaN when fewer than half the season's",
        "days were observed.  **Missing** is NaN.  **Untrusted** is a separate boolean frame",
        "(`Features.trusted`): a sensor feature is untrusted when the data-trust check of its source",
        "quantity failed (a farm's metric whose readings passed every check less than 90 % of the time);",
        "`Features.for_scoring()` turns untrusted values into NaN, which the scorecard scores neutrally.",
        "",
        "| feature | unit | kind | group | source | formula | trust from |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in CATALOGUE:
        lines.append(f"| `{f.name}` | {f.unit} | {f.kind} | {f.group} | {f.source} | {f.formula} | "
                     f"{f.trust_source or '—'} |")
    return "\n".join(lines) + "\n"
