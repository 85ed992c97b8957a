"""A virtual ESP32 on a pseudo-terminal: real MicroPython behind its REPL, for the real ``mpremote``.

Technicians' tools (``mpremote connect /dev/ttyUSB0 cp ...``, provisioning) talk to a board over its
USB serial line.  :class:`VirtualBoard` gives them one without hardware: a pty whose far end is
``hardware/micropython/board.mjs``, the official MicroPython 1.27 WebAssembly port run by Node.js
behind the board's REPL (friendly, raw and raw-paste; Ctrl-D soft reset that re-runs boot.py and
main.py), with the ESP32's ``machine``, ``onewire``, ``esp32``, ``network`` and ``socket`` modules.
The board's flash is a host folder, mounted at ``/`` as on an ESP32, so copied files survive
resets and can be inspected; the firmware's real ``firmware/main.py`` and ``firmware/hal.py`` run
on it unchanged.

What the board senses comes from :class:`BoardEnvironment`, a JSON file this side writes and the
board re-reads whenever it changed: voltages on ADC pins, the chips on the I2C and 1-Wire buses and
their readings, the Wi-Fi networks in range, the host names it may reach, the host serial device
on its RS485 UART (a simulated Modbus bus).  Wired as the reference
build (``hardware/reference/node-esp32-soil.yaml``, its switched sensor rail included: the sensors
answer only while GPIO26 powers them), each sensor named in ``sensors`` follows the farm's
:class:`~hardware.signals.SignalModel` until a test pins its value with :meth:`BoardEnvironment.hold`.

The serving thread shuttles bytes between the pty and Node's stdin/stdout and refreshes the
environment; Node exits when its stdin closes, and :func:`fieldtrust.processes.spawn` ends it if
this process dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fieldtrust.processes import spawn, stop
from hardware.micropython_runner import RUNNER_DIR, micropython_available
from hardware.pty_port import PtyPort
from hardware.signals import SignalModel, stable_key
from hardware.sim_thread import SimulatorThread

log = logging.getLogger(__name__)

BOARD_SCRIPT = RUNNER_DIR / "board.mjs"
#: the chip's base MAC, kept in the flash folder (the board neither sees nor deletes it), so a board
#: given the same folder again is the same board
EFUSE_FILE = ".esp32-efuse-mac"
ESPRESSIF_OUI = bytes.fromhex("246f28")
SENSORS = ("soil", "ds18b20", "sht3x", "battery")
ENVIRONMENT_REFRESH_S = 5.0
_PROBE_AIR_MV, _PROBE_WATER_MV = 2540.0, 1270.0  # capacitive-soil-moisture-v1-2 defaults
_PROBE_PERCENT_PER_VWC = 2.0  # the probe's 0-100 % (air to water) against % volume water in the soil


class BoardUnavailable(RuntimeError):
    """Node.js or the pinned MicroPython npm package is missing."""


@dataclass(frozen=True)
class Wiring:
    """Where the sensors sit on the board (the reference build's pins and I2C address).

    ``power_pin`` is the GPIO of the load switch on the sensors' supply (the reference build's Q1 on
    GPIO26, :data:`REFERENCE_WIRING`): the probe, the DS18B20, the SHT3x and the RS485 transceiver
    then answer only while the firmware drives it to ``power_active`` and ``power_settle_ms`` have
    passed since; the battery divider is not on it.  None (:data:`BENCH_WIRING`, a bench board with
    the sensors on the fixed 3.3 V) keeps them always powered.  A board is wired as the reference
    build (:data:`REFERENCE_WIRING`) unless told otherwise, so tools that forget the rail read nothing
    here as they would in the field.
    """

    soil_pin: int = 34
    battery_pin: int = 35
    battery_divider: float = 2.0  # 1 MOhm / 1 MOhm: the ADC sees half the battery voltage
    ds18b20_pin: int = 4
    i2c_scl: int = 22
    i2c_sda: int = 21
    sht3x_address: int = 0x44
    rs485_tx: int = 17  # UART2 to the transceiver's DI
    rs485_rx: int = 16  # and from its RO
    power_pin: int | None = None
    power_active: int = 0  # Q1 is a P-MOSFET with its gate pulled up: low = on
    power_settle_ms: int = 150  # the capacitive probe's output settles about 150 ms after power-up


#: the reference build with its switched sensor rail (hardware/reference/node-esp32-soil.yaml, Q1): the default
REFERENCE_WIRING = Wiring(power_pin=26)
#: the same pins with every sensor on the fixed 3.3 V (a bench board without the load switch)
BENCH_WIRING = Wiring()


def check_sensors(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ValueError naming any that is not one of :data:`SENSORS`."""
    chosen = tuple(names)
    unknown = sorted(set(chosen) - set(SENSORS))
    if unknown:
        raise ValueError(f"unknown sensor(s) {', '.join(unknown)}; choose from {', '.join(SENSORS)}")
    return chosen


