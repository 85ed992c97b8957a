"""``fieldtrust``: one command, a sub-command per area of the platform."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from fieldtrust.cli import bench, cloud, credit, edge, gateway, hw, node, sim, spec

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
app.add_typer(bench.app, name="bench", help="Benchmarks, run from a source checkout (bench/).")
app.add_typer(hw.app, name="hw", help="Reference hardware: energy budget, bill of materials, wiring.")
app.add_typer(credit.app, name="credit", help="Credit scorecard: train, score, monitor, approve versions.")
app.add_typer(node.app, name="node", help="Sensor nodes in the field: provision, verify, calibrate, replace, update.")
app.add_typer(gateway.app, name="gateway", help="Gateways: enroll (register, key file, agent config).")


@app.command()
def demo(
    farms: int = typer.Option(2, "--farms", min=1, max=20, help="Virtual farms, each with its own gateway."),
    duration: float | None = typer.Option(
        None, "--duration", min=2, help="Seconds the field produces; default: until Ctrl-C."
    ),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="API port (default: a free one)."),
    broker: Literal["auto", "mosquitto", "amqtt"] = typer.Option(
        "auto", help="The private broker: mosquitto (MQTT 5, logins and ACL), amqtt (pure Python, MQTT 3.1.1); "
                     "auto: FIELDTRUST_BROKER, else mosquitto when installed, else amqtt.",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where the demo keeps its data (default: FIELDTRUST_DEMO_DIR, else ./var/demo).",
    ),
) -> None:
    """Run FieldTrust end to end on this machine and account for every reading.

    Starts an embedded PostgreSQL (or FIELDTRUST_DATABASE_URL), a private broker (or
    FIELDTRUST_MQTT_URL), ingest workers, the API and virtual farms; a second run resumes on
    the same data.
    """
    from fieldtrust.cli.demo import run_demo

    raise typer.Exit(run_demo(farms, duration, port, broker, data_dir))


if __name__ == "__main__":
    app()
