"""Energy per day of a reference build, battery life without sun, and the solar panel it needs.

The model is a duty cycle. Between wakes every part that stays powered draws its ``sleep_ma``
(parts without one are switched off). Each wake lasts ``awake_s``, during which every part draws
its ``active_ma``, except for ``tx_s`` of radio transmit bursts in which parts with a ``tx_ma``
draw that instead. Currents are turned into current at the supply through their rail (a linear
regulator passes current through; a DC-DC converter conserves power less its efficiency).

The awake time is a parameter; the default 2.5 s is boot from deep sleep (~0.3 s), sensor reads
(~0.77 s: the DS18B20's 750 ms 12-bit conversion dominates), Wi-Fi association with a stored BSSID
and channel plus DHCP (~1 s), and the firmware's network part of the wake as measured against a
real Mosquitto (tests/test_firmware_node.py: connect, signed birth, subscribe, one heartbeat frame,
the 300 ms window for retained notices: 0.40 s).  ``tx_s`` (default 0.3 s) is the share of that
spent transmitting (probe/auth/assoc, DHCP, TLS and MQTT frames at 802.11b/g rates).
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field

from hardware.reference_build import Feed, ReferenceBuild

SECONDS_PER_DAY = 86_400
DEFAULT_AWAKE_S = 2.5
DEFAULT_TX_S = 0.3
DEFAULT_SUN_HOURS = 4.0
#: charger (MPPT buck ~0.85) × panel heat, dust and tilt losses (~0.7): what reaches the battery
DEFAULT_SYSTEM_EFFICIENCY = 0.6
#: ageing, cold and self-discharge: the share of the battery's capacity to plan on
DEFAULT_BATTERY_DERATING = 0.8
#: panel sizes sold off the shelf, in watts
STANDARD_PANEL_W = (0.5, 1.0, 2.0, 3.0, 5.0, 6.0, 10.0, 20.0, 30.0, 50.0, 100.0, 150.0, 200.0, 300.0)

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
MIN_INTERVAL_S = 10
MAX_INTERVAL_S = SECONDS_PER_DAY


def parse_interval(text: str) -> float:
    """'15m', '1h', '900s' -> seconds; ValueError saying what is accepted otherwise."""
    m = _INTERVAL.match(text)
    if m is None:
        raise ValueError(f"interval {text!r}: expected a number with a unit s, m or h (e.g. 900s, 15m, 1h)")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"interval {text!r}: must be between {MIN_INTERVAL_S} s and 24 h, got {seconds:g} s")
    return seconds


def standard_panel_w(needed_w: float) -> float | None:
    """The smallest standard panel of at least ``needed_w``; None when none is big enough."""
    return next((w for w in STANDARD_PANEL_W if w >= needed_w), None)


class PartEnergy(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    name: str
    part_number: str
    sleep_mah_per_day: float
    awake_mah_per_day: float

    @property
    def mah_per_day(self) -> float:
        return self.sleep_mah_per_day + self.awake_mah_per_day


class EnergyBudget(BaseModel):
    """One build's energy per day under one duty cycle, at its supply voltage."""

    model_config = ConfigDict(frozen=True)

    build: str
    supply_v: float
    interval_s: float
    awake_s: float
    tx_s: float
    wakes_per_day: float
    sleep_current_ma: float = Field(description="current from the supply between wakes")
    charge_per_wake_mas: float = Field(description="mA·s from the supply in one wake")
    parts: list[PartEnergy]
    mah_per_day: float
    wh_per_day: float
    average_current_ma: float
    battery_derating: float
    battery_usable_mah: float | None = Field(description="rated × share above cut-off × derating; None: no battery")
    battery_life_days: float | None = Field(description="days without sun; None: no battery")
    sun_hours: float
    system_efficiency: float
    panel_w_needed: float
    panel_w_recommended: float | None = Field(description="next standard size; None: above the largest")
    panel_w_installed: float | None
    panel_sufficient: bool | None = Field(description="installed ≥ needed; None: no panel in the build")