def parse_board_id(text: str) -> bytes:
    """Six bytes from 12 hex digits (``:`` or ``-`` between pairs allowed); ValueError naming the input."""
    digits = re.sub(r"[:\-]", "", text.strip())
    if not re.fullmatch(r"[0-9a-fA-F]{12}", digits):
        raise ValueError(f"board id must be 12 hex digits (a 6-byte MAC), got {text!r}")
    return bytes.fromhex(digits)


class BoardEnvironment:
    """The world around one board, written to :attr:`path` as the JSON ``board_hw.mjs`` reads.

    Values are physical: ``soil_mv`` (the probe's output), ``soil_temperature_c`` (DS18B20),
    ``air_temperature_c`` and ``humidity_pct`` (SHT3x), ``battery_mv`` (before the divider),
    ``rssi`` (dBm of the joined network).  Sensors not in ``sensors`` are absent from the board.
    """

    def __init__(self, path: Path, board_id: bytes, sensors: Iterable[str] = (), wifi: str | None = None,
                 wifi_password: str | None = None, hosts: dict[str, str] | None = None, seed: int = 0,
                 wiring: Wiring | None = None, rs485: str | None = None) -> None:
        chosen = check_sensors(sensors)
        self.path = path
        self.rs485 = rs485
        self.board_id = board_id
        self.sensors = chosen
        self.wiring = wiring or REFERENCE_WIRING
        self.wifi = wifi
        self.wifi_password = wifi_password
        self.hosts = dict(hosts or {})
        self.model = SignalModel(seed)
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def hold(self, **values: float) -> None:
        """Pin readings to exact values (e.g. ``soil_mv=1800``) until :meth:`release`; written at once."""
        known = {"soil_mv", "soil_temperature_c", "air_temperature_c", "humidity_pct", "battery_mv", "rssi"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown reading(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        with self._lock:
            self._held.update({k: float(v) for k, v in values.items()})
        self.write()

    def release(self, *names: str) -> None:
        """Let pinned readings follow the signal model again (all of them when no name is given)."""
        with self._lock:
            for name in names or list(self._held):
                self._held.pop(name, None)
        self.write()

    def set_wifi(self, ssid: str | None, password: str | None = None) -> None:
        """The network in range (None: none), as if the access point went up or down."""
        self.wifi, self.wifi_password = ssid, password
        self.write()

    def readings(self, t: float) -> dict[str, float]:
        """Every reading at host time ``t``: the signal model's, with sensor noise, unless held."""
        m, key = self.model, stable_key(self.board_id.hex())
        vwc = m.soil_moisture(t) + m.noise(key + 1, t, 0.15)
        percent = min(100.0, max(0.0, vwc * _PROBE_PERCENT_PER_VWC))
        model = {
            "soil_mv": _PROBE_AIR_MV + (_PROBE_WATER_MV - _PROBE_AIR_MV) * percent / 100.0,
            "soil_temperature_c": m.soil_temperature(t) + m.noise(key + 2, t, 0.03),
            "air_temperature_c": m.air_temperature(t) + m.noise(key + 3, t, 0.05),
            "humidity_pct": m.relative_humidity(t) + m.noise(key + 4, t, 0.4),
            "battery_mv": 3750.0 + 350.0 * m.sun(t) + m.noise(key + 5, t, 4.0),
            "rssi": -62.0 + m.noise(key + 6, t, 2.0),
        }
        with self._lock:
            model.update(self._held)
        return model

    def document(self, t: float) -> dict:
        """The JSON document the board reads."""
        r, w = self.readings(t), self.wiring
        adc: dict[str, float] = {}
        if "soil" in self.sensors:
            adc[str(w.soil_pin)] = round(r["soil_mv"], 3)
        if "battery" in self.sensors:
            adc[str(w.battery_pin)] = round(r["battery_mv"] / w.battery_divider, 3)
        i2c = []
        if "sht3x" in self.sensors:
            i2c.append({"chip": "sht3x", "scl": w.i2c_scl, "sda": w.i2c_sda, "address": w.sht3x_address,
                        "temperature_c": r["air_temperature_c"], "humidity_pct": r["humidity_pct"]})
        onewire = {}
        if "ds18b20" in self.sensors:
            onewire[str(w.ds18b20_pin)] = [{"serial": self.board_id.hex(), "temperature_c": r["soil_temperature_c"]}]
        wifi = []
        if self.wifi is not None:
            wifi.append({"ssid": self.wifi, "password": self.wifi_password, "rssi": round(r["rssi"])})
        uart = [] if self.rs485 is None else [{"tx": w.rs485_tx, "rx": w.rs485_rx, "device": self.rs485}]
        doc = {"adc_mv": adc, "i2c": i2c, "onewire": onewire, "uart": uart, "wifi": wifi, "hosts": self.hosts}
        if w.power_pin is not None:  # what the switched rail feeds (board_lib/machine.py ``_powered``)
            doc["rail"] = {"pin": w.power_pin, "active": w.power_active, "settle_ms": w.power_settle_ms,
                           "adc": [w.soil_pin], "onewire": [w.ds18b20_pin], "i2c": [[w.i2c_scl, w.i2c_sda]],
                           "uart": [[w.rs485_tx, w.rs485_rx]]}
        return doc

    def write(self, t: float | None = None) -> None:
        """Write the document atomically (the board never reads half a file)."""
        doc = self.document(time.time() if t is None else t)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)


class VirtualBoard(SimulatorThread):
    """A virtual ESP32 on :attr:`port`; its flash is ``flash_dir`` (a temporary folder when None).

    ``board_id`` (6 bytes or 12 hex digits) is ``machine.unique_id()`` and the Wi-Fi MAC; by default
    the one kept in the flash folder, else a new one (Espressif's OUI and 3 random bytes) kept there.
    ``sensors`` (of :data:`SENSORS`) are wired as ``wiring`` (default :data:`REFERENCE_WIRING`: the
    sensors answer only while the firmware powers their rail) and follow the farm's signal model (``seed``);
    ``wifi`` is the SSID in range (None: no network, the board never joins), ``wifi_password`` its
    key (None: any); ``hosts`` maps names the board may resolve to addresses it may reach, besides
    the host's loopback; ``rs485`` is a host serial device (e.g. the pty of
    :class:`~hardware.rtu_bus.RtuBusSimulator`) on the RS485 transceiver's UART pins.
    """

    kind = "virtual board"

    def __init__(self, flash_dir: Path | str | None = None, *, board_id: bytes | str | None = None,
                 sensors: Iterable[str] = (), wifi: str | None = None, wifi_password: str | None = None,
                 hosts: dict[str, str] | None = None, seed: int = 0, wiring: Wiring | None = None,
                 rs485: str | None = None) -> None:
        super().__init__()
        self.port = ""
        self._flash_arg = Path(flash_dir) if flash_dir is not None else None
        self._id_arg = parse_board_id(board_id) if isinstance(board_id, str) else board_id
        if self._id_arg is not None and len(self._id_arg) != 6:
            raise ValueError(f"board id must be 6 bytes, got {len(self._id_arg)}")
        self._env_args = {"sensors": check_sensors(sensors), "wifi": wifi, "wifi_password": wifi_password,
                          "hosts": hosts, "seed": seed, "wiring": wiring, "rs485": rs485}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._host_dir: tempfile.TemporaryDirectory[str] | None = None
        self.flash_dir: Path | None = None
        self.board_id = b""
        self.environment: BoardEnvironment | None = None
        self._pty: PtyPort | None = None
        self.node: subprocess.Popen | None = None
        #: bytes the board wrote while nothing read the port (the pty buffer was full), as a UART loses them
        self.bytes_dropped = 0

    @property
    def unique_id(self) -> bytes:
        """What ``machine.unique_id()`` returns on the board."""
        return self.board_id

    def _open(self) -> None:
        reason = micropython_available()
        if reason is not None:
            raise BoardUnavailable(reason)
        if self._flash_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fieldtrust-board-")
            self.flash_dir = Path(self._tmp.name)
        else:
            self.flash_dir = self._flash_arg
            self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.board_id = self._identity(self.flash_dir)
        self._host_dir = tempfile.TemporaryDirectory(prefix="fieldtrust-board-env-")
        self.environment = BoardEnvironment(Path(self._host_dir.name) / "environment.json", self.board_id,
                                            **self._env_args)
        self.environment.write()
        self._pty = PtyPort()
        self.port = self._pty.path
        self.node = spawn(["node", str(BOARD_SCRIPT), "--fs", str(self.flash_dir), "--id", self.board_id.hex(),
                           "--env", str(self.environment.path), "--host-file", EFUSE_FILE],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for stream in (self.node.stdout, self.node.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)

    def _identity(self, flash_dir: Path) -> bytes:
        """The given id, else the one kept in the flash folder, else a new one; kept there either way."""
        efuse = flash_dir / EFUSE_FILE
        board_id = self._id_arg
        if board_id is None and efuse.is_file():
            try:
                board_id = parse_board_id(efuse.read_text())
            except ValueError as exc:
                raise ValueError(f"{efuse}: {exc}") from None
        if board_id is None:
            board_id = ESPRESSIF_OUI + os.urandom(3)
        efuse.write_text(board_id.hex() + "\n")
        return board_id

    def _thread_name(self) -> str:
        return f"virtual-board {self.port}"

    def _run(self) -> None:
        try:
            self._shuttle()
        except Exception:  # never let the thread die silently; the board is then unusable, say so
            log.exception("%s %s: stopped serving", self.kind, self.port)

    def _shuttle(self) -> None:
        pty, node, env = self._pty, self.node, self.environment
        assert pty is not None and node is not None and node.stdout and node.stderr and node.stdin and env
        out_fd, err_fd, in_fd = node.stdout.fileno(), node.stderr.fileno(), node.stdin.fileno()
        watched = [pty.fd, out_fd, err_fd, self._wake_fd] + ([pty.watch_fd] if pty.watch_fd is not None else [])
        next_refresh = time.monotonic() + ENVIRONMENT_REFRESH_S
        while not self._stopping.is_set():
            ready, _, _ = select.select(watched, [], [], max(0.0, next_refresh - time.monotonic()))
            if self._wake_fd in ready:
                return
            if time.monotonic() >= next_refresh:
                env.write()
                next_refresh = time.monotonic() + ENVIRONMENT_REFRESH_S
            if pty.watch_fd is not None and pty.watch_fd in ready:
                pty.handle_watch_events()
            if pty.fd in ready:
                data = _read(pty.fd)
                if data:
                    os.write(in_fd, data)
            if out_fd in ready:
                data = _read(out_fd)
                if data is None:
                    log.error("%s %s: MicroPython exited with status %s", self.kind, self.port, node.wait())
                    return
                self._to_port(data)
            if err_fd in ready:
                data = _read(err_fd)
                if data:
                    log.warning("%s %s: %s", self.kind, self.port, data.decode(errors="replace").rstrip())
                elif data is None:
                    watched.remove(err_fd)

    def _to_port(self, data: bytes) -> None:
        assert self._pty is not None
        try:
            written = os.write(self._pty.fd, data)
        except BlockingIOError:
            written = 0
        self.bytes_dropped += len(data) - written

    def _close(self) -> None:
        if self.node is not None:
            if self.node.stdin is not None:
                with contextlib.suppress(OSError):
                    self.node.stdin.close()
            stop(self.node)
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        for folder in (self._tmp, self._host_dir):
            if folder is not None:
                folder.cleanup()
        self._tmp = self._host_dir = None


def _read(fd: int) -> bytes | None:
    """What is ready on ``fd``: ``b""`` when nothing (yet), None at end of file."""
    try:
        data = os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return b""
    return data or None
