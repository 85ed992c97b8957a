"""Reference builds as data: a bill of materials with currents and prices, and wiring tables.

A build is a YAML file in ``hardware/reference/`` (the file name is the build's name). Currents
are per unit and refer to a *rail*; each rail says how it is fed from the build's supply (battery
or PSU), so the energy budget can turn every part's current into current drawn from the supply.
Errors name the file and the key (``parts[3] (U4).currents.rail``), like the device-spec loader.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device_specs.registry import UniqueKeyLoader, builtin_specs, yaml_where

REFERENCE_DIR = Path(__file__).parent / "reference"
MAX_BUILD_BYTES = 256 * 1024


class BuildError(ValueError):
    """A build file is unreadable or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Basis(StrEnum):
    """Where a current figure comes from, so a reader knows how far to trust it."""

    datasheet = "datasheet"  # a typical value from the cited datasheet
    calculated = "calculated"  # Ohm's law on the circuit (e.g. a divider across the battery)
    measured = "measured"  # measured on a bench build
    estimate = "estimate"  # no datasheet figure for this mode: an engineering estimate, see source


class Feed(StrEnum):
    """How a rail is fed from the supply, which decides how its current shows at the supply."""

    direct = "direct"  # the rail is the supply
    linear = "linear"  # through a linear regulator: the same current flows from the supply
    switching = "switching"  # through a DC-DC converter: power is conserved, less its efficiency


class Rail(_Strict):
    voltage_v: float = Field(gt=0, le=60)
    feed: Feed
    efficiency: float | None = Field(None, gt=0, le=1, description="switching rails only")
    notes: str = ""

    @model_validator(mode="after")
    def _efficiency_for_switching(self) -> Rail:
        if (self.feed is Feed.switching) != (self.efficiency is not None):
            raise ValueError("efficiency is required for a switching rail and only there")
        return self


class Currents(_Strict):
    """Per-unit currents on one rail, in mA."""

    rail: str
    active_ma: float = Field(ge=0, description="while the node is awake (or the gateway is busy)")
    sleep_ma: float | None = Field(
        None, ge=0, description="between wakes (deep sleep, or a gateway's idle); absent: switched off"
    )
    tx_ma: float | None = Field(None, ge=0, description="during radio transmit bursts, instead of active_ma")
    basis: Basis
    source: str = Field(min_length=3, description="datasheet table or figure, or how the number was reached")


class Price(_Strict):
    amount: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    as_of: date
    source: str = Field(min_length=3)


class Battery(_Strict):
    chemistry: str
    capacity_mah: float = Field(gt=0)
    nominal_v: float = Field(gt=0)
    cutoff_v: float = Field(gt=0, description="where the build stops working (regulator dropout or protection)")
    capacity_to_cutoff: float = Field(gt=0, le=1, description="share of rated capacity delivered above cutoff_v")
    source: str = Field(min_length=3)


class Part(_Strict):
    ref: str = Field(pattern=r"^[A-Z]{1,4}[0-9]{0,3}$", description="reference designator, e.g. U1, BT1")
    name: str = Field(min_length=2)
    manufacturer: str = Field(min_length=2)
    part_number: str = Field(min_length=2)
    quantity: int = Field(ge=1)
    datasheet: str | None = Field(None, pattern=r"^https?://\S+$", description="required for datasheet figures")
    price: Price
    currents: Currents | None = None
    battery: Battery | None = None
    panel_w: float | None = Field(None, gt=0, description="rated power of a solar panel")
    spec: str | None = Field(None, description="the device spec (device_specs model id) the node reads it with")
    notes: str = ""

    @model_validator(mode="after")
    def _cited(self) -> Part:
        if self.datasheet is None and (self.battery is not None or (
                self.currents is not None and self.currents.basis is Basis.datasheet)):
            raise ValueError("datasheet: required key is missing (the datasheet figures cite it)")
        return self


class Wire(_Strict):
    from_pin: str = Field(alias="from", pattern=r"^[A-Z]{1,4}[0-9]{0,3}\.\S.*$")
    to_pin: str = Field(alias="to", pattern=r"^[A-Z]{1,4}[0-9]{0,3}\.\S.*$")
    colour: str = Field(min_length=2)
    notes: str = ""


class WiringTable(_Strict):
    title: str = Field(min_length=2)
    part: str = Field(description="ref of the part this table wires up")
    wires: list[Wire] = Field(min_length=1)


