"""``fieldtrust spec``: validate spec files, show a model, certify a device against its spec."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from device_specs.registry import MODELS_DIR, SpecError, builtin_specs, get_spec, load_spec_file

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@app.command()
def validate(paths: list[Path] = typer.Argument(None, help="Spec files or folders (default: shipped specs).")) -> None:
    """Validate spec files; exit 1 if any is invalid, naming file, point and key."""
    files: list[Path] = []
    for p in paths or [MODELS_DIR]:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    if not files:
        err.print("no spec files found")
        raise typer.Exit(1)
    bad = 0
    for f in files:
        try:
            s = load_spec_file(f)
        except SpecError as exc:
            bad += 1
            err.print(f"[red]invalid[/red] {exc}", highlight=False)
        else:
            out.print(f"[green]ok[/green] {f}  {s.key}  ({len(s.points)} points)", highlight=False)
    if bad:
        err.print(f"{bad} of {len(files)} spec files invalid")
        raise typer.Exit(1)


@app.command("list")
def list_models() -> None:
    """List the shipped sensor models."""
    t = Table("model", "version", "interface", "category", "points", "manufacturer")
    for s in builtin_specs().values():
        t.add_row(s.model, s.version, s.interface.value, s.category, str(len(s.points)), s.manufacturer)
    out.print(t)


@app.command()
def show(model: str = typer.Argument(..., help="Model id, model@version or a spec file.")) -> None:
    """Show a model's identity, line defaults and register map."""
    try:
        s = get_spec(model)
    except SpecError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"[bold]{s.key}[/bold]  {s.manufacturer} — {s.name}")
    line = f"interface {s.interface.value}"
    if s.serial:
        ser = s.serial
        line += f", {ser.baud} baud {ser.data_bits}{ser.parity.value}{ser.stop_bits}, unit {ser.unit_id}"
    out.print(line)
    out.print(f"source: {s.source.document} (rev. {s.source.revision})")
    t = Table("metric", "table", "address", "type", "order", "scale", "offset", "unit", "range", "poll s", "verified")
    for p in s.points:
        t.add_row(
            p.metric, p.table.value if p.table else (p.field or "-"),
            f"{p.address} (0x{p.address:04X})" if p.address is not None else "-",
            p.type.value, p.order.value, f"{p.scale:g}", f"{p.offset:g}", p.unit,
            f"{p.range[0]:g}..{p.range[1]:g}" if p.range else "-", f"{p.poll_interval_s:g}",
            "yes" if p.verified else "no",
        )
    out.print(t)
