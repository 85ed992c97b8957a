"""``fieldtrust cloud create-tenant | import-farms | claim-code``: an administrator's registry commands.

They run as the database owner (FIELDTRUST_DATABASE_URL) like the other ``fieldtrust cloud`` commands,
each in one transaction scoped to the tenant it works on, and are audited as the platform administrator
``cli:<operating-system user>``.  Registered on the ``fieldtrust cloud`` app by :func:`register`.
"""

from __future__ import annotations

from pathlib import Path

import typer

_DB_OPTION = typer.Option(None, "--database-url", help="PostgreSQL DSN (default: FIELDTRUST_DATABASE_URL).")


def _actor():  # noqa: ANN202 - a cloud.auth.principal.Principal, imported late like every cloud import here
    import getpass

    from cloud.auth.scopes import admin_principal

    return admin_principal().model_copy(update={"id": f"cli:{getpass.getuser()}"})


def create_tenant(
    tenant_id: str = typer.Argument(..., help="1-64 of A-Z a-z 0-9 - _ ."),
    name: str = typer.Option(..., "--name", help="The organisation's name."),
    admin: str | None = typer.Option(None, "--admin", help="Invite this login as the tenant's first admin."),
    admin_name: str = typer.Option("", "--admin-name", help="The first admin's name as shown to others."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Create a tenant (a bank branch, a co-operative, a partner) and invite its first admin; the invite
    token is printed ONCE."""
    import psycopg

    from cloud.auth import users
    from cloud.store import registry
    from cloud.store.scope import tenant_scope
    from fieldtrust.cli import cloud_support as support

    def create(conn: psycopg.Connection) -> tuple[registry.Tenant, tuple[users.User, str] | None]:
        tenant = registry.register_tenant(conn, tenant_id, name, actor=_actor())
        if admin is None:
            return tenant, None
        tenant_scope(conn, tenant_id)
        user, token = users.invite(conn, tenant_id, admin, ["tenant_admin"], _actor().id, display_name=admin_name)
        registry.audit(conn, _actor(), "user.invited", "user", user.id, tenant_id,
                       detail={"login": user.login, "roles": user.roles})
        return tenant, (user, token)

    tenant, invited = support.in_transaction(support.settings(database_url), create)
    typer.echo(f"tenant {tenant.id} created")
    if invited is not None:
        user, token = invited
        typer.echo(f"{user.login} invited as tenant_admin; the invite token is shown once and is valid until "
                   f"{user.invite_expires_at:%Y-%m-%d %H:%M} UTC:\n  {token}")


def import_farms(
    csv_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The CSV file (UTF-8; see --help)."),
    tenant: str = typer.Option(..., "--tenant", help="The tenant the farms belong to."),
    all_or_nothing: bool = typer.Option(False, "--all-or-nothing", help="Import nothing if any row has an error."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Import farms and their farmers from CSV; prints an error per bad row and a summary, exits 1 if any row
    failed.  Re-importing a file updates the farms by id and changes nothing the file did not change.

    Columns (header row; farm_id and farm_name required): farm_id, farm_name, farmer_id, farmer_name,
    farmer_phone, national_id, village, tenure (owned/leased/communal), latitude, longitude, area_ha, crop.
    UTF-8 with or without a byte order mark ("CSV UTF-8")."""
    import psycopg

    from cloud.store import farm_import
    from cloud.store.scope import tenant_scope
    from fieldtrust.cli import cloud_support as support

    settings = support.settings(database_url)
    try:
        kek: bytes | None = settings.kek_bytes()
    except ValueError:
        kek = None  # only national ids need it; rows that give one are refused, naming the setting
    data = csv_file.read_bytes()

    def run(conn: psycopg.Connection) -> farm_import.ImportReport:
        tenant_scope(conn, tenant)
        return farm_import.import_farms(conn, tenant, data, actor=_actor(), kek=kek, all_or_nothing=all_or_nothing)

    report = support.in_transaction(settings, run)
    for error in report.errors:
        typer.echo(str(error), err=True)
    typer.echo(report.summary())
    raise typer.Exit(1 if report.errors else 0)


def claim_code(
    tenant: str = typer.Argument(..., help="The tenant of the farm."),
    farm: str = typer.Option(..., "--farm", help="The farm the node will stand on."),
    field: str | None = typer.Option(None, "--field", help="The field of the farm it will measure."),
    valid_hours: int = typer.Option(168, "--valid-hours", min=1, max=90 * 24, help="How long it can be redeemed."),
    note: str = typer.Option("", "--note", help="For the work order (e.g. 'soil node by the borehole')."),
    database_url: str | None = _DB_OPTION,
) -> None:
    """Make a one-use claim code for a technician: entered on site, it puts a node on this farm (and field).
    The code is printed ONCE."""
    from datetime import timedelta

    import psycopg

    from cloud.store import claim_codes
    from cloud.store.scope import tenant_scope
    from fieldtrust.cli import cloud_support as support

    def create(conn: psycopg.Connection) -> tuple[claim_codes.ClaimCode, str]:
        tenant_scope(conn, tenant)
        return claim_codes.create_code(conn, tenant, farm, field_id=field, note=note,
                                       ttl=timedelta(hours=valid_hours), actor=_actor())

    record, code = support.in_transaction(support.settings(database_url), create)
    place = f"farm {record.farm_id}" + (f", field {record.field_id}" if record.field_id else "")
    typer.echo(f"claim code {record.id} for {place}, valid until {record.expires_at:%Y-%m-%d %H:%M %Z}; "
               f"shown once:\n  {code}")


def register(app: typer.Typer) -> None:
    """Add these commands to ``fieldtrust cloud``."""
    app.command("create-tenant")(create_tenant)
    app.command("import-farms")(import_farms)
    app.command("claim-code")(claim_code)
