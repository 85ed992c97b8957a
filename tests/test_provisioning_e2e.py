"""Provisioning end to end: the real API (``fieldtrust cloud serve``), the real ``mpremote``, the virtual ESP32.

* a board provisioned by the CLI: one device with one key in the cloud, the same key in the board's
  settings, the firmware on its flash, a ``provisioned`` event, the vault empty again, a label;
* the board unplugged halfway through the firmware copy (its process stopped), then plugged in again
  (same flash, so the same unique id, on a new port): the same command resumes at the copy and
  finishes, without a second device, key or event;
* the cloud down: provisioning completes offline, the key waits encrypted; ``node sync`` registers it
  and wipes it;
* the full path: the node boots the copied firmware, joins the virtual Wi-Fi, publishes to the
  gateway's broker, the edge agent carries its signed frame up, an ingest worker stores it — and
  ``provision`` returns once the cloud has seen the node;
* a node provisioned with a claim code lands on the code's farm and field, with its key epoch in its
  settings; ``node calibrate`` reads the probe through the sensor rail (the board is wired as the
  reference build), stores the result merged into the node's config, keeps it on the laptop when
  offline and ``node sync`` stores it later; ``node update`` sends a published build, refuses one
  that is not;
* ``node logs`` tails the board; the DS18B20 scan powers the rail; ``gateway enroll`` and ``node
  replace`` against the live API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from cloud.store import registry
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from fieldtrust import processes
from fieldtrust.cli.main import app
from hardware.micropython_runner import micropython_available
from hardware.virtual_board import VirtualBoard
from provisioning.bundle import build_bundle
from provisioning.cloud_client import CloudClient, CloudSettings
from provisioning.errors import BoardDisconnected
from provisioning.journal import JournalStore
from provisioning.steps import Context, Request, provision
from provisioning.vault import Vault
from tests.support.ingest import KEK, running_worker, wait_until

pytestmark = [pytest.mark.skipif(micropython_available() is not None, reason=micropython_available() or ""),
              # a whole provisioning (the firmware copied file by file through mpremote) plus, for the first test,
              # the module's API server: minutes on a test machine shared by several runs
              pytest.mark.timeout(360)]

TOKEN = "e2e-provisioning-token"
PASSPHRASE = "field passphrase"
WIFI, WIFI_PASSWORD = "farm-wifi", "farm-wifi-pw"
SPEC = "capacitive-soil-moisture-v1-2"


@dataclass
class Cloud:
    url: str
    database_url: str
    tenant: str
    farm: str
    gateway: str
    gateway_key: str


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "0.2.0"
    build_bundle(out, "0.2.0")
    return out


@pytest.fixture(scope="module")
def api_server(pg_server_url: str) -> Iterator[tuple[str, str]]:
    """``fieldtrust cloud serve`` on a database of this module's own: ``(api url, database url)``."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from cloud.store.migrate import migrate

    name = f"ft_test_prov_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = make_conninfo(**(conninfo_to_dict(pg_server_url) | {"dbname": name}))
    port = processes.free_port()
    env = os.environ | {"FIELDTRUST_DATABASE_URL": database_url, "FIELDTRUST_ADMIN_TOKEN": TOKEN,
                        "FIELDTRUST_KEK": KEK.hex()}
    proc = None
    try:
        migrate(database_url)
        proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "cloud", "serve", "--port", str(port),
                                "--no-migrate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.wait_for_port(port, timeout=90)  # a loaded test machine imports the API slowly
        yield f"http://127.0.0.1:{port}", database_url
    finally:
        if proc is not None:
            processes.stop(proc)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def cloud(api_server: tuple[str, str]) -> Cloud:
    """A tenant of this test's own, with a farm and a gateway."""
    url, database_url = api_server
    tag = uuid.uuid4().hex[:8]
    found = Cloud(url, database_url, f"coop-{tag}", f"farm-{tag}", f"gw-{tag}", "")
    gateway_key = os.urandom(32)
    # straight into the store: the API commits after its answer (cloud/api/deps.py, see the report), so a
    # request right after another may not see its row yet
    with psycopg.connect(database_url) as conn:
        registry.register_tenant(conn, found.tenant, "Coop")
        registry.register_farm(conn, found.tenant, found.farm, "North")
        registry.register_gateway(conn, found.tenant, found.gateway, found.farm, gateway_key, KEK, None, None)
    found.gateway_key = gateway_key.hex()
    return found


