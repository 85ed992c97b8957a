"""``fieldtrust hw``: the reference builds' energy budget, bill of materials and wiring."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from hardware.energy_budget import (
    DEFAULT_AWAKE_S,
    DEFAULT_BATTERY_DERATING,
    DEFAULT_SUN_HOURS,
    DEFAULT_SYSTEM_EFFICIENCY,
    DEFAULT_TX_S,
    energy_budget,
    parse_interval,
)
from hardware.reference_build import BuildError, ReferenceBuild, get_build

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)

_BUILD_HELP = "A shipped build (node-esp32-soil, gateway-rpi) or a build YAML file."


def _load(name: str) -> ReferenceBuild:
    try:
        return get_build(name)
    except BuildError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None


def _interval(text: str) -> float:
    try:
        return parse_interval(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _ma(ma: float) -> str:
    return f"{ma * 1000:.1f} µA" if ma < 1 else f"{ma:,.1f} mA"


def _wh(wh: float) -> str:
    return f"{wh * 1000:.1f} mWh" if wh < 1 else f"{wh:,.2f} Wh"


def _days(days: float | None) -> str:
    return "-" if days is None else f"{days:,.0f} days ({days / 30.44:.1f} months)"


@app.command()
def budget(
    build: str = typer.Option(..., "--build", help=_BUILD_HELP),
    interval: float = typer.Option(..., "--interval", parser=_interval, help="Wake interval: 900s, 15m, 1h."),
    awake_s: float = typer.Option(DEFAULT_AWAKE_S, "--awake-s", help="Seconds awake per wake (until measured)."),
    tx_s: float = typer.Option(DEFAULT_TX_S, "--tx-s", help="Seconds of radio transmit within each wake."),
    sun_hours: float = typer.Option(DEFAULT_SUN_HOURS, "--sun-hours", help="Peak sun hours per day (worst month)."),
    efficiency: float = typer.Option(DEFAULT_SYSTEM_EFFICIENCY, "--efficiency", help="Panel to battery efficiency."),
    derating: float = typer.Option(DEFAULT_BATTERY_DERATING, "--derating", help="Share of capacity to plan on."),
    as_json: bool = typer.Option(False, "--json", help="Print the budget as JSON."),
) -> None:
    """Energy per day, battery life without sun and the solar panel needed, from the build's currents."""
    b = _load(build)
    try:
        r = energy_budget(b, interval, awake_s, tx_s, sun_hours, efficiency, derating)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(r.model_dump_json(indent=2))
        return
    t = Table("ref", "part", "between wakes mAh/day", "awake mAh/day", "total mAh/day", title=b.title)
    for p in sorted(r.parts, key=lambda p: -p.mah_per_day):
        mah = (p.sleep_mah_per_day, p.awake_mah_per_day, p.mah_per_day)
        t.add_row(p.ref, p.part_number, *(f"{v:.3f}" for v in mah))
    out.print(t)
    s = Table(show_header=False, box=None)
    s.add_row("wakes per day", f"{r.wakes_per_day:g} (every {r.interval_s:g} s, {r.awake_s:g} s awake, "
                               f"{r.tx_s:g} s tx)")
    s.add_row("current between wakes", f"{_ma(r.sleep_current_ma)} at {r.supply_v:g} V")
    s.add_row("charge per wake", f"{r.charge_per_wake_mas:.1f} mA·s")
    s.add_row("energy per day", f"{r.mah_per_day:,.2f} mAh = {_wh(r.wh_per_day)} (average {_ma(r.average_current_ma)})")
    s.add_row("battery usable", "-" if r.battery_usable_mah is None else
              f"{r.battery_usable_mah:.0f} mAh (derated ×{r.battery_derating:g}, above cut-off)")
    s.add_row("battery life without sun", _days(r.battery_life_days))
    panel = f"{r.panel_w_needed:.3f} W needed at {r.sun_hours:g} sun hours × {r.system_efficiency:g} efficiency"
    s.add_row("solar panel", panel)
    s.add_row("recommended panel", "larger than any standard panel" if r.panel_w_recommended is None
              else f"{r.panel_w_recommended:g} W")
    if r.panel_w_installed is not None:
        verdict = "[green]enough[/green]" if r.panel_sufficient else "[red]too small[/red]"
        s.add_row("installed panel", f"{r.panel_w_installed:g} W: {verdict}")
    out.print(s)


@app.command()
def bom(build: str = typer.Option(..., "--build", help=_BUILD_HELP)) -> None:
    """The bill of materials with unit prices and totals."""
    b = _load(build)
    t = Table("ref", "qty", "part", "manufacturer", "part number", "unit price", "line total", title=b.title)
    for p in b.parts:
        pr = p.price
        t.add_row(p.ref, str(p.quantity), p.name, p.manufacturer, p.part_number,
                  f"{pr.amount:.2f} {pr.currency}", f"{p.quantity * pr.amount:.2f} {pr.currency}")
    out.print(t)
    dates = sorted({p.price.as_of for p in b.parts})
    for currency, total in sorted(b.totals().items()):
        out.print(f"total {total:.2f} {currency} (indicative prices as of {dates[0]}"
                  f"{'' if len(dates) == 1 else f' to {dates[-1]}'})", highlight=False)


@app.command()
def wiring(build: str = typer.Option(..., "--build", help=_BUILD_HELP)) -> None:
    """The wiring tables: from pin, to pin, wire colour, notes."""
    b = _load(build)
    for table in b.wiring:
        t = Table("from", "to", "colour", "notes", title=f"{table.title} ({table.part})")
        for w in table.wires:
            t.add_row(w.from_pin, w.to_pin, w.colour, w.notes)
        out.print(t)
