"""``fieldtrust``: one command, a sub-command per area of the platform."""

from __future__ import annotations

from typing import Literal

import typer

from fieldtrust.cli import cloud, edge, sim, spec

app = typer.Typer(
    name="fieldtrust",
    help="FieldTrust: trusted farm data from the field to a credit decision.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(spec.app, name="spec", help="Device specs: validate, show, certify a device.")
app.add_typer(sim.app, name="sim", help="Hardware simulators (Modbus RTU bus, Modbus TCP).")
app.add_typer(edge.app, name="edge", help="The gateway agent: run, check, scan a bus.")
app.add_typer(cloud.app, name="cloud", help="The cloud: database, registry, broker access, ingest, API.")


@app.command()
def demo(
    seconds: float = typer.Option(20.0, min=2, max=3600, help="How long the field runs."),
    broker: Literal["auto", "local", "mosquitto", "amqtt"] = typer.Option(
        "auto",
        help="auto: the local broker on 127.0.0.1:1883 when one listens, else a private one; local: only that one; "
             "mosquitto, amqtt: a private broker of that kind.",
    ),
) -> None:
    """Run FieldTrust end to end on this machine and account for every reading."""
    from fieldtrust.cli.demo import run_demo

    raise typer.Exit(run_demo(seconds, broker))


if __name__ == "__main__":
    app()