def tech_env(tmp_path: Path, cloud: Cloud | None, api_url: str | None = None) -> dict[str, str]:
    return {"FIELDTRUST_TECH_DIR": str(tmp_path / "tech"), "FIELDTRUST_VAULT_PASSPHRASE": PASSPHRASE,
            "FIELDTRUST_API_URL": api_url or (cloud.url if cloud else ""), "FIELDTRUST_ADMIN_TOKEN": TOKEN,
            "FIELDTRUST_WIFI_PASSWORD": WIFI_PASSWORD, "FIELDTRUST_TECHNICIAN": "e2e"}


def provision_args(port: str, cloud: Cloud, bundle: Path, *extra: str) -> list[str]:
    return ["node", "provision", "--port", port, "--tenant", cloud.tenant, "--farm", cloud.farm, "--spec", SPEC,
            "--wifi", WIFI, "--gateway", cloud.gateway, "--bundle", str(bundle), *extra]


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def board_settings(flash: Path) -> dict:
    return json.loads((flash / "ft_node.json").read_text())


def test_provision_registers_writes_and_labels(tmp_path: Path, cloud: Cloud, bundle_dir: Path) -> None:
    flash = tmp_path / "flash"
    env = tech_env(tmp_path, cloud)
    with VirtualBoard(flash, board_id="246f28a1b2c3", sensors=("soil", "battery"), wifi=WIFI,
                      wifi_password=WIFI_PASSWORD) as board:
        done = CliRunner().invoke(app, provision_args(board.port, cloud, bundle_dir, "--no-wait"), env=env)
        assert done.exit_code == 0, done.output
        assert board.environment is not None
        board.environment.hold(soil_mv=1900, rssi=-60, battery_mv=3900)
        checked = CliRunner().invoke(app, ["node", "verify", "--port", board.port], env=env)
        shown = CliRunner().invoke(app, ["node", "info", "--port", board.port], env=env)
    assert checked.exit_code == 0, checked.output
    assert f"Wi-Fi '{WIFI}' connected, -60 dBm (good)" in checked.output
    assert "soil_moisture_mv" in checked.output and "1900 mV" in checked.output  # the firmware's own driver read it
    assert "cloud: no message from this node yet" in checked.output
    assert shown.exit_code == 0, shown.output
    assert "firmware 0.2.0" in shown.output and "(set, hidden)" in shown.output and "provisioned by admin" in \
        shown.output
    device = "node-246f28a1b2c3"
    assert device in done.output and "fieldtrust:node/" not in done.output  # the URI is in the QR, not printed
    settings = board_settings(flash)
    assert (settings["id"], settings["wifi"]["ssid"], settings["sensors"]["soil_pin"]) == (device, WIFI, 34)
    with psycopg.connect(cloud.database_url) as conn:
        key = registry.key_for(conn, "device", device, 1, KEK)
    assert key is not None and key.hex() == settings["key"]  # the cloud and the board hold the same key
    rows = query(cloud.database_url, "SELECT farm_id, gateway_id, spec_key FROM ft.devices WHERE id = %s", device)
    assert rows == [(cloud.farm, cloud.gateway, f"{SPEC}@1.0.0")]
    events = query(cloud.database_url, "SELECT kind, detail FROM ft.device_events WHERE device_id = %s", device)
    assert [(k, d["board_uid"], d["technician"]) for k, d in events] == [("provisioned", "246f28a1b2c3", "e2e")]
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        assert (flash / f["path"]).stat().st_size == f["size"], f["path"]
    assert Vault(tmp_path / "tech" / "vault", PASSPHRASE).entries() == []  # wiped: the cloud and the board have it
    assert (tmp_path / "tech" / "labels" / f"{device}.png").stat().st_size > 100

    with VirtualBoard(flash) as board:  # the same board again: provisioned already
        again = CliRunner().invoke(app, provision_args(board.port, cloud, bundle_dir, "--no-wait"),
                                   env=tech_env(tmp_path, cloud))
    assert again.exit_code == 1 and "already-provisioned" in again.output, again.output