def _to_supply(build: ReferenceBuild, rail_name: str) -> float:
    """Factor turning a current on ``rail_name`` into the current it draws from the supply."""
    rail = build.rails[rail_name]
    if rail.feed is Feed.switching:
        assert rail.efficiency is not None  # the schema requires it for switching rails
        return rail.voltage_v / (rail.efficiency * build.supply_v)
    return 1.0


def energy_budget(
    build: ReferenceBuild,
    interval_s: float,
    awake_s: float = DEFAULT_AWAKE_S,
    tx_s: float = DEFAULT_TX_S,
    sun_hours: float = DEFAULT_SUN_HOURS,
    system_efficiency: float = DEFAULT_SYSTEM_EFFICIENCY,
    battery_derating: float = DEFAULT_BATTERY_DERATING,
) -> EnergyBudget:
    """The energy budget of ``build`` waking every ``interval_s`` seconds; ValueError on impossible inputs."""
    if not 0 < awake_s < interval_s:
        raise ValueError(f"awake time must be above 0 and below the interval ({interval_s:g} s); got {awake_s:g} s")
    if not 0 <= tx_s <= awake_s:
        raise ValueError(f"tx time must be between 0 and the awake time ({awake_s:g} s); got {tx_s:g} s")
    if not 0 < sun_hours <= 24:
        raise ValueError(f"sun hours must be above 0 and at most 24; got {sun_hours:g}")
    if not 0 < system_efficiency <= 1:
        raise ValueError(f"system efficiency must be above 0 and at most 1; got {system_efficiency:g}")
    if not 0 < battery_derating <= 1:
        raise ValueError(f"battery derating must be above 0 and at most 1; got {battery_derating:g}")

    wakes = SECONDS_PER_DAY / interval_s
    asleep_s = SECONDS_PER_DAY - wakes * awake_s
    parts: list[PartEnergy] = []
    sleep_ma = 0.0
    per_wake_mas = 0.0
    for p in build.parts:
        c = p.currents
        if c is None:
            continue
        k = _to_supply(build, c.rail) * p.quantity
        part_sleep_ma = (c.sleep_ma or 0.0) * k
        tx_extra = (c.tx_ma - c.active_ma) * tx_s if c.tx_ma is not None else 0.0
        part_wake_mas = (c.active_ma * awake_s + tx_extra) * k
        sleep_ma += part_sleep_ma
        per_wake_mas += part_wake_mas
        parts.append(PartEnergy(
            ref=p.ref, name=p.name, part_number=p.part_number,
            sleep_mah_per_day=part_sleep_ma * asleep_s / 3600, awake_mah_per_day=part_wake_mas * wakes / 3600,
        ))
    mah = sum(pe.mah_per_day for pe in parts)
    wh = mah * build.supply_v / 1000

    usable = life = None
    if (bp := build.battery_part) is not None and bp.battery is not None:
        usable = bp.battery.capacity_mah * bp.quantity * bp.battery.capacity_to_cutoff * battery_derating
        life = usable / mah if mah > 0 else math.inf

    needed_w = wh / (sun_hours * system_efficiency)
    installed = build.panel_w
    return EnergyBudget(
        build=build.name, supply_v=build.supply_v, interval_s=interval_s, awake_s=awake_s, tx_s=tx_s,
        wakes_per_day=wakes, sleep_current_ma=sleep_ma, charge_per_wake_mas=per_wake_mas, parts=parts,
        mah_per_day=mah, wh_per_day=wh, average_current_ma=mah / 24,
        battery_derating=battery_derating, battery_usable_mah=usable, battery_life_days=life,
        sun_hours=sun_hours, system_efficiency=system_efficiency,
        panel_w_needed=needed_w, panel_w_recommended=standard_panel_w(needed_w),
        panel_w_installed=installed, panel_sufficient=None if installed is None else installed >= needed_w,
    )
