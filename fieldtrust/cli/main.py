"""``fieldtrust``: one command, a sub-command per area of the platform."""

from __future__ import annotations

import typer

from fieldtrust.cli import edge, sim, spec

app = typer.Typer(
    name="fieldtrust",
    help="FieldTrust: trusted farm data from the field to a credit decision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(spec.app, name="spec", help="Device specs: validate, show, certify a device.")
app.add_typer(sim.app, name="sim", help="Hardware simulators (Modbus RTU bus, Modbus TCP).")
app.add_typer(edge.app, name="edge", help="The gateway agent: run, check, scan a bus.")


@app.command()
def demo(seconds: float = typer.Option(20.0, min=2, max=3600, help="How long the field runs.")) -> None:
    """Run FieldTrust end to end on this machine and account for every reading."""
    from fieldtrust.cli.demo import run_demo

    raise typer.Exit(run_demo(seconds))


if __name__ == "__main__":
    app()