class UnplugDuringCopy:
    """A progress sink that pulls the board's plug after ``after`` files of the firmware copy."""

    def __init__(self, board: VirtualBoard, after: int) -> None:
        self.board, self.after, self.name, self.copied = board, after, "", 0

    def step(self, name: str, label: str) -> None:
        self.name = name

    def total(self, n: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        if self.name == "firmware" and n == 1:
            self.copied += 1
            if self.copied == self.after:
                self.board.stop()

    def done(self, note: str = "") -> None:
        pass

    def skipped(self, why: str) -> None:
        pass


def test_unplugged_halfway_resumes_without_a_second_device_or_key(tmp_path: Path, cloud: Cloud,
                                                                  bundle_dir: Path) -> None:
    from provisioning.bundle import load_bundle

    flash, tech = tmp_path / "flash", tmp_path / "tech"
    board = VirtualBoard(flash, board_id="246f28d4e5f6").start()
    request = Request(board.port, cloud.tenant, cloud.farm, (SPEC,), WIFI, WIFI_PASSWORD, ("127.0.0.1", 1883),
                      cloud.gateway, wait=False)
    ctx = Context(JournalStore(tech / "journal"), Vault(tech / "vault", PASSPHRASE),
                  CloudClient(CloudSettings(cloud.url, TOKEN)), load_bundle(bundle_dir), tech / "labels")
    try:
        with pytest.raises(BoardDisconnected):
            provision(request, ctx, UnplugDuringCopy(board, after=6))
    finally:
        board.stop()
    device = "node-246f28d4e5f6"
    journal = ctx.journals.load("246f28d4e5f6")
    assert journal is not None and journal.done("register") and journal.done("settings")
    assert not journal.done("firmware") and journal.completed_at is None
    assert ctx.vault.entries("held") == [device]  # registered, but its board may not have everything yet
    assert not (flash / "main.py").exists()  # main.py goes last: the half-copied board does not boot

    with VirtualBoard(flash) as replugged:  # the same flash: the same board, on a new port
        assert replugged.unique_id.hex() == "246f28d4e5f6"
        done = CliRunner().invoke(app, provision_args(replugged.port, cloud, bundle_dir, "--no-wait",
                                                      "--broker", "127.0.0.1:1883"), env=tech_env(tmp_path, cloud))
    assert done.exit_code == 0, done.output
    assert "resumed at: firmware" in done.output and "registered before" in done.output
    assert query(cloud.database_url, "SELECT count(*) FROM ft.devices WHERE tenant_id = %s AND kind = 'node'",
                 cloud.tenant) == [(1,)]
    assert query(cloud.database_url, "SELECT epoch FROM ft.keys WHERE owner_id = %s", device) == [(1,)]
    assert query(cloud.database_url, "SELECT count(*) FROM ft.device_events WHERE device_id = %s", device) == [(1,)]
    assert (flash / "main.py").exists() and ctx.vault.entries() == []


def test_offline_provisioning_keeps_the_key_sealed_until_sync(tmp_path: Path, cloud: Cloud,
                                                              bundle_dir: Path) -> None:
    flash = tmp_path / "flash"
    down = f"http://127.0.0.1:{processes.free_port()}"
    with VirtualBoard(flash, board_id="246f28070809") as board:
        done = CliRunner().invoke(app, provision_args(board.port, cloud, bundle_dir),
                                  env=tech_env(tmp_path, cloud, api_url=down))
    assert done.exit_code == 0, done.output
    assert "NOT YET REGISTERED" in done.output and "node sync" in done.output
    device = "node-246f28070809"
    vault = Vault(tmp_path / "tech" / "vault", PASSPHRASE)
    assert vault.entries("pending-sync") == [device]
    assert board_settings(flash)["id"] == device
    assert query(cloud.database_url, "SELECT count(*) FROM ft.devices WHERE id = %s", device) == [(0,)]

    synced = CliRunner().invoke(app, ["node", "sync"], env=tech_env(tmp_path, cloud))
    assert synced.exit_code == 0, synced.output
    assert f"{device} ({cloud.tenant}): registered; its key is wiped" in synced.output
    assert vault.entries() == []
    with psycopg.connect(cloud.database_url) as conn:
        key = registry.key_for(conn, "device", device, 1, KEK)
    assert key is not None and key.hex() == board_settings(flash)["key"]
    assert query(cloud.database_url, "SELECT kind FROM ft.device_events WHERE device_id = %s", device) == [
        ("provisioned",)]
    journal = JournalStore(tmp_path / "tech" / "journal").load("246f28070809")
    assert journal is not None and journal.done("register") and not journal.offline
    nothing = CliRunner().invoke(app, ["node", "sync"], env=tech_env(tmp_path, cloud))
    assert nothing.exit_code == 0 and "nothing to sync" in nothing.output


def test_provision_waits_for_the_nodes_first_signed_message(tmp_path: Path, cloud: Cloud, bundle_dir: Path,
                                                            shared_broker: tuple[str, int], private_broker) -> None:
    host, port = shared_broker
    agent = Agent(parse_config(yaml.safe_dump({
        "gateway": {"id": cloud.gateway, "tenant": cloud.tenant, "key_hex": cloud.gateway_key,
                    "data_dir": str(tmp_path / "gw")},
        "intake": {"session_expiry_s": 60, "broker": {"host": private_broker.host, "port": private_broker.port}},
        "uplink": {"broker": {"host": host, "port": port}, "batch_max_wait_s": 0.2, "session_expiry_s": 60,
                   "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        "health": {"interval_s": 60},
    })), clock_synced=lambda: True)
    flash = tmp_path / "flash"
    with running_worker(cloud.database_url, f"mqtt://{host}:{port}"):
        agent.start()
        try:
            assert wait_until(lambda: agent.uplink.connected and agent.intake is not None
                              and agent.intake.link.connected)
            with VirtualBoard(flash, board_id="246f280a0b0c", sensors=("soil", "battery"), wifi=WIFI,
                              wifi_password=WIFI_PASSWORD) as board:
                done = CliRunner().invoke(app, provision_args(
                    board.port, cloud, bundle_dir, "--broker", f"{private_broker.host}:{private_broker.port}",
                    "--wait-timeout", "90"), env=tech_env(tmp_path, cloud))
        finally:
            agent.stop()
    assert done.exit_code == 0, done.output
    assert "Wait for the first signed message: last seen" in done.output
    seen = query(cloud.database_url, "SELECT last_seen_at FROM ft.devices WHERE id = 'node-246f280a0b0c'")
    assert seen[0][0] is not None
    stored = query(cloud.database_url, "SELECT count(*) FROM ft.messages WHERE device_id = 'node-246f280a0b0c'"
                   " AND trust = 1")
    assert stored[0][0] >= 1  # node-signed, verified with the key provisioning made


# -- claim codes, calibration, update, logs, replace, gateway enroll ----------------------------------


def admin_call(cloud: Cloud, method: str, path: str, body: dict | None = None) -> dict:
    """The API as an administrator at the office does it (not the technician's tool)."""
    import httpx

    done = httpx.request(method, f"{cloud.url}/api/v1{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=30)
    assert done.status_code < 300, done.text
    return done.json()


def flat(output: str) -> str:
    """The command's output with line breaks (rich wraps at the console's width) as single spaces."""
    return " ".join(output.split())


def desired(cloud: Cloud, device: str) -> dict:
    return admin_call(cloud, "GET", f"/tenants/{cloud.tenant}/devices/{device}/config")["desired"]["config"]


def soil_gain(cloud: Cloud, device: str) -> float:
    """The node's desired soil calibration gain, once the newest config is visible (the API commits after it
    answers: see the ``cloud`` fixture)."""
    found: list[float] = []

    def newest() -> bool:
        cfg = desired(cloud, device)
        found[:] = [cfg.get("calibration", {}).get("soil_moisture", {}).get("scale", 0.0)]
        return cfg.get("interval_s") == 900  # every version this test stores keeps it
    assert wait_until(newest)
    return found[0]


def test_a_claimed_node_is_calibrated_online_and_offline_and_updated(tmp_path: Path, cloud: Cloud,
                                                                     bundle_dir: Path) -> None:
    from cloud.store import fields

    with psycopg.connect(cloud.database_url) as conn:
        fields.register_field(conn, cloud.tenant, "FL-borehole", cloud.farm, {"name": "Borehole"}, actor=None)
    code = admin_call(cloud, "POST", f"/tenants/{cloud.tenant}/claim-codes",
                      {"farm_id": cloud.farm, "field_id": "FL-borehole"})["code"]
    flash, env = tmp_path / "flash", tech_env(tmp_path, cloud)
    device = "node-246f28c1a1b0"
    args = ["node", "provision", "--port", "", "--tenant", cloud.tenant, "--claim", code.lower(), "--spec", SPEC,
            "--wifi", WIFI, "--gateway", cloud.gateway, "--bundle", str(bundle_dir), "--no-wait"]
    with VirtualBoard(flash, board_id="246f28c1a1b0", sensors=("soil", "battery"), wifi=WIFI,
                      wifi_password=WIFI_PASSWORD) as board:  # the reference wiring: sensors on the switched rail
        args[3] = board.port
        done = CliRunner().invoke(app, args, env=env)
        assert done.exit_code == 0, done.output
        said = flat(done.output)
        assert "the claim code names it" in said and f"farm {cloud.farm}, field FL-borehole" in said
        assert f"tenant {cloud.tenant} farm {cloud.farm}" in said  # on the label
        settings = board_settings(flash)
        assert (settings["ep"], settings["power"]) == (1, {"pin": 26, "active": 0, "settle_ms": 200})
        rows = query(cloud.database_url, "SELECT farm_id, field_id, gateway_id FROM ft.devices WHERE id = %s", device)
        assert rows == [(cloud.farm, "FL-borehole", cloud.gateway)]
        assert [k for (k,) in query(cloud.database_url, "SELECT kind FROM ft.device_events WHERE device_id = %s"
                                    " ORDER BY at", device)] == ["moved", "provisioned"]

        admin_call(cloud, "PUT", f"/tenants/{cloud.tenant}/devices/{device}/config", {"interval_s": 900})
        assert board.environment is not None
        board.environment.hold(soil_mv=1270)  # the probe in water
        wet = CliRunner().invoke(app, ["node", "calibrate", "--port", board.port, "--air-mv", "2540"], env=env,
                                 input="\n")
        assert wet.exit_code == 0, wet.output
        said = flat(wet.output)
        assert "in water up to the line: 1270 mV (median of 5 readings)" in said  # read with the rail on
        assert "gain -0.0787402, offset 200" in said and "stored as config version 2" in said
        assert soil_gain(cloud, device) == pytest.approx(100 / (1270 - 2540))  # the rest of the config kept

        board.environment.hold(soil_mv=1900)  # a probe that reads the same in air and in water
        broken = CliRunner().invoke(app, ["node", "calibrate", "--port", board.port, "--samples", "2"], env=env,
                                    input="\n\n")
        assert broken.exit_code == 1 and "should fall by at least 300 mV" in flat(broken.output), broken.output

        down = tech_env(tmp_path, cloud, api_url=f"http://127.0.0.1:{processes.free_port()}")
        offline = CliRunner().invoke(app, ["node", "calibrate", "--port", board.port, "--air-mv", "2600",
                                           "--water-mv", "1300"], env=down)
        assert offline.exit_code == 0, offline.output
        assert "offline" in offline.output and "node sync" in flat(offline.output)
    assert soil_gain(cloud, device) == pytest.approx(100 / (1270 - 2540))  # not yet
    synced = CliRunner().invoke(app, ["node", "sync"], env=env)
    assert synced.exit_code == 0, synced.output
    assert f"{device} ({cloud.tenant}): calibration" in flat(synced.output) and "config version 3" in flat(
        synced.output)
    assert wait_until(lambda: soil_gain(cloud, device) == pytest.approx(100 / (1300 - 2600)))

    published = CliRunner().invoke(app, ["cloud", "firmware", "publish", "--dir", str(bundle_dir)],
                                   env={"FIELDTRUST_DATABASE_URL": cloud.database_url})
    assert published.exit_code == 0, published.output
    build = json.loads((bundle_dir / "manifest.json").read_text())["build"]
    pushed = CliRunner().invoke(app, ["node", "update", device, "--version", str(build), "--tenant", cloud.tenant],
                                env=env)
    assert pushed.exit_code == 0, pushed.output
    assert f"build {build} for {device} through gateway {cloud.gateway}, pending" in flat(pushed.output)
    missing = CliRunner().invoke(app, ["node", "update", device, "--version", str(build + 1000), "--tenant",
                                       cloud.tenant], env=env)
    assert missing.exit_code == 1 and "release-not-found" in missing.output, missing.output


def test_logs_tail_what_the_board_prints(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import time\nn = 0\nwhile True:\n    print('tick', n)\n    n += 1\n"
                                   "    time.sleep_ms(100)\n")
    with VirtualBoard(flash) as board:
        tailed = CliRunner().invoke(app, ["node", "logs", "--port", board.port, "--seconds", "3"])
    assert tailed.exit_code == 0, tailed.output
    ticks = [int(line.split()[1]) for line in tailed.output.splitlines() if line.startswith("tick ")]
    assert len(ticks) >= 3 and ticks == sorted(ticks)
    gone = CliRunner().invoke(app, ["node", "logs", "--port", str(tmp_path / "ttyUSB9"), "--seconds", "1"])
    assert gone.exit_code == 1 and "port-missing" in gone.output


def test_gateway_enroll_and_node_replace_against_the_live_api(tmp_path: Path, cloud: Cloud) -> None:
    env = tech_env(tmp_path, cloud)
    out = tmp_path / "gw"
    enrolled = CliRunner().invoke(app, ["gateway", "enroll", "gw-enrolled", "--tenant", cloud.tenant, "--farm",
                                        cloud.farm, "--name", "pump house", "--uplink-host", "mqtt.example",
                                        "--out", str(out)], env=env)
    assert enrolled.exit_code == 0, enrolled.output
    key_hex = (out / "gateway.key").read_text().strip()
    assert key_hex not in enrolled.output and (out / "gateway.key").stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load((out / "gateway.yaml").read_text())
    config["gateway"]["key_file"] = str(out / "gateway.key")  # as on the gateway, where the file is copied
    parsed = parse_config(yaml.safe_dump(config))
    assert (parsed.gateway.id, parsed.gateway.tenant, parsed.uplink.broker.host) == (
        "gw-enrolled", cloud.tenant, "mqtt.example")
    with psycopg.connect(cloud.database_url) as conn:
        assert registry.key_for(conn, "gateway", "gw-enrolled", 1, KEK) == bytes.fromhex(key_hex)
    again = CliRunner().invoke(app, ["gateway", "enroll", "gw-other", "--tenant", cloud.tenant, "--uplink-host",
                                     "mqtt.example", "--out", str(out)], env=env)
    assert again.exit_code == 1 and "would overwrite" in flat(again.output)

    with psycopg.connect(cloud.database_url) as conn:
        from cloud.store import fields

        fields.register_field(conn, cloud.tenant, "FL-1", cloud.farm, {"name": "One"}, actor=None)
        registry.register_device(conn, cloud.tenant, "node-broken", "node", cloud.farm, cloud.gateway, None,
                                 os.urandom(32), KEK, details={"field_id": "FL-1", "install_note": "by the gate"})
        registry.register_device(conn, cloud.tenant, "node-fresh", "node", None, None, None, os.urandom(32), KEK)
    swapped = CliRunner().invoke(app, ["node", "replace", "node-broken", "node-fresh", "--tenant", cloud.tenant,
                                       "--note", "mower"], env=env)
    assert swapped.exit_code == 0, swapped.output
    said = flat(swapped.output)
    assert f"node-fresh replaces node-broken on farm {cloud.farm}, field FL-1 (gateway {cloud.gateway})" in said
    assert "key epoch(s) 1 of node-broken revoked" in said
    assert query(cloud.database_url, "SELECT field_id, install_note FROM ft.devices WHERE id = 'node-fresh'") == [
        ("FL-1", "by the gate")]
    twice = CliRunner().invoke(app, ["node", "replace", "node-broken", "node-fresh", "--tenant", cloud.tenant],
                               env=env)
    assert twice.exit_code == 1 and "already replaced" in flat(twice.output)


def test_the_ds18b20_scan_powers_the_sensor_rail(tmp_path: Path) -> None:
    from provisioning.board import Board
    from provisioning.node_settings import DS18B20_PIN, SENSOR_RAIL

    with VirtualBoard(tmp_path / "flash", board_id="246f28dd1801", sensors=("ds18b20",)) as virtual:
        board = Board(virtual.port)
        assert board.ds18b20_roms(DS18B20_PIN) == []  # unpowered, the probe gives no presence pulse
        roms = board.ds18b20_roms(DS18B20_PIN, dict(SENSOR_RAIL))
    assert len(roms) == 1 and roms[0].startswith("28") and roms[0][2:14] == virtual.board_id[::-1].hex()
