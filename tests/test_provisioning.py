"""Provisioning, piece by piece: journal, vault, label, node settings, port errors, and the maintenance API.

The board-level errors use real ports: a missing path, a pty held with pyserial's exclusive lock
(what mpremote takes), and a pty with nothing behind it.  The cloud side (maintenance routes, claim
codes, config and OTA as the tool sends them) runs against the real API on a real PostgreSQL, one
database for the module and a tenant per test; the tool's :class:`CloudClient` reaches it in-process
through the test client's transport.  End to end with the virtual board: tests/test_provisioning_e2e.py.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import serial
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.store import registry
from device_specs.registry import get_spec
from fieldtrust.processes import free_port
from hardware.pty_port import PtyPort
from hardware.reference_build import get_build
from provisioning import node_config, node_settings, onsite
from provisioning.board import ESP32_USB_IDS, BoardInfo, check_port, check_version, esp32_ports, probe_repl
from provisioning.cloud_client import CloudClient, CloudSettings
from provisioning.errors import (
    ALL_ERRORS,
    ClaimRefused,
    CloudRefused,
    CloudUnreachable,
    JournalMismatch,
    NotMicroPython,
    PortBusy,
    PortMissing,
    ProvisioningError,
    ReleaseNotFound,
    SensorNotFound,
    VaultLocked,
    WrongFirmware,
)
from provisioning.gateway import Uplink, agent_config
from provisioning.journal import Journal, JournalStore
from provisioning.label import BORDER, SCALE, Label
from provisioning.pending import PendingConfigs, send_pending
from provisioning.registration import register_entry
from provisioning.steps import Request, _journal
from provisioning.vault import Vault
from tests.conftest import AppDatabase
from tests.support.accounts import (
    ADMIN,
    ADMIN_TOKEN,
    add_tenant,
    add_user,
    bearer,
    cheap_hashing,
    client_of,
    running_app,
    sign_in,
)
from tests.support.accounts import api as api_path
from tests.support.api_seed import new_release

ROOT = Path(__file__).resolve().parent.parent
KEK = bytes.fromhex("ab" * 32)  # tests.support.accounts.settings_for's


# -- journal ---------------------------------------------------------------------------------------


def _info(uid: str = "a4cf12345678") -> BoardInfo:
    return BoardInfo("/dev/ttyUSB0", uid, (1, 27, 0), 774, "ESP32", None)


def _request(**changes: object) -> Request:
    values: dict[str, object] = {"port": "/dev/ttyUSB0", "tenant": "coop", "farm": "farm-1",
                                 "specs": ("capacitive-soil-moisture-v1-2",), "wifi_ssid": "farm",
                                 "wifi_password": "secret-pw", "broker": ("192.168.4.1", 1883)}
    return Request(**(values | changes))  # type: ignore[arg-type]


class _Ctx:
    def __init__(self, tmp: Path) -> None:
        self.journals = JournalStore(tmp / "journal")
        self.vault = Vault(tmp / "vault", "pass phrase")


def test_journal_resumes_the_same_device_and_refuses_other_options(tmp_path: Path) -> None:
    ctx = _Ctx(tmp_path)
    first = _journal(_request(), ctx, _info())  # type: ignore[arg-type]
    assert first.device_id == "node-a4cf12345678" and not first.steps
    first.mark("identify")
    first.mark("key")
    ctx.journals.save(first)

    again = _journal(_request(port="/dev/ttyUSB3"), ctx, _info())  # type: ignore[arg-type]  # another socket
    assert again.device_id == first.device_id and again.done("key") and not again.done("register")
    with pytest.raises(JournalMismatch, match="farm differ"):
        _journal(_request(farm="farm-2"), ctx, _info())  # type: ignore[arg-type]
    restarted = _journal(_request(farm="farm-2", restart=True), ctx, _info())  # type: ignore[arg-type]
    assert not restarted.steps and ctx.journals.load("a4cf12345678") is None

    with pytest.raises(ValueError, match="lowercase hex"):
        ctx.journals.path("../etc")


def test_journal_file_is_replaced_whole(tmp_path: Path) -> None:
    store = JournalStore(tmp_path)
    journal = Journal("00aa", "node-00aa", "coop", {"farm": "f"})
    journal.mark("identify")
    store.save(journal)
    loaded = store.load("00aa")
    assert loaded is not None and loaded.done("identify") and loaded.options == {"farm": "f"}
    assert [p.name for p in tmp_path.iterdir()] == ["00aa.json"]  # no temporary file left
    assert store.by_device("node-00aa") == loaded


# -- vault -----------------------------------------------------------------------------------------


def test_vault_keeps_keys_encrypted_refuses_a_wrong_passphrase_and_wipes(tmp_path: Path) -> None:
    key_hex = os.urandom(32).hex()
    vault = Vault(tmp_path, "correct horse")
    vault.put("node-1", "coop", {"key_hex": key_hex, "registration": {"farm_id": "f"}})
    entry_file = tmp_path / "node-1.vault"
    on_disk = entry_file.read_bytes()
    assert key_hex.encode() not in on_disk and bytes.fromhex(key_hex) not in on_disk
    assert entry_file.stat().st_mode & 0o777 == 0o600 and tmp_path.stat().st_mode & 0o777 == 0o700

    with pytest.raises(VaultLocked, match="wrong passphrase"):
        Vault(tmp_path, "battery staple")
    reopened = Vault(tmp_path, "correct horse")
    entry = reopened.get("node-1")
    assert entry is not None and entry.secret["key_hex"] == key_hex and entry.state == "held"
    reopened.set_state("node-1", "pending-sync")
    assert reopened.entries("pending-sync") == ["node-1"] and reopened.entries("held") == []

    record = json.loads(entry_file.read_text())
    record["tenant"] = "other"  # the tenant is bound into the ciphertext
    entry_file.write_text(json.dumps(record))
    with pytest.raises(VaultLocked, match="cannot be decrypted"):
        reopened.get("node-1")

    with open(entry_file, "rb") as still_open:
        before = entry_file.read_bytes()
        assert reopened.wipe("node-1")
        assert not entry_file.exists()
        assert still_open.read() != before  # the blocks were overwritten before the name went
    assert not reopened.wipe("node-1")


# -- label -----------------------------------------------------------------------------------------


def test_label_png_and_terminal_code(tmp_path: Path) -> None:
    label = Label("coop", "node-a4cf12345678", "farm-1", ("capacitive-soil-moisture-v1-2@1.0.0",))
    assert label.uri == ("fieldtrust:node/coop/node-a4cf12345678?farm=farm-1&"
                         "spec=capacitive-soil-moisture-v1-2%401.0.0")
    png = label.save_png(tmp_path)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    side = (label.qr().symbol_size(scale=1, border=0)[0] + 2 * BORDER) * SCALE
    assert width == height == side
    assert "node-a4cf12345678" in (tmp_path / "node-a4cf12345678.txt").read_text()
    text = label.terminal()
    assert "█" in text or "▀" in text
    assert "farm farm-1" in text and "NOT YET REGISTERED" not in text
    assert "NOT YET REGISTERED" in Label("coop", "n", None, (), offline=True).terminal()


# -- node settings ---------------------------------------------------------------------------------


class _Bus:
    def __init__(self, roms: list[str]) -> None:
        self.roms = roms

    def ds18b20_roms(self, pin: int, power: dict[str, int] | None = None) -> list[str]:
        assert pin == node_settings.DS18B20_PIN
        assert power == {"pin": 26, "active": 0, "settle_ms": 200}  # scanned with the probe's rail on
        return self.roms


def test_node_pins_are_the_reference_builds_wiring() -> None:
    wires = {(w.from_pin, w.to_pin) for t in get_build("node-esp32-soil").wiring for w in t.wires}
    assert ("U4.AOUT", f"U1.GPIO{node_settings.SOIL_PIN}") in wires
    assert ("U5.DQ", f"U1.GPIO{node_settings.DS18B20_PIN}") in wires
    assert ("R2.2", f"U1.GPIO{node_settings.BATTERY_PIN}") in wires
    line = node_settings.MODBUS_LINE
    assert {("U7.DI", f"U1.GPIO{line['tx']}"), ("U7.RO", f"U1.GPIO{line['rx']}"),
            ("U7.DE", f"U1.GPIO{line['de']}")} <= wires


def test_sensor_settings_from_specs() -> None:
    specs = node_settings.load_specs(["capacitive-soil-moisture-v1-2", "ds18b20", "sensirion-sht3x"])
    rom = "28ff" + "00" * 6
    found = node_settings.sensors(specs, _Bus([rom]))
    assert found == {"soil_pin": 34, "ds18b20": {"pin": 4, "rom": rom}, "sht3x": True, "battery_pin": 35}
    with pytest.raises(SensorNotFound, match="no DS18B20"):
        node_settings.sensors(specs, _Bus([]))
    with pytest.raises(SensorNotFound, match="--ds18b20-rom"):
        node_settings.sensors(specs, _Bus([rom, "28aa" + "00" * 6]))

    modbus = node_settings.sensors(node_settings.load_specs(["jxct-soil-7in1"]), _Bus([]), battery=False,
                                   modbus_unit=3)["modbus"]
    spec = get_spec("jxct-soil-7in1")
    assert spec.serial is not None
    assert modbus["slave"] == 3 and modbus["baud"] == spec.serial.baud and modbus["spec"]["m"] == spec.key
    with pytest.raises(ProvisioningError, match="modbus-tcp sensor is not read by a node"):
        node_settings.sensors(node_settings.load_specs(["moxa-iologik-e1242"]), _Bus([]))
    with pytest.raises(ProvisioningError, match="--spec no-such-model"):
        node_settings.load_specs(["no-such-model"])
    settings = node_settings.settings_file("node-1", "ab" * 32, ("10.0.0.2", 1883), "farm", "pw", found, key_epoch=3)
    assert (settings["ep"], settings["power"]) == (3, node_settings.SENSOR_RAIL)
    assert node_settings.settings_file("node-1", "ab" * 32, ("10.0.0.2", 1883), "farm", "pw", found)["ep"] == 1
    assert node_settings.parse_broker("10.0.0.2") == ("10.0.0.2", 1883)
    assert node_settings.parse_broker("gw.local:1884") == ("gw.local", 1884)
    with pytest.raises(ValueError, match="HOST:PORT"):
        node_settings.parse_broker("gw:99999")


# -- on-site judgement ------------------------------------------------------------------------------


def test_readings_are_judged_against_the_spec_and_calibration() -> None:
    specs = node_settings.load_specs(["capacitive-soil-moisture-v1-2", "sensirion-sht3x"])
    raw = {"soil_moisture": {"unit": "%", "values": [1900.0, 1905.0, 1890.0], "error": None},
           "air_temperature": {"unit": "Cel", "values": [], "error": "DriverError('crc')"},
           "battery": {"unit": "mV", "values": [3900], "error": None}}
    by_metric = {r.metric: r for r in onsite.assess(specs, raw)}
    assert by_metric["soil_moisture_mv"].value == 1900.0 and by_metric["soil_moisture_mv"].plausible
    assert by_metric["soil_moisture"].value == pytest.approx(1900 * -0.0787401575 + 200)
    assert by_metric["soil_moisture"].plausible and by_metric["soil_moisture"].derived_from == "1900 mV"
    assert by_metric["air_temperature"].value is None and "crc" in (by_metric["air_temperature"].error or "")
    assert by_metric["battery"].plausible is None  # no spec: nothing to judge it by
    wet = onsite.assess(specs, {"soil_moisture": {"unit": "%", "values": [900.0]}},
                        {"soil_moisture": (-0.1, 250.0)})
    assert [(r.metric, r.plausible) for r in wet] == [("soil_moisture_mv", True), ("soil_moisture", False)]

    scale, offset = onsite.two_point_calibration(2540, 1270)
    assert (scale, offset) == pytest.approx((-0.0787401575, 200))
    with pytest.raises(ProvisioningError, match="should fall"):
        onsite.two_point_calibration(1800, 1700)
    assert onsite.signal_quality(-60) == "good" and onsite.signal_quality(-85).startswith("poor")


# -- ports and boards ------------------------------------------------------------------------------


def test_missing_busy_and_silent_ports_are_told_apart() -> None:
    with pytest.raises(PortMissing, match="no such serial port"):
        check_port("/dev/ttyFIELDTRUST-none")
    pty = PtyPort()
    try:
        with serial.Serial(pty.path, exclusive=True), pytest.raises(PortBusy, match="in use"):
            check_port(pty.path)
        check_port(pty.path)  # free again
        with pytest.raises(NotMicroPython, match="nothing answered"):
            probe_repl(pty.path, timeout=1.0)
    finally:
        pty.close()


def test_wrong_micropython_versions_are_refused() -> None:
    check_version(_info(), mpy_version=6)
    with pytest.raises(WrongFirmware, match="1.19.1 on the board"):
        check_version(BoardInfo("p", "aa", (1, 19, 1), 6, "ESP32", None))
    with pytest.raises(WrongFirmware, match=r"\.mpy version 5"):
        check_version(BoardInfo("p", "aa", (1, 22, 0), 5, "ESP32", None), mpy_version=6)


def test_every_error_has_a_code_a_todo_and_a_section_in_the_guide() -> None:
    guide = (ROOT / "docs" / "technician-provisioning.md").read_text()
    codes = [e.code for e in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for error in ALL_ERRORS:
        assert error.todo and f"`{error.code}`" in guide, error.code


def test_only_esp32_usb_bridges_are_taken_for_all() -> None:
    def port(device: str, vid: int | None, pid: int | None) -> SimpleNamespace:
        return SimpleNamespace(device=device, vid=vid, pid=pid)

    found = [port("/dev/ttyUSB1", 0x1A86, 0x7523), port("/dev/ttyUSB0", 0x10C4, 0xEA60),  # CH340, CP210x
             port("/dev/ttyACM0", 0x303A, 0x1001), port("/dev/ttyACM1", 0x303A, 0x4001),  # S3 JTAG, S2/S3 CDC
             port("/dev/ttyUSB2", 0x0403, 0x6001), port("/dev/ttyUSB3", 0x1A86, 0x55D4),  # FTDI, CH9102
             port("/dev/ttyS0", None, None),  # the laptop's own UART
             port("/dev/ttyACM2", 0x1199, 0x9071),  # a Sierra LTE modem
             port("/dev/ttyUSB4", 0x10C4, 0x8A2A)]  # a Silicon Labs Zigbee stick, not a CP210x
    assert esp32_ports(found) == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2",
                                  "/dev/ttyUSB3"]
    assert len(ESP32_USB_IDS) >= 8 and esp32_ports([]) == []


def test_an_unreachable_cloud_is_not_a_refusal() -> None:
    with CloudClient(CloudSettings(f"http://127.0.0.1:{free_port()}", ADMIN_TOKEN), timeout=2) as cloud, \
            pytest.raises(CloudUnreachable, match="cannot reach the cloud"):
        cloud.check_farm("coop", "farm-1")


def test_gateway_config_is_one_the_agent_accepts(tmp_path: Path) -> None:
    import yaml

    from edge_agent.config import parse_config

    config = agent_config("coop", "gw-1", 1, tmp_path / "gateway.key", Uplink("mqtt.example", 8883, True),
                          "gw-1", "pw-0123456789")
    (tmp_path / "gateway.key").write_text("ab" * 32)
    parsed = parse_config(yaml.safe_dump(config))
    assert parsed.gateway.id == "gw-1" and parsed.uplink.broker.tls is not None
    assert parsed.uplink.broker.username == "gw-1" and parsed.uplink.broker.port == 8883


# -- the tool against the real API ------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient
    cloud: CloudClient
    owner_url: str
    tenant: str
    tag: str

    def __getattr__(self, name: str) -> str:
        """``farm``, ``field``, ``gw``, ``old`` (node), ``new`` (node), ``bus``: this test's ids (ids are unique
        across tenants, and the module shares one database)."""
        if name in ("farm", "field", "gw", "old", "new", "bus"):
            return f"{name}-{self.tag}"
        raise AttributeError(name)


@pytest.fixture(scope="module")
def api_app(module_app_db: AppDatabase) -> Iterator[FastAPI]:
    with running_app(module_app_db.owner_url) as app:
        yield app


@pytest.fixture
def api(api_app: FastAPI, module_app_db: AppDatabase) -> Iterator[Api]:
    """A tenant of this test's own: a farm with a field, a gateway, an installed node on both (``old``), a node
    with no place yet (``new``), a bus device; the tool's CloudClient on the admin token."""
    tag = uuid.uuid4().hex[:8]
    client = client_of(api_app)
    found = Api(client, CloudClient(CloudSettings("http://testserver", ADMIN_TOKEN), transport=client._transport),
                module_app_db.owner_url, f"coop-{tag}", tag)  # the tool's client, in-process (no socket)
    add_tenant(client, found.tenant)
    for path, body in (("/farms", {"id": found.farm, "name": "North"}),
                       ("/fields", {"id": found.field, "farm_id": found.farm, "name": "Borehole"}),
                       ("/gateways", {"id": found.gw, "farm_id": found.farm}),
                       ("/devices", {"id": found.old, "kind": "node", "gateway_id": found.gw, "field_id": found.field,
                                     "install_note": "north corner", "install_latitude": -0.095,
                                     "install_longitude": 34.705}),
                       ("/devices", {"id": found.new, "kind": "node"}),
                       ("/devices", {"id": found.bus, "kind": "bus", "gateway_id": found.gw,
                                     "spec": "jxct-soil-7in1"})):
        done = client.post(api_path(f"/tenants/{found.tenant}{path}"), json=body, headers=ADMIN)
        assert done.status_code == 201, done.text
    yield found
    found.cloud.close()


