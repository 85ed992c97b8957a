"""``fieldtrust cloud``: the cloud side (store, registry, broker configuration, ingest, API).

Each command imports what it needs inside its function, so one area's imports never slow down
or break another's commands.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


# -- store (migrations, upkeep) -------------------------------------------------------------------


@app.command()
def migrate(
    database_url: str | None = typer.Option(
        None, "--database-url", help="PostgreSQL DSN (default: FIELDTRUST_DATABASE_URL or the configured one)."
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="Force the layout of a NEW database: timescale or postgres (default: detect)."
    ),
) -> None:
    """Apply pending schema migrations (safe to run from several processes at once)."""
    from cloud.config import CloudSettings
    from fieldtrust.cli import cloud_support as support

    if backend not in (None, "timescale", "postgres"):
        typer.echo(f"--backend must be timescale or postgres; got {backend!r}", err=True)
        raise typer.Exit(2)
    applied = support.migrate(database_url or CloudSettings().database_url, backend)  # type: ignore[arg-type]
    typer.echo("\n".join(f"applied {name}" for name in applied) if applied else "schema is up to date")


@app.command()
def maintain(
    database_url: str | None = typer.Option(None, "--database-url", help="PostgreSQL DSN (default: configured)."),
    interval: float = typer.Option(60.0, "--interval", min=1, help="Seconds between upkeep cycles."),
    once: bool = typer.Option(False, "--once", help="Run one cycle and exit."),
) -> None:
    """Keep the store in shape: partitions ahead, rollups current, retention applied (until Ctrl-C)."""
    import logging
    import signal

    from cloud.config import CloudSettings
    from cloud.store import db
    from cloud.store.maintenance import Maintenance

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = CloudSettings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    loop = Maintenance.from_settings(settings, interval_s=interval)
    if once:
        with db.connect(settings.database_url, autocommit=True, application="fieldtrust-maintenance") as conn:
            loop.cycle(conn)
        typer.echo(str(loop.status))
        raise typer.Exit(0 if loop.status.role == "owner" else 3)
    for signum in (signal.SIGTERM, signal.SIGINT):  # end after the cycle in progress, never halfway through it
        signal.signal(signum, lambda *_: loop.stop(timeout=0))
    typer.echo(f"store maintenance: a cycle every {interval:g} s; Ctrl-C to stop")
    loop.run()


# -- registry, broker access, API -------------------------------------------------------------------
# Secrets (keys, broker passwords) are generated unless given and printed once; the database keeps
# keys encrypted with the KEK (FIELDTRUST_KEK / FIELDTRUST_KEK_FILE) and passwords only hashed.
# Shared steps (settings, KEK, one transaction, errors to exit codes) are in cloud_support.

_DB_OPTION = typer.Option(None, "--database-url", help="PostgreSQL DSN (default: FIELDTRUST_DATABASE_URL).")


@app.command("register-tenant")
def register_tenant(
    tenant_id: str = typer.Argument(..., help="1-64 of A-Z a-z 0-9 - _ ."),
    name: str = typer.Option(..., "--name", help="The organisation's name."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register a tenant (a cooperative, a company: the owner of farms and their data)."""
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    tenant = support.in_transaction(support.settings(database_url),
                                    lambda c: registry.register_tenant(c, tenant_id, name))
    typer.echo(f"tenant {tenant.id} registered")


