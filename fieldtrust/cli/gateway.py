"""``fieldtrust gateway``: enroll a gateway (register it, write its key file and agent configuration)."""

from __future__ import annotations

from pathlib import Path

import typer

from fieldtrust.cli.provisioning_support import cloud_client, console, fail

app = typer.Typer(no_args_is_help=True)


@app.command()
def enroll(
    gateway_id: str = typer.Argument(..., help="The gateway's id (1-64 of A-Z a-z 0-9 - _ .)."),
    tenant: str = typer.Option(..., "--tenant", envvar="FIELDTRUST_TENANT", help="The tenant (FIELDTRUST_TENANT)."),
    farm: str | None = typer.Option(None, "--farm", help="The farm it stands on."),
    name: str = typer.Option("", "--name", help="A name people know it by (e.g. 'pump house')."),
    uplink_host: str = typer.Option(..., "--uplink-host", help="The cloud broker's host name."),
    uplink_port: int = typer.Option(8883, "--uplink-port", min=1, max=65535),
    tls: bool = typer.Option(True, "--tls/--no-tls", help="TLS to the cloud broker (always, outside a lab)."),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="The broker's CA on the gateway (default: system)."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for gateway.yaml and gateway.key."),
    api_url: str | None = typer.Option(None, "--api-url", help="The cloud API (default: FIELDTRUST_API_URL)."),
    token: str | None = typer.Option(None, "--token", help="The API credential (default: FIELDTRUST_ADMIN_TOKEN)."),
) -> None:
    """Register a gateway with its key and broker login, and write its agent config and key file (mode 0600)."""
    from provisioning.errors import ProvisioningError
    from provisioning.gateway import Uplink, enroll

    try:
        done = enroll(cloud_client(api_url, token), tenant, gateway_id, farm, name, out,
                      Uplink(uplink_host, uplink_port, tls, ca_file))
    except ProvisioningError as exc:
        fail(exc)
        return
    console.print(f"gateway {done.gateway_id} registered in {done.tenant} (key epoch {done.key_epoch}, broker login "
                  f"{done.mqtt_username})", highlight=False)
    console.print(f"wrote {done.config_path} and {done.key_path}: copy them to the gateway's /etc/fieldtrust/, "
                  "then `fieldtrust edge check --config /etc/fieldtrust/gateway.yaml`", highlight=False)
    console.print("the cloud's broker learns the login with `fieldtrust cloud broker-config`")