def test_events_are_recorded_once_per_id_as_the_caller(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    client, base = api.client, api_path(f"/tenants/{api.tenant}/devices")
    event_id = str(uuid.uuid4())
    body = {"id": event_id, "kind": "provisioned", "detail": {"board_uid": "a4cf12345678"}}
    first = client.post(f"{base}/{api.new}/events", json=body, headers=ADMIN)
    again = client.post(f"{base}/{api.new}/events", json=body, headers=ADMIN)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert first.json()["by"] == "admin"
    other = client.post(f"{base}/{api.new}/events", json=body | {"detail": {}}, headers=ADMIN)
    assert other.status_code == 409 and "already used" in other.json()["message"]
    replaced = client.post(f"{base}/{api.new}/events", json={"kind": "replaced"}, headers=ADMIN)
    assert replaced.status_code == 422
    missing = client.post(f"{base}/nope/events", json={"kind": "moved"}, headers=ADMIN)
    assert missing.status_code == 404
    listed = client.get(f"{base}/{api.new}/events", headers=ADMIN).json()
    assert [e["id"] for e in listed] == [event_id]

    cheap_hashing(monkeypatch)
    tech = add_user(client, api.tenant, "tech", ["technician"])
    clerk_login = add_user(client, api.tenant, "clerk", ["clerk"])["login"]
    as_tech = bearer(sign_in(client, api.tenant, "tech")["session_token"])
    as_clerk = bearer(sign_in(client, api.tenant, clerk_login)["session_token"])
    moved = client.post(f"{base}/{api.new}/events", json={"kind": "moved", "detail": {"why": "flood"}}, headers=as_tech)
    assert moved.status_code == 201 and moved.json()["by"] == tech["id"]  # the technician, not "admin"
    assert client.post(f"{base}/{api.new}/events", json={"kind": "moved"}, headers=as_clerk).status_code == 403
    assert [e["by"] for e in client.get(f"{base}/{api.new}/events", headers=as_clerk).json()] == ["admin", tech["id"]]
    assert client.get(api_path(f"/tenants/other-{api.tenant}/devices/{api.new}/events"),
                      headers=as_tech).status_code == 404


def test_replace_moves_the_place_revokes_the_old_key_and_records_both_sides(api: Api) -> None:
    with psycopg.connect(api.owner_url) as conn:
        assert registry.key_for(conn, "device", api.old, 1, KEK) is not None
    done = api.cloud.replace(api.tenant, api.old, api.new, "probe cable cut")
    device = done["device"]
    assert (device["id"], device["farm_id"], device["field_id"], device["gateway_id"]) == (
        api.new, api.farm, api.field, api.gw)
    assert (device["install_note"], device["install_latitude"], device["install_longitude"]) == (
        "north corner", -0.095, 34.705)
    assert device["installed_at"] is not None
    assert done["old_event"]["detail"] == {"replaced_by": api.new, "farm_id": api.farm, "field_id": api.field,
                                           "gateway_id": api.gw, "note": "probe cable cut", "revoked_epochs": [1]}
    assert done["new_event"]["detail"]["replaces"] == api.old and done["new_event"]["by"] == "admin"
    with psycopg.connect(api.owner_url) as conn:
        assert registry.key_for(conn, "device", api.old, 1, KEK) is None  # the old board can sign no more
        assert registry.key_for(conn, "device", api.new, 1, KEK) is not None
    assert [e["kind"] for e in api.cloud.events(api.tenant, api.old)] == ["replaced"]
    assert api.cloud.device(api.tenant, api.old)["key_epoch"] is None

    with pytest.raises(CloudRefused, match="already replaced"):
        api.cloud.replace(api.tenant, api.old, api.new)
    with pytest.raises(CloudRefused, match="bus device"):
        api.cloud.replace(api.tenant, api.bus, api.new)
    with pytest.raises(CloudRefused, match="'ghost' not found"):
        api.cloud.replace(api.tenant, api.old, "ghost")
    anonymous = api.client.post(api_path(f"/tenants/{api.tenant}/devices/{api.old}/replace"),
                                json={"new_device": api.new})
    assert anonymous.status_code == 401


def test_replace_can_keep_the_old_key(api: Api) -> None:
    spare = f"spare-{api.tag}"
    api.cloud.register_node(api.tenant, spare, os.urandom(32).hex(), None, None, None)
    done = api.cloud.replace(api.tenant, api.old, spare, revoke_old_key=False)
    assert done["old_event"]["detail"]["revoked_epochs"] == []
    assert api.cloud.device(api.tenant, api.old)["key_epoch"] == 1


def test_a_claim_code_puts_the_registered_node_on_its_farm_once(api: Api, tmp_path: Path) -> None:
    made = api.client.post(api_path(f"/tenants/{api.tenant}/claim-codes"), json={"farm_id": api.farm,
                           "field_id": api.field}, headers=ADMIN)
    assert made.status_code == 201, made.text
    code = made.json()["code"]
    vault = Vault(tmp_path / "vault", "pass phrase")
    registration = {"farm_id": None, "gateway_id": api.gw, "spec": None, "event_id": str(uuid.uuid4()),
                    "claim_code": code.lower().replace("-", " "), "event_detail": {"board_uid": "aa"}}
    claimed = f"claimed-{api.tag}"
    entry = vault.put(claimed, api.tenant, {"key_hex": os.urandom(32).hex(), "registration": registration})
    device = register_entry(api.cloud, vault, entry)
    assert (device["farm_id"], device["field_id"], device["gateway_id"], device["key_epoch"]) == (
        api.farm, api.field, api.gw, 1)
    again = vault.get(claimed)
    assert again is not None and again.secret["claimed"]
    # the redemption's answer lost (attempted, not known as done): sent again, the code is spent, the node is
    # registered and on the code's farm already, so both are taken as this entry's own
    lost = vault.put(claimed, api.tenant, again.secret | {"claimed": False})
    assert register_entry(api.cloud, vault, lost)["farm_id"] == api.farm
    assert [e["kind"] for e in api.cloud.events(api.tenant, claimed)] == ["moved", "provisioned"]
    with pytest.raises(ClaimRefused, match=f"was used by device '{claimed}'"):
        api.cloud.redeem_claim(api.tenant, code, api.new)
    with pytest.raises(ClaimRefused, match="not found"):
        api.cloud.redeem_claim(api.tenant, "ZZZZ-ZZZZ", api.new)


def test_calibration_is_merged_into_the_desired_config_in_the_apis_shape(api: Api, tmp_path: Path) -> None:
    assert node_config.with_calibration({}, {"soil_moisture": (-0.08, 201.5)}) == {
        "calibration": {"soil_moisture": [-0.08, 201.5]}}
    node_format = {"interval_s": 900, "samples": 5, "deltas": {"soil_moisture": 1},
                   "calibration": {"air_temperature": {"offset": -0.4}}}
    assert node_config.as_update(node_format) == {"interval_s": 900, "samples": 5, "deltas": {"soil_moisture": 1},
                                                  "calibration": {"air_temperature": [1.0, -0.4]}}
    put = api.cloud.put_config(api.tenant, api.old, node_config.as_update(node_format))
    assert (put["device"], put["version"]) == (api.old, 1)

    stored = node_config.store_calibration(api.cloud, api.tenant, api.old, {"soil_moisture": (-0.08, 201.5)})
    assert stored["version"] == 2
    cfg = node_config.desired_config(api.cloud.config(api.tenant, api.old))
    assert cfg["interval_s"] == 900 and cfg["samples"] == 5 and cfg["deltas"] == {"soil_moisture": 1}  # kept
    assert node_config.calibration_of(cfg) == {"air_temperature": (1.0, -0.4), "soil_moisture": (-0.08, 201.5)}

    queue = PendingConfigs(tmp_path / "pending")
    queue.queue(api.tenant, api.old, {"soil_moisture": (-0.07, 190.0)}, {"air_mv": 2700, "water_mv": 1270})
    queue.queue(api.tenant, api.new, {"soil_moisture": (-0.07, 190.0)}, {})  # no gateway: no config yet
    assert [p.device_id for p in queue.all()] == [api.new, api.old]
    sent = {r.device_id: r for r in send_pending(api.cloud, queue)}
    assert sent[api.old].stored and "config version 3" in sent[api.old].message
    assert not sent[api.new].stored and "no gateway" in sent[api.new].message
    assert [p.device_id for p in queue.all()] == [api.new]  # kept for the next sync
    cfg = node_config.desired_config(api.cloud.config(api.tenant, api.old))
    assert cfg["calibration"]["soil_moisture"] == {"scale": -0.07, "offset": 190}
    with pytest.raises(ValueError, match="device id"):
        queue.path(api.tenant, "../x")


def test_an_ota_needs_a_published_build(api: Api) -> None:
    build = new_release(api.owner_url)
    job = api.cloud.push_ota(api.tenant, api.old, build)
    assert (job["version"], job["gateway_id"], job["status"]) == (build, api.gw, "pending")
    with pytest.raises(ReleaseNotFound, match=f"firmware build {build + 1000}: firmware release {build + 1000} not"):
        api.cloud.push_ota(api.tenant, api.old, build + 1000)
    with pytest.raises(CloudRefused, match="'ghost' not found"):
        api.cloud.push_ota(api.tenant, "ghost", build)