class ReferenceBuild(_Strict):
    schema_: Literal["fieldtrust.reference-build/1"] = Field(alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    kind: Literal["node", "gateway"]
    title: str = Field(min_length=2)
    description: str = ""
    supply_v: float = Field(gt=0, le=60, description="voltage of the supply every current is referred to")
    rails: dict[str, Rail] = Field(min_length=1)
    parts: list[Part] = Field(min_length=1)
    wiring: list[WiringTable] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> ReferenceBuild:
        refs: dict[str, int] = {}
        for i, p in enumerate(self.parts):
            if p.ref in refs:
                raise ValueError(f"parts[{i}] ({p.ref}).ref: duplicate of parts[{refs[p.ref]}]")
            refs[p.ref] = i
            if p.spec is not None and p.spec not in builtin_specs():
                raise ValueError(f"parts[{i}] ({p.ref}).spec: unknown device spec {p.spec!r}")
            if p.currents is not None and p.currents.rail not in self.rails:
                raise ValueError(
                    f"parts[{i}] ({p.ref}).currents.rail: unknown rail {p.currents.rail!r} "
                    f"(rails: {', '.join(sorted(self.rails))})"
                )
        batteries = [(i, p) for i, p in enumerate(self.parts) if p.battery is not None]
        if len(batteries) > 1:
            raise ValueError(f"parts[{batteries[1][0]}] ({batteries[1][1].ref}).battery: only one battery per build")
        for i, p in batteries:
            assert p.battery is not None
            if abs(p.battery.nominal_v - self.supply_v) > 1e-9:
                raise ValueError(
                    f"parts[{i}] ({p.ref}).battery.nominal_v: {p.battery.nominal_v} V must equal supply_v "
                    f"{self.supply_v} V (the battery is the supply)"
                )
        for t, table in enumerate(self.wiring):
            if table.part not in refs:
                raise ValueError(f"wiring[{t}] ({table.title}).part: unknown part {table.part!r}")
            for w, wire in enumerate(table.wires):
                for key, pin in (("from", wire.from_pin), ("to", wire.to_pin)):
                    ref = pin.split(".", 1)[0]
                    if ref not in refs:
                        raise ValueError(
                            f"wiring[{t}] ({table.title}).wires[{w}].{key}: unknown part {ref!r} in {pin!r}"
                        )
        return self

    @property
    def battery_part(self) -> Part | None:
        return next((p for p in self.parts if p.battery is not None), None)

    @property
    def panel_w(self) -> float | None:
        """Installed solar panel power, or None when the build has no panel."""
        total = sum(p.panel_w * p.quantity for p in self.parts if p.panel_w is not None)
        return total or None

    def totals(self) -> dict[str, float]:
        """Cost of the bill of materials per currency (quantity × unit price)."""
        out: dict[str, float] = {}
        for p in self.parts:
            out[p.price.currency] = out.get(p.price.currency, 0.0) + p.quantity * p.price.amount
        return out


def _where(data: object, loc: tuple[int | str, ...]) -> str:
    """('parts', 3, 'price', 'currency') -> 'parts[3] (U4).price.currency', naming list items by ref/title."""
    out = ""
    node = data
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            label = next((node[k] for k in ("ref", "title") if isinstance(node, dict) and k in node), None)
            out += f"[{item}]" + (f" ({label})" if isinstance(label, str) else "")
        else:
            node = node.get(item) if isinstance(node, dict) else None
            out += f".{item}" if out else item
    return out


def _errors(exc: ValidationError, data: dict, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = {"extra_forbidden": "unknown key", "missing": "required key is missing"}.get(err["type"], err["msg"])
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{origin}: {_where(data, loc)}: {msg}" if loc else f"{origin}: {msg}")
    return "\n".join(lines)


def parse_build(text: str, origin: str = "<build>") -> ReferenceBuild:
    """Parse YAML text into a validated build, or raise BuildError naming ``origin`` and the key."""
    if len(text.encode()) > MAX_BUILD_BYTES:
        raise BuildError(f"{origin}: larger than {MAX_BUILD_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise BuildError(f"{origin}: not valid YAML{yaml_where(exc)}") from None
    if not isinstance(data, dict):
        raise BuildError(f"{origin}: a build must be a YAML mapping, got {type(data).__name__}")
    try:
        return ReferenceBuild.model_validate(data)
    except ValidationError as exc:
        raise BuildError(_errors(exc, data, origin)) from None


def load_build_file(path: Path) -> ReferenceBuild:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot read: {exc}") from None
    build = parse_build(text, str(path))
    if build.name != path.stem:
        raise BuildError(f"{path}: name: {build.name!r} must match the file name {path.stem!r}")
    return build


@lru_cache(maxsize=1)
def reference_builds() -> dict[str, ReferenceBuild]:
    """Every build shipped in hardware/reference, by name."""
    return {b.name: b for b in (load_build_file(p) for p in sorted(REFERENCE_DIR.glob("*.yaml")))}


def get_build(name_or_path: str) -> ReferenceBuild:
    """A shipped build by name (``node-esp32-soil``), or a build file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return load_build_file(Path(name_or_path))
    builds = reference_builds()
    if name_or_path not in builds:
        raise BuildError(f"unknown reference build {name_or_path!r}; known: {', '.join(sorted(builds))}")
    return builds[name_or_path]
