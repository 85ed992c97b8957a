"""The node's settings file (``/ft_node.json``, read by ``firmware/main.py``) from the specs of its sensors.

A node's sensors are wired as in the reference build ``node-esp32-soil`` (docs/technician-guide.md):
the capacitive probe on GPIO34, the DS18B20 on GPIO4, the SHT31 on I2C (21/22), the battery divider
on GPIO35, an RS485 probe on UART2 (TX 17, RX 16, DE 25), and all but the divider on the switched
sensor rail (load switch Q1 on GPIO26, low = on), which the firmware powers only while it samples.
Those pins are here as data (tests check them against the build's wiring tables, which the product
may not import); a spec maps to the settings key the firmware's ``build_sensors`` reads.  A DS18B20's
ROM code is found on the board's bus; a Modbus probe gets its spec compiled by
:func:`device_specs.compact.compact`, with the line settings beside it.
"""

from __future__ import annotations

from typing import Any, Protocol

from device_specs.compact import CompactError, compact
from device_specs.registry import SpecError, get_spec
from device_specs.schema import DeviceSpec, Interface
from firmware.main import FIRST_KEY_EPOCH
from provisioning.errors import ProvisioningError, SensorNotFound

#: pins of the reference node build (hardware/reference/node-esp32-soil.yaml)
SOIL_PIN = 34
DS18B20_PIN = 4
BATTERY_PIN = 35
MODBUS_LINE = {"uart": 2, "tx": 17, "rx": 16, "de": 25}
#: the sensors' switched supply as ``firmware/main.py`` reads it (``power``): Q1's gate, low = on, and the time
#: the capacitive probe's output needs after power-up (about 150 ms measured; 200 ms leaves a margin)
SENSOR_RAIL = {"pin": 26, "active": 0, "settle_ms": 200}
DEFAULT_BROKER_PORT = 1883
DEFAULT_OTA_PORT = 8080


class SpecNotForNodes(ProvisioningError):
    code = "spec-not-for-nodes"
    todo = "`fieldtrust spec list` shows the models; Modbus TCP and serial-line sensors go on the gateway."


class OneWireScanner(Protocol):
    def ds18b20_roms(self, pin: int, power: dict[str, int] | None = None) -> list[str]: ...


def load_specs(names: list[str]) -> list[DeviceSpec]:
    specs = []
    for name in names:
        try:
            specs.append(get_spec(name))
        except SpecError as exc:
            raise SpecNotForNodes(f"--spec {name}: {exc}") from None
    return specs


def sensors(specs: list[DeviceSpec], board: OneWireScanner, *, battery: bool = True, modbus_unit: int | None = None,
            ds18b20_rom: str | None = None) -> dict[str, Any]:
    """The ``sensors`` object of the node's settings."""
    out: dict[str, Any] = {}
    for spec in specs:
        metrics = {p.metric for p in spec.points}
        if spec.interface == Interface.ADC and "soil_moisture" in metrics:
            out["soil_pin"] = SOIL_PIN
        elif spec.interface == Interface.ONEWIRE:
            out["ds18b20"] = {"pin": DS18B20_PIN, "rom": ds18b20_rom or _one_rom(board)}
        elif spec.interface == Interface.I2C and "air_temperature" in metrics:
            out["sht3x"] = True
        elif spec.interface == Interface.MODBUS_RTU:
            if "modbus" in out:
                raise SpecNotForNodes(f"--spec {spec.model}: a node reads one Modbus probe; give one RTU spec")
            out["modbus"] = modbus(spec, modbus_unit)
        else:
            raise SpecNotForNodes(f"--spec {spec.model}: a {spec.interface.value} sensor is not read by a node")
    if battery:
        out["battery_pin"] = BATTERY_PIN
    return out


def modbus(spec: DeviceSpec, unit: int | None) -> dict[str, Any]:
    try:
        form = compact(spec)
    except CompactError as exc:
        raise SpecNotForNodes(f"--spec {spec.model}: {exc}") from None
    line = spec.serial
    assert line is not None  # every RTU spec has its line defaults (validated with the spec)
    return MODBUS_LINE | {"baud": line.baud, "parity": line.parity.value, "slave": unit or line.unit_id,
                          "spec": form}


def _one_rom(board: OneWireScanner) -> str:
    roms = board.ds18b20_roms(DS18B20_PIN, dict(SENSOR_RAIL))  # the probe is on the switched rail
    if not roms:
        raise SensorNotFound(f"no DS18B20 answers on GPIO{DS18B20_PIN}")
    if len(roms) > 1:
        raise SensorNotFound(f"{len(roms)} DS18B20 answer on GPIO{DS18B20_PIN} ({', '.join(roms)}): "
                             "give the one for this node with --ds18b20-rom", todo="pick the ROM code printed on "
                             "the probe's tag, or connect one probe at a time")
    return roms[0]


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` of the gateway's broker as the node reaches it over Wi-Fi."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        number = int(port) if port else DEFAULT_BROKER_PORT
    except ValueError:
        raise ValueError(f"--broker must be HOST or HOST:PORT; got {text!r}") from None
    if not host or not 1 <= number <= 65535:
        raise ValueError(f"--broker must be HOST or HOST:PORT; got {text!r}")
    return host, number


def settings_file(device_id: str, key_hex: str, broker: tuple[str, int], wifi_ssid: str, wifi_password: str,
                  sensors: dict[str, Any], ota_port: int = DEFAULT_OTA_PORT, key_epoch: int = FIRST_KEY_EPOCH
                  ) -> dict[str, Any]:
    """What ``firmware/main.py`` reads from ``/ft_node.json``; ``ep`` is the epoch the cloud gave ``key_hex``
    (written even when it is the firmware's default, so the file says which key it holds)."""
    return {"id": device_id, "key": key_hex, "ep": key_epoch, "host": broker[0], "port": broker[1],
            "wifi": {"ssid": wifi_ssid, "password": wifi_password}, "ota_port": ota_port,
            "power": dict(SENSOR_RAIL), "sensors": sensors}
