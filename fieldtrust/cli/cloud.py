"""``fieldtrust cloud``: the cloud side (store, registry, broker configuration, ingest, API).

Each command imports what it needs inside its function, so one area's imports never slow down
or break another's commands.
"""

from __future__ import annotations

import typer

from fieldtrust.cli import registry as registry_commands

app = typer.Typer(no_args_is_help=True)
registry_commands.register(app)  # create-tenant, import-farms, claim-code


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


@app.command("invite-user")
def invite_user(
    tenant: str = typer.Argument(..., help="The tenant the user belongs to."),
    login: str = typer.Argument(..., help="Sign-in name: lower-case letters, digits and _ . @ + -"),
    roles: list[str] = typer.Option(..., "--role", help="farmer, clerk, technician, credit_officer, ops or "
                                    "tenant_admin (repeat for several)."),
    display_name: str = typer.Option("", "--name", help="The person's name as shown to others."),
    farmer_id: str | None = typer.Option(None, "--farmer-id", help="The farmer's own record (farmers: required)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Where the web pages are served, for the link."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Invite a user (e.g. a tenant's first admin); prints the invite token ONCE."""
    import psycopg

    from cloud.auth import users
    from cloud.store.scope import tenant_scope
    from fieldtrust.cli import cloud_support as support

    def invite(conn: psycopg.Connection) -> tuple[users.User, str]:
        tenant_scope(conn, tenant)  # narrower than the command's platform scope: this tenant's rows only
        return users.invite(conn, tenant, login, roles, "cli", display_name=display_name, farmer_id=farmer_id)

    user, token = support.in_transaction(support.settings(database_url), invite)
    typer.echo(f"user {user.login} ({user.id}) invited to tenant {user.tenant_id} as {', '.join(user.roles)}")
    typer.echo(f"The invite token is shown once and is valid until {user.invite_expires_at:%Y-%m-%d %H:%M} UTC:")
    typer.echo(f"  {token}")
    if base_url:
        typer.echo(f"  link: {base_url.rstrip('/')}/accept-invite#token={token}")
    typer.echo("It is accepted with POST /api/v1/auth/accept-invite {\"token\": ..., \"password\": ...}"
               + (" (farmers: \"pin\" too)" if "farmer" in roles else ""))


@app.command("register-ingest-credential")
def register_ingest_credential(
    username: str = typer.Option("ingest", "--username", help="The broker login the ingest workers share."),
    password: str | None = typer.Option(None, "--password", help="Its password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register (or replace) the ingest workers' broker login; prints the password ONCE."""
    _register_service_login("ingest", username, password, database_url)
    typer.echo(f"Give the workers FIELDTRUST_MQTT_URL=mqtt://{username}:<password>@<broker>:<port>, "
               "then run `fieldtrust cloud broker-config`.")


def _register_service_login(role: str, username: str, password: str | None, database_url: str | None) -> None:
    """Register (or replace) a cloud service's broker login (cloud.broker_acl.SERVICE_ACLS); prints the password."""
    from cloud.broker_acl import new_password
    from cloud.store import registry
    from fieldtrust.cli import cloud_support as support

    secret = password or new_password()
    support.in_transaction(support.settings(database_url),
                           lambda c: registry.register_service_account(c, username, secret, role))
    typer.echo(f"{role} broker login {username} registered; its password (shown once): {secret}")


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
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port (/metrics)."),
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
    served = None
    if metrics_port is not None:
        from cloud.fleet.metrics import IngestMetrics

        served = IngestMetrics(worker.counters, worker.options.worker_id, metrics_port)
    try:
        code = worker.run()
    except psycopg.OperationalError as exc:
        typer.echo(f"cannot reach the database: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if served is not None:
            served.close()
    raise typer.Exit(code)


# -- node downlink (config, OTA) -------------------------------------------------------------------


@app.command("register-downlink-credential")
def register_downlink_credential(
    username: str = typer.Option("downlink", "--username", help="The downlink publisher's broker login."),
    password: str | None = typer.Option(None, "--password", help="Its password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register (or replace) the downlink publisher's broker login; prints the password ONCE."""
    _register_service_login("downlink", username, password, database_url)
    typer.echo(f"Run `fieldtrust cloud broker-config`, then `fieldtrust cloud downlink` with "
               f"FIELDTRUST_MQTT_URL=mqtt://{username}:<password>@<broker>:<port>.")


@app.command()
def downlink(
    poll: float = typer.Option(30.0, "--poll", min=1, help="Seconds between looks when no NOTIFY arrives."),
    client_id: str | None = typer.Option(None, "--client-id", help="MQTT client id (default: downlink-<host>)."),
    apply_migrations: bool = typer.Option(True, "--migrate/--no-migrate", help="Apply pending migrations first."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Publish node configs and OTA releases to the gateways until Ctrl-C (retained, QoS 1).

    Settings come from FIELDTRUST_DATABASE_URL and FIELDTRUST_MQTT_URL (a login registered with
    `fieldtrust cloud register-downlink-credential`).
    """
    import logging

    from pydantic import ValidationError

    from cloud.config import CloudSettings
    from cloud.downlink.publisher import DownlinkPublisher
    from fieldtrust.cli import cloud_support as support

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = CloudSettings()
        publisher = DownlinkPublisher(settings, client_id=client_id, poll_s=poll)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"cannot start the downlink publisher: {exc}", err=True)
        raise typer.Exit(2) from None
    if apply_migrations:
        support.migrate(settings.database_url)
    raise typer.Exit(publisher.run())


firmware_app = typer.Typer(no_args_is_help=True, help="Firmware releases for over-the-air updates.")
app.add_typer(firmware_app, name="firmware")


@firmware_app.command("publish")
def firmware_publish(
    bundle_dir: str = typer.Option(..., "--dir", help="A bundle directory (manifest.json and its files)."),
    build: int | None = typer.Option(
        None, "--build", min=1, help="Only for a bundle whose manifest has no build (made before builds were "
        "recorded): the release's build number. A bundle's own build is always used."
    ),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Store a firmware bundle (`provisioning/bundle.py` builds one) as a release; then send it to nodes
    with POST /api/v1/tenants/<tenant>/devices/<node>/ota."""
    from pathlib import Path

    from cloud.downlink import service
    from cloud.downlink.frames import FirmwareFile
    from cloud.store.registry import Invalid
    from fieldtrust.cli import cloud_support as support
    from provisioning.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(bundle_dir)  # checks every file against the manifest's size and SHA-256
        if bundle.build is not None and build is not None and build != bundle.build:
            raise Invalid(f"--build {build}: the bundle is build {bundle.build}, which its nodes report and compare")
        version = service.build_number(bundle.version, bundle.build if bundle.build is not None else build)
        files = [FirmwareFile(f.path, (Path(bundle_dir) / f.path).read_bytes()) for f in bundle.files]
    except (BundleError, Invalid, OSError) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from None
    release = support.in_transaction(support.settings(database_url),
                                     lambda c: service.create_release(c, version, files, "cli"))
    size = sum(len(f.content) for f in files)
    typer.echo(f"firmware release {release.version} stored: {len(files)} file(s), {size} bytes")


# -- audit log ---------------------------------------------------------------------------------------

audit_app = typer.Typer(no_args_is_help=True, help="The audit log: verify its hash chains, show entries.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    tenant: str | None = typer.Option(None, "--tenant", help="Verify this tenant's chain only (default: all)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Recompute every audit chain; exit 1 naming the first broken link (an entry edited, removed or moved).

    Runs as the database owner (FIELDTRUST_DATABASE_URL), which alone can read the chains' heads."""
    import psycopg

    from cloud.audit import log
    from cloud.store import db
    from fieldtrust.cli import cloud_support as support

    try:
        with db.connect(support.settings(database_url).database_url, application="fieldtrust-cli") as conn:
            report = log.verify(conn, tenant)
    except psycopg.Error as exc:
        typer.echo(f"database error: {exc}", err=True)
        raise typer.Exit(2) from None
    for chain in report.chains:
        typer.echo(chain.describe())
    if not report.chains:
        typer.echo(f"no audit entries{f' for tenant {tenant}' if tenant else ''}")
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("show")
def audit_show(
    tenant: str = typer.Argument(..., help="The tenant whose entries to show."),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    action: str | None = typer.Option(None, "--action", help="An action, or a prefix ending in '.'."),
    actor: str | None = typer.Option(None, "--actor", help="An actor id (user, API key)."),
    farmer: str | None = typer.Option(None, "--farmer", help="Entries about this farmer's data."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Show a tenant's newest audit entries."""
    from cloud.audit import log
    from fieldtrust.cli import cloud_support as support

    filters = log.Filters(actor_id=actor, action=action, farmer_id=farmer)
    entries = support.in_transaction(support.settings(database_url),
                                     lambda c: log.search(c, tenant, filters, limit=limit))
    for e in entries:
        who = f"{e.actor_kind}:{e.actor_id}" + (f" ({e.actor_name})" if e.actor_name else "")
        why = f" purpose={e.purpose}" if e.purpose else ""
        whose = f" farmer={e.farmer_id}" if e.farmer_id else ""
        typer.echo(f"{e.id:>8} {e.at.isoformat(timespec='seconds')} {who} {e.action} "
                   f"{e.target_type}:{e.target_id}{whose}{why} from {e.source_ip or '-'}")
    if not entries:
        typer.echo("no entries")


# -- metering (usage, plans) ------------------------------------------------------------------------

plan_app = typer.Typer(no_args_is_help=True, help="Plans: what a monthly fee includes, limits, prices beyond.")
app.add_typer(plan_app, name="plan")


@app.command()
def usage(
    tenant: str | None = typer.Option(None, "--tenant", help="The tenant (default: every tenant)."),
    month: str | None = typer.Option(None, "--month", help="YYYY-MM, UTC (default: the current month)."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV (one row per meter, then per API caller)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Metered usage in a month: per meter the quantity, quota, share used, status and overage cost."""
    from cloud.metering import meters
    from cloud.metering import usage as metering
    from fieldtrust.cli import cloud_support as support

    try:
        chosen = meters.parse_month(month) if month else meters.current_month()
    except ValueError as exc:
        typer.echo(f"--month: {exc}", err=True)
        raise typer.Exit(2) from None
    reports = support.in_transaction(
        support.settings(database_url),
        lambda c: [metering.report(c, tenant, chosen)] if tenant else metering.reports(c, chosen))
    typer.echo(metering.to_csv(reports) if csv else "\n\n".join(metering.to_text(r) for r in reports), nl=not csv)


@plan_app.command("put")
def plan_put(
    file: str = typer.Argument(..., help="The plan as JSON (see docs/performance.md, \"Metering\")."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Create or replace a plan from a JSON file: id, name, currency, monthly_fee, quotas per meter."""
    from pathlib import Path

    from pydantic import ValidationError

    from cloud.metering import plans
    from fieldtrust.cli import cloud_support as support

    try:
        plan = plans.Plan.model_validate_json(Path(file).read_text(encoding="utf-8"))
    except OSError as exc:
        typer.echo(f"{file}: cannot read it: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        typer.echo(f"{file}: not a valid plan: {exc}", err=True)
        raise typer.Exit(2) from None
    support.in_transaction(support.settings(database_url), lambda c: plans.put_plan(c, plan))
    typer.echo(f"plan {plan.id} saved ({len(plan.quotas)} metered quotas)")


@plan_app.command("assign")
def plan_assign(
    tenant: str = typer.Option(..., "--tenant"),
    plan: str = typer.Option(..., "--plan"),
    from_month: str | None = typer.Option(None, "--from", help="YYYY-MM (default: the current month)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Put a tenant on a plan from a month on (the plan it had ends there)."""
    from cloud.metering import meters, plans
    from fieldtrust.cli import cloud_support as support

    try:
        start = meters.parse_month(from_month) if from_month else meters.current_month()
    except ValueError as exc:
        typer.echo(f"--from: {exc}", err=True)
        raise typer.Exit(2) from None
    assigned = support.in_transaction(support.settings(database_url),
                                      lambda c: plans.assign_plan(c, tenant, plan, start, "cli"))
    typer.echo(f"tenant {assigned.tenant_id} is on plan {assigned.plan_id} from {assigned.valid_from}")


# -- fleet operations (cloud/fleet) ---------------------------------------------------------------------


@app.command("register-fleet-credential")
def register_fleet_credential(
    username: str = typer.Option("fleet", "--username", help="The fleet service's broker login."),
    password: str | None = typer.Option(None, "--password", help="Its password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Register (or replace) the fleet service's broker login (reads gateways' health and state, writes their
    agent updates); prints the password ONCE."""
    _register_service_login("fleet", username, password, database_url)
    typer.echo(f"Run `fieldtrust cloud broker-config`, then `fieldtrust cloud fleet` with "
               f"FIELDTRUST_MQTT_URL=mqtt://{username}:<password>@<broker>:<port>.")


@app.command()
def fleet(
    interval: float = typer.Option(10.0, "--interval", min=0.1, help="Seconds between cycles of the fleet loop."),
    gateway_timeout: float = typer.Option(200.0, "--gateway-timeout", min=1,
                                          help="A gateway silent this many seconds is offline."),
    device_timeout: float = typer.Option(7200.0, "--device-timeout", min=1,
                                         help="A device whose last good frame is this old is offline."),
    client_id: str | None = typer.Option(None, "--client-id", help="MQTT client id (default: fleet-<host>)."),
    apply_migrations: bool = typer.Option(True, "--migrate/--no-migrate", help="Apply pending migrations first."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port (/metrics)."),
) -> None:
    """Run the fleet service until Ctrl-C: presence from gateways' heartbeats, births and wills; alert rules and
    webhooks; OTA campaigns.  Any number may run: one at a time does the loop's work."""
    import dataclasses
    import logging

    from pydantic import ValidationError

    from cloud.config import CloudSettings
    from cloud.fleet.service import FleetOptions, FleetService
    from fieldtrust.cli import cloud_support as support

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = FleetOptions(interval_s=interval, gateway_timeout_s=gateway_timeout, device_timeout_s=device_timeout)
    if client_id:
        options = dataclasses.replace(options, client_id=client_id)
    try:
        settings = CloudSettings()
        service = FleetService(settings, options)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"cannot start the fleet service: {exc}", err=True)
        raise typer.Exit(2) from None
    if apply_migrations:
        support.migrate(settings.database_url)
    served = None
    if metrics_port is not None:
        from cloud.fleet.metrics import FleetMetrics

        served = FleetMetrics(service, metrics_port)
    try:
        code = service.run()
    finally:
        if served is not None:
            served.close()
    raise typer.Exit(code)


@app.command()
def backup(
    out: str = typer.Option(..., "--out", help="The backup file to write (pg_dump custom format)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Back up the store (schema ft and its grants) with pg_dump."""
    from pathlib import Path

    from cloud.fleet.backup import BackupError
    from cloud.fleet.backup import backup as run_backup
    from fieldtrust.cli import cloud_support as support

    try:
        info = run_backup(support.settings(database_url).database_url, Path(out))
    except BackupError as exc:
        typer.echo(f"backup failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {info.path}: {info.bytes} bytes, {info.tables} tables")


@app.command()
def restore(
    source: str = typer.Option(..., "--from", help="A backup file written by `fieldtrust cloud backup`."),
    force: bool = typer.Option(False, "--force", help="Replace what the backup holds in a database that has it."),
    keep_owner: bool = typer.Option(False, "--keep-owner", help="Restore objects' owners as they were dumped."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Restore a backup into an EMPTY database (refused otherwise unless --force) with pg_restore."""
    from pathlib import Path

    from cloud.fleet.backup import BackupError
    from cloud.fleet.backup import restore as run_restore
    from fieldtrust.cli import cloud_support as support

    try:
        run_restore(support.settings(database_url).database_url, Path(source), force=force, keep_owner=keep_owner)
    except BackupError as exc:
        typer.echo(f"restore refused or failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {source}; run `fieldtrust cloud migrate` if the backup is older than this release")


@app.command("rotate-gateway-credential")
def rotate_gateway_credential(
    tenant: str = typer.Argument(...),
    gateway_id: str = typer.Argument(...),
    password: str | None = typer.Option(None, "--password", help="The new broker password (default: random)."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """A new broker password for a gateway; prints it ONCE (cut-over steps: docs/deployment.md)."""
    from cloud.fleet.rotation import rotate_gateway_password
    from fieldtrust.cli import cloud_support as support

    gateway, secret = support.in_transaction(support.settings(database_url),
                                             lambda c: rotate_gateway_password(c, tenant, gateway_id, password))
    typer.echo(f"gateway {gateway.id}: new broker password for {gateway.mqtt_username} (shown once): {secret}")
    typer.echo("Cut-over: 1. put it in the gateway's uplink.broker.password; 2. run `fieldtrust cloud "
               "broker-config` and reload the broker (SIGHUP); 3. restart the gateway agent. Until 3 the gateway "
               "cannot connect; its outbox keeps its readings.")


@app.command("rotate-device-keys")
def rotate_device_keys(
    tenant: str = typer.Argument(...),
    out: str | None = typer.Option(None, "--out", help="CSV for the provisioning visit: device,epoch,key_hex "
                                   "(written 0600). Required unless --revoke-superseded."),
    spec: str | None = typer.Option(None, "--spec", help="Only nodes of this spec (model or model@version)."),
    farm: str | None = typer.Option(None, "--farm", help="Only nodes of this farm."),
    revoke_superseded: bool = typer.Option(False, "--revoke-superseded",
                                           help="Instead: revoke the old epochs of nodes heard on their newest one."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Rotate node keys as a routine: new epochs for a batch of nodes (keys to a CSV for provisioning), then,
    after the visits, revoke the epochs they no longer use."""
    import os
    from pathlib import Path

    from cloud.fleet import rotation
    from fieldtrust.cli import cloud_support as support

    settings = support.settings(database_url)
    if revoke_superseded:
        revoked = support.in_transaction(settings, lambda c: rotation.revoke_superseded(c, tenant))
        for device, epochs in revoked.items():
            typer.echo(f"{device}: revoked epoch(s) {', '.join(map(str, epochs))}")
        typer.echo(f"{len(revoked)} node(s) had superseded epochs revoked")
        return
    if out is None:
        typer.echo("--out: give the CSV file for the new keys", err=True)
        raise typer.Exit(2)
    path = Path(out)
    if path.exists():
        typer.echo(f"--out: {path} exists; the keys are written to a new file only", err=True)
        raise typer.Exit(2)
    kek = support.kek(settings)
    rotated = support.in_transaction(settings, lambda c: rotation.rotate_node_keys(c, tenant, kek, "cli", spec=spec,
                                                                                  farm_id=farm))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("device,epoch,key_hex\n")
        f.writelines(f"{r.device_id},{r.epoch},{r.key.hex()}\n" for r in rotated)
    typer.echo(f"{len(rotated)} node key(s) rotated; new keys in {path} (shown nowhere else). Old epochs stay valid "
               "until `fieldtrust cloud rotate-device-keys --revoke-superseded` after the provisioning visits.")