@app.command("register-farm")
def register_farm(
    tenant: str = typer.Argument(..., help="The tenant the farm belongs to."),
    farm_id: str = typer.Argument(..., help="1-64 of A-Z a-z 0-9 - _ ."),
    name: str = typer.Option(..., "--name"),
    latitude: float | None = typer.Option(None, "--lat", min=-90, max=90),
    longitude: float | None = typer.Option(None, "--lon", min=-180, max=180),
    area_ha: float | None = typer.Option(None, "--area-ha", min=0),
    crop: str | None = typer.Option(None, "--crop"),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register a farm of a tenant."""
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    farm = support.in_transaction(support.settings(database_url), lambda c: registry.register_farm(
        c, tenant, farm_id, name, latitude=latitude, longitude=longitude, area_ha=area_ha, crop=crop))
    typer.echo(f"farm {farm.id} registered in tenant {farm.tenant_id}")


@app.command("register-gateway")
def register_gateway(
    tenant: str = typer.Argument(...),
    gateway_id: str = typer.Argument(..., help="The gateway's id (gateway.id in its configuration)."),
    farm: str | None = typer.Option(None, "--farm", help="The farm it stands on."),
    name: str = typer.Option("", "--name"),
    key_hex: str | None = typer.Option(None, "--key-hex", help="Its HMAC key as hex (default: 32 random bytes)."),
    mqtt_username: str | None = typer.Option(None, "--mqtt-username", help="Broker login (default: the gateway id)."),
    mqtt_password: str | None = typer.Option(None, "--mqtt-password", help="Broker password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register a gateway with its HMAC key and broker login; prints the key and password ONCE."""
    from cloud.broker_acl import new_password
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    settings = support.settings(database_url)
    kek = support.kek(settings)
    key, password = support.key_from_hex(key_hex), mqtt_password or new_password()
    gateway = support.in_transaction(settings, lambda c: registry.register_gateway(
        c, tenant, gateway_id, farm, key, kek, mqtt_username, password, name=name))
    typer.echo(f"gateway {gateway.id} registered in tenant {gateway.tenant_id}"
               + (f" on farm {gateway.farm_id}" if gateway.farm_id else ""))
    typer.echo("These secrets are shown once; put them in the gateway's configuration now:")
    typer.echo(f"  gateway.key_epoch: {gateway.key_epoch}")
    typer.echo(f"  gateway key (hex, for gateway.key_file): {key.hex()}")
    typer.echo(f"  uplink.broker.username: {gateway.mqtt_username}")
    typer.echo(f"  uplink.broker.password: {password}")
    typer.echo("Then run `fieldtrust cloud broker-config` so the broker knows the login.")


@app.command("register-device")
def register_device(
    tenant: str = typer.Argument(...),
    device_id: str = typer.Argument(..., help="The device id its messages carry."),
    kind: str = typer.Option(..., "--kind", help="node (signs its own messages) or bus (behind a gateway)."),
    farm: str | None = typer.Option(None, "--farm", help="Its farm (default: its gateway's)."),
    gateway: str | None = typer.Option(None, "--gateway", help="The gateway it reports through (bus: required)."),
    spec: str | None = typer.Option(None, "--spec", help="Device spec, model or model@version (bus: required)."),
    key_hex: str | None = typer.Option(None, "--key-hex", help="A node's HMAC key as hex (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register a sensor node (prints its key ONCE) or a bus device behind a gateway."""
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    if kind not in ("node", "bus"):
        typer.echo(f"--kind must be node or bus; got {kind!r}", err=True)
        raise typer.Exit(2)
    settings = support.settings(database_url)
    kek = support.kek(settings)
    key = support.key_from_hex(key_hex) if kind == "node" else None
    if kind == "bus" and key_hex is not None:
        typer.echo("--key-hex: a bus device is attested by its gateway and takes no key", err=True)
        raise typer.Exit(2)
    device = support.in_transaction(settings, lambda c: registry.register_device(
        c, tenant, device_id, kind, farm, gateway, spec, key, kek))
    typer.echo(f"{device.kind} device {device.id} registered in tenant {device.tenant_id}"
               + (f" on farm {device.farm_id}" if device.farm_id else ""))
    if key is not None:
        typer.echo(f"Shown once; put it on the node now:\n  key_epoch: {device.key_epoch}\n  key (hex): {key.hex()}")


@app.command("register-ingest-credential")
def register_ingest_credential(
    username: str = typer.Option("ingest", "--username", help="The broker login the ingest workers share."),
    password: str | None = typer.Option(None, "--password", help="Its password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register (or replace) the ingest workers' broker login; prints the password ONCE."""
    from cloud.broker_acl import new_password
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    secret = password or new_password()
    support.in_transaction(support.settings(database_url),
                           lambda c: registry.register_service_account(c, username, secret, "ingest"))
    typer.echo(f"ingest broker login {username} registered; its password (shown once): {secret}")
    typer.echo(f"Give the workers FIELDTRUST_MQTT_URL=mqtt://{username}:<password>@<broker>:<port>, "
               "then run `fieldtrust cloud broker-config`.")


@app.command("rotate-key")
def rotate_key(
    tenant: str = typer.Argument(...),
    owner_kind: str = typer.Argument(..., help="gateway or device"),
    owner_id: str = typer.Argument(...),
    key_hex: str | None = typer.Option(None, "--key-hex", help="The new key as hex (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Add the next key epoch (older epochs stay valid until revoked); prints the new key ONCE."""
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    settings = support.settings(database_url)
    kek = support.kek(settings)
    key = support.key_from_hex(key_hex)
    epoch = support.in_transaction(settings, lambda c: registry.rotate_key(c, tenant, owner_kind, owner_id, key, kek))
    typer.echo(f"{owner_kind} {owner_id}: key epoch {epoch} added; shown once:\n  key_epoch: {epoch}\n"
               f"  key (hex): {key.hex()}\nRevoke the old epoch once the device runs on the new one.")


@app.command("revoke-key")
def revoke_key(
    tenant: str = typer.Argument(...),
    owner_kind: str = typer.Argument(..., help="gateway or device"),
    owner_id: str = typer.Argument(...),
    epoch: int = typer.Argument(..., min=0),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Revoke one key epoch: messages signed with it are refused from now on."""
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    revoked = support.in_transaction(support.settings(database_url),
                                     lambda c: registry.revoke_key(c, tenant, owner_kind, owner_id, epoch))
    typer.echo(f"{owner_kind} {owner_id}: key epoch {revoked.epoch} revoked at {revoked.revoked_at.isoformat()}")


@app.command("broker-config")
def broker_config(
    out: str = typer.Option(..., "--out", help="Folder for fieldtrust.passwd and fieldtrust.acl."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Write Mosquitto's password file and ACL file from the registry (then: kill -HUP mosquitto)."""
    from pathlib import Path

    from cloud.broker_acl import write_broker_config
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    accounts = support.in_transaction(support.settings(database_url), registry.broker_accounts)
    try:
        password_file, acl_file = write_broker_config(accounts, Path(out))
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot write the broker configuration: {exc}", err=True)
        raise typer.Exit(1) from None
    gateways = sum(a.role == "gateway" for a in accounts)
    typer.echo(f"wrote {password_file} and {acl_file}: {gateways} gateway(s), {len(accounts) - gateways} service(s)")
    if not any(a.role == "ingest" for a in accounts):
        typer.echo("warning: no ingest login registered (fieldtrust cloud register-ingest-credential): "
                   "ingest workers will be refused", err=True)
    typer.echo(f"mosquitto.conf: password_file {password_file} / acl_file {acl_file} / allow_anonymous false; "
               "reload with SIGHUP")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    apply_migrations: bool = typer.Option(True, "--migrate/--no-migrate", help="Apply pending migrations first."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs) until Ctrl-C."""
    import uvicorn

    from cloud.api.main import create_app
    from fieldtrust.cli import cloud_support as support

    settings = support.settings(database_url)
    if apply_migrations:
        support.migrate(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


# -- ingest -----------------------------------------------------------------------------------------


@app.command()
def ingest(
    worker_id: str | None = typer.Option(
        None, "--worker-id", help="Worker and MQTT client id; keep it across restarts (default: ingest-<host>)."
    ),
    write: str = typer.Option("direct", "--write", help="direct (COPY, staging only on overlap) or merge (staging)."),
    session_expiry: int = typer.Option(3600, "--session-expiry", min=0, help="Seconds the broker keeps our session."),
    apply_migrations: bool = typer.Option(True, "--migrate/--no-migrate", help="Apply pending migrations first."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    committers: int | None = typer.Option(
        None, "--committers", min=1, max=8,
        help="Commit threads, each with its own connection (default 2; 1 when several workers share few cores).",
    ),
) -> None:
    """Run an ingest worker until Ctrl-C: gateways' uplinks from the broker into the database.

    Settings come from FIELDTRUST_DATABASE_URL, FIELDTRUST_MQTT_URL, FIELDTRUST_KEK and FIELDTRUST_INGEST_*.
    """
    import dataclasses
    import logging

    import psycopg
    from pydantic import ValidationError

    from cloud.config import CloudSettings
    from cloud.ingest.worker import Worker, WorkerOptions, default_worker_id
    from fieldtrust.cli import cloud_support as support

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if write not in ("direct", "merge"):
        typer.echo(f"--write must be direct or merge; got {write!r}", err=True)
        raise typer.Exit(2)
    try:
        settings = CloudSettings()
        options = WorkerOptions(worker_id or default_worker_id(settings), scheme=write,  # type: ignore[arg-type]
                                session_expiry_s=session_expiry)
        if committers is not None:
            options = dataclasses.replace(options, committers=committers)
        worker = Worker(settings, options)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"cannot start the ingest worker: {exc}", err=True)
        raise typer.Exit(2) from None
    if apply_migrations:
        support.migrate(settings.database_url)
    try:
        code = worker.run()
    except psycopg.OperationalError as exc:
        typer.echo(f"cannot reach the database: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
