"""What the demo shows: where everything runs, progress while it runs, and the account at the end."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table

from fieldtrust.demo.account import Account
from fieldtrust.demo.farm import VirtualFarm
from fieldtrust.demo.plan import TENANT_ID
from fieldtrust.demo.stack import CloudStack


def print_where(console: Console, stack: CloudStack, farms: list[VirtualFarm], startup_s: float,
                readings_before: int) -> None:
    """Where the database, broker, API and farms are, and a few requests to try."""
    api = stack.api.url if stack.api is not None else "?"
    token = stack.admin_token
    console.print(f"[bold]database[/bold]  {stack.database_label}")
    console.print(f"[bold]broker[/bold]    {stack.broker_label}")
    workers = stack.worker_ids()
    group = stack.settings.ingest_group
    split = f" sharing $share/{group} (the broker splits the uplinks)" if len(workers) > 1 else ""
    console.print(f"[bold]ingest[/bold]    {len(workers)} worker(s){split}: {', '.join(workers)}")
    for farm in farms:
        console.print(f"[bold]farm[/bold]      {farm.describe()}")
    console.print(f"[bold]API[/bold]       {api}  (OpenAPI: {api}/docs)")
    if token:
        mode = " (development mode: the well-known token)" if stack.settings.admin_token is None else ""
        console.print(f"          admin token{mode}: {token}")
    first = farms[0].plan
    base = f"{api}/api/v1/tenants/{TENANT_ID}"
    auth = f"-H 'Authorization: Bearer {token or '<FIELDTRUST_ADMIN_TOKEN>'}'"
    soil = first.device_id("soil-north")
    series = f"'{base}/farms/{first.farm_id}/series?metric=soil_moisture&bucket=1m'"
    for path in (f"{api}/api/v1/health/ready", f"{base}/devices", f"{base}/devices/{soil}/latest", series,
                 f"{api}/api/v1/ingest/status"):
        console.print(f"          curl -s {auth} {path}", soft_wrap=True, highlight=False)
    before = f"; {readings_before} readings stored by earlier runs" if readings_before else ""
    console.print(f"stack up in {startup_s:.1f} s{before}. Ctrl-C stops it (and prints the account).")


def live_view(stack: CloudStack, farms: list[VirtualFarm], elapsed_s: float, note: str = "") -> RenderableType:
    """Progress while running: per farm what was produced and is queued, per worker what it stored."""
    fields = Table(title=f"The field ({elapsed_s:.0f} s)", title_justify="left")
    for col in ("farm", "gateway", "bus readings", "node readings", "on the nodes", "outbox", "receipts"):
        fields.add_column(col, justify="left" if col in ("farm", "gateway") else "right")
    for farm in farms:
        fields.add_row(farm.plan.farm_id, farm.plan.gateway_id, str(farm.produced_gateway), str(farm.produced_nodes),
                       str(farm.queued_nodes), str(farm.outbox_depth()), str(farm.receipts()))
    cloud = Table(title="The cloud (ingest workers' counters)", title_justify="left")
    for col in ("worker", "messages", "readings stored", "node-signed", "duplicates", "rejected", "lag (s)"):
        cloud.add_column(col, justify="left" if col == "worker" else "right")
    stored = 0
    for worker in stack.workers:
        snap = worker.counters.snapshot()
        stored += snap["readings"]
        lag = snap["lag_sent_s"]
        cloud.add_row(worker.options.worker_id, str(snap["messages_received"]), str(snap["readings"]),
                      str(snap["node_signed"]), str(snap["duplicates"]), str(snap["rejected_total"]),
                      f"{lag:.2f}" if lag is not None else "-")
    rate = f"{stored / elapsed_s:.0f} readings/s stored" if elapsed_s > 0 else ""
    return Group(fields, cloud, f"{rate}  {note}".strip())


def progress_line(farms: list[VirtualFarm], stack: CloudStack, elapsed_s: float) -> str:
    """One line of progress, for a console that is not a terminal (a log, a pipe, a test)."""
    produced = sum(f.produced_gateway + f.produced_nodes for f in farms)
    stored = sum(w.counters.get("readings") for w in stack.workers)
    depth = sum(f.outbox_depth() for f in farms)
    return f"{elapsed_s:5.0f} s: {produced} readings produced, {stored} stored, {depth} in outboxes"


def print_account(console: Console, account: Account, *, queued_nodes: int = 0, dropped_nodes: int = 0) -> None:
    """The account; ``queued_nodes``/``dropped_nodes``: readings of this run still in the nodes' outboxes, or
    dropped by a full one (the node firmware's own counts), so that a reading not stored is not unknown."""
    table = Table(title="Account of this run (counted in the database)", title_justify="left")
    for col in ("readings", "produced", "stored once"):
        table.add_column(col, justify="left" if col == "readings" else "right")
    table.add_row("gateway-attested (Modbus, RS485 and TCP)", str(account.produced_gateway),
                  str(account.stored_gateway))
    table.add_row("node-signed (firmware nodes over MQTT)", str(account.produced_nodes), str(account.stored_nodes))
    table.add_row("[bold]total[/bold]", str(account.produced), str(account.stored))
    console.print(table)
    rejected = ", ".join(f"{reason} {n}" for reason, n in account.rejected.items()) or "none"
    console.print(f"dead letters: {rejected}; duplicates dropped: {account.duplicates}; "
                  f"conflicts: {account.conflicts}; batches committed: {account.batches}")
    console.print(f"stack up in {account.startup_s:.1f} s; {account.stored} readings in {account.seconds:.0f} s "
                  f"({account.readings_per_s:.0f} readings/s); readings in the database, all runs: "
                  f"{account.total_readings} ({account.readings_before} before this run)")
    if not account.drained:
        console.print("[yellow]the outboxes did not drain in time: some batches were not receipted[/yellow]")
    if account.produced == 0:
        console.print("nothing was produced: the demo stopped before the first reading")
    elif account.ok:
        console.print("[green bold]nothing lost[/green bold]: every reading produced is stored once")
    else:
        missing = account.produced - account.stored
        dead = sum(account.rejected.values())
        unknown = missing - queued_nodes - dropped_nodes - dead
        known = (f"{queued_nodes} still in the nodes' outboxes (sent at their next wake), {dropped_nodes} dropped by "
                 f"full node outboxes, {dead} dead letters, conflicts {account.conflicts}")
        if unknown > 0 or account.conflicts:
            console.print(f"[red bold]readings unaccounted for: {unknown}[/red bold] (produced {account.produced}, "
                          f"stored {account.stored}; {known})")
        else:
            console.print(f"[yellow]not stored in this run: {missing}[/yellow], every one accounted for: {known}")
