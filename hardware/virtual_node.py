"""A sensor node in CPython that runs the real firmware: ``firmware.cycle.Node`` on a simulated board.

The demo's nodes, and the tests that need a node on a real broker, should run the code a field
node runs — sampling, calibration, sequence numbers and outbox on flash, the MQTT client, the
signing — not a second publisher that imitates it.  Only what lies below the firmware's hardware
layer is simulated here:

* :class:`FarmBoard`: ``firmware.hal_sim.SimBoard`` wired like the reference build
  (``hardware/reference/node-esp32-soil.yaml``): capacitive soil probe on GPIO34, DS18B20 on GPIO4,
  SHT3x at I2C 0x44, battery divider on GPIO35.  Each answers from the farm's
  :class:`~hardware.signals.SignalModel` at the moment it is read, in what the part sends: the
  probe's millivolts through the inverse of that probe's two-point calibration (the firmware's own
  calibration, from its signed config, turns them back into %), DS18B20 scratchpads and SHT3x words
  with their CRCs (``hal_sim`` encodes them).  Flash is a file, so sequence numbers, config and
  unsent frames survive a restart; RTC memory lives as long as the board object (deep sleep keeps
  it, a stop — the power going off — loses it).
* :class:`SocketNet`: the hal's network over host sockets (``Esp32Network`` on a board).
* :class:`VirtualNode`: the thread that runs wake after wake, as ``firmware.main.run`` does on a
  board: a new ``Node`` at every boot (deep sleep ends in a reset), a crash sleeps without
  clearing the boot counter.  It counts every frame the firmware puts into its outbox and every
  frame a PUBACK releases (:class:`NodeTally`), the node's side of the demo's account.

Time: the board's wall clock is the host's.  Readings must carry real times (the cloud refuses
those stamped more than ten minutes ahead), so a node cannot run on a fast clock, and the firmware
will not sleep less than a 60 s interval; to show several wakes a minute the thread wakes the node
early — after ``wake_every_s`` at most, as an external wake source would on an ESP32.  The firmware
cannot tell: every wake runs its whole cycle.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from contract import telemetry
from firmware import cycle
from firmware.config import config_body, validate_cfg
from firmware.crc import crc8_dallas
from firmware.drivers import sht3x, soil_moisture
from firmware.flash import FileFlash
from firmware.hal import FLASH_SIZE
from firmware.hal_sim import SimBoard, SimSht3x, ds18b20_scratchpad
from firmware.main import CRASH_SLEEP_MS, FW, build_sensors
from firmware.outbox import Outbox
from hardware.signal_binding import SIGNALS, Binding
from hardware.signals import SignalModel, stable_key
from hardware.sim_thread import SimulatorThread

log = logging.getLogger(__name__)

#: the reference build's wiring (hardware/reference/node-esp32-soil.yaml), in /ft_node.json's form
SOIL_PIN, DS18B20_PIN, BATTERY_PIN = 34, 4, 35
BATTERY_DIVIDER = 2.0  # 1 MOhm over 1 MOhm: the ADC sees half the cell (battery.read_mv's default ratio)


# -- board and network ------------------------------------------------------------------------------


class WallClockBoard(SimBoard):
    """The simulated board with real ticks: the MQTT client's deadlines run against real sockets."""

    def ticks_ms(self) -> int:
        return int(time.monotonic() * 1000)


class SocketNet:
    """The hal's network object over a real TCP socket (what ``Esp32Network`` does on a board).

    ``time_server``: NTP answers.  The boards here keep the host's clock, so a sync has nothing to
    set; without one the firmware flags its readings ``clock_unsynced``, as on a farm without NTP.
    """

    def __init__(self, time_server: bool = False) -> None:
        self.link_up = True
        self.time_server = time_server

    def up(self, timeout_ms: int) -> None:
        if not self.link_up:
            raise OSError(118, "no Wi-Fi")

    def tcp_connect(self, host: str, port: int, timeout_ms: int) -> socket.socket:
        return socket.create_connection((host, port), timeout=timeout_ms / 1000)

    def ntp_sync(self) -> None:
        if not self.time_server:
            raise OSError(110, "no NTP server on this network")

    def fetch(self, sha256: str, offset: int, n: int) -> bytes:
        raise OSError(2, "no OTA file server on this network")


@dataclass(frozen=True)
class SoilProbe:
    """One capacitive probe's output in dry air and in water (mV): every probe differs a little."""

    air_mv: float = soil_moisture.DEFAULT_AIR_MV
    water_mv: float = soil_moisture.DEFAULT_WATER_MV

    @classmethod
    def for_node(cls, node_id: str) -> SoilProbe:
        """A probe within the spread of the vendor's sample values, fixed by the node's id."""
        a, w = (stable_key(f"{node_id}/probe/{part}") % 1001 / 1000 - 0.5 for part in ("air", "water"))
        return cls(soil_moisture.DEFAULT_AIR_MV + 120 * a, soil_moisture.DEFAULT_WATER_MV + 80 * w)

    def millivolts(self, moisture_pct: float) -> float:
        """The output at ``moisture_pct``: the two-point calibration line, read backwards."""
        return self.air_mv + moisture_pct / 100 * (self.water_mv - self.air_mv)

    def calibration(self) -> dict[str, float]:
        """What the firmware's config says for this probe: ``{"scale", "offset"}`` from mV to %."""
        scale, offset = soil_moisture.two_point(self.air_mv, self.water_mv)
        return {"scale": scale, "offset": offset}


def ds18b20_rom(node_id: str) -> bytes:
    """A DS18B20 ROM code (family 0x28, 48-bit serial, CRC8) fixed by the node's id."""
    head = b"\x28" + zlib.crc32(node_id.encode()).to_bytes(4, "little") + b"\x00\x00"
    return head + bytes([crc8_dallas(head)])


def battery_volts(signals: SignalModel, t: float) -> float:
    """A 1S Li-ion cell on a small panel: 3.80 V at night, charged up to 4.15 V in the midday sun."""
    return 3.80 + 0.35 * signals.sun(t)


class _SignalSht3x(SimSht3x):
    """An SHT3x that measures the farm's air when asked to (hal_sim encodes the words and CRCs)."""

    def __init__(self, board: FarmBoard) -> None:
        super().__init__(0.0, 0.0)
        self._board = board

    def write(self, data: bytes) -> None:
        self.temperature_c = min(130.0, max(-45.0, self._board.signal("air_temperature")))
        self.humidity_pct = min(100.0, max(0.0, self._board.signal("relative_humidity")))
        super().write(data)


class FarmBoard(WallClockBoard):
    """A reference-build node on a farm: the host's clock, sensors answering from ``signals``."""

    def __init__(self, flash: FileFlash, signals: SignalModel, node_id: str, probe: SoilProbe) -> None:
        super().__init__(flash=flash)
        self.signals, self.probe, self.rom = signals, probe, ds18b20_rom(node_id)
        self._noise = {name: stable_key(f"{node_id}/{name}") for name in SIGNALS}  # each part its own noise
        self.i2c[sht3x.ADDRESS] = _SignalSht3x(self)

    def time_ms(self) -> int:
        return int(time.time() * 1000)

    def sleep_ms(self, ms: int) -> None:
        time.sleep(ms / 1000)

    def signal(self, name: str) -> float:
        """The farm's ``name`` signal now, with this node's sensor noise."""
        return Binding(SIGNALS[name]).value(self.signals, self.time_ms() / 1000, self._noise[name], None, 0.0)

    def adc_read_uv(self, pin: int) -> int:
        if pin == SOIL_PIN:
            return round(self.probe.millivolts(self.signal("soil_moisture")) * 1000)
        if pin == BATTERY_PIN:
            return round(battery_volts(self.signals, self.time_ms() / 1000) / BATTERY_DIVIDER * 1e6)
        return super().adc_read_uv(pin)

    def onewire_scratchpad(self, pin: int, rom: bytes) -> bytes:
        if pin == DS18B20_PIN and bytes(rom) == self.rom:
            return ds18b20_scratchpad(self.signal("soil_temperature"))
        return super().onewire_scratchpad(pin, rom)


# -- what the firmware did ----------------------------------------------------------------------------


@dataclass
class NodeTally:
    """One node's frames and readings, counted at its outbox since this object was made.

    ``enqueued`` is every frame the firmware signed and stored; each one is then ``delivered``
    (its PUBACK came), ``queued`` (still on the node's flash) or ``dropped`` (the outbox was full and
    lost its oldest segment: the firmware counts these too).  Frames left by an earlier run are
    ``carried``: delivered now, produced then.
    """

    wakes: int = 0
    failed_wakes: int = 0  # a step failed (no broker, no PUBACK): frames wait for the next wake
    crashes: int = 0
    frames_enqueued: int = 0
    readings_enqueued: int = 0
    frames_delivered: int = 0  # this run's frames
    readings_delivered: int = 0
    frames_dropped: int = 0
    readings_dropped: int = 0
    frames_carried: int = 0  # an earlier run's frames found in the outbox at power-on
    carried_delivered: int = 0
    carried_dropped: int = 0
    outbox_depth: int = 0  # frames in the outbox after the last wake, an earlier run's included
    last_errors: list[tuple[str, str]] = field(default_factory=list)
    _pending: dict[int, int] = field(default_factory=dict, repr=False)  # seq -> readings, oldest first
    _dropped_total: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def frames_queued(self) -> int:
        return self.frames_enqueued - self.frames_delivered - self.frames_dropped

    @property
    def readings_queued(self) -> int:
        return self.readings_enqueued - self.readings_delivered - self.readings_dropped

    def powered_on(self, pending_frames: int, dropped_total: int) -> None:
        """At each start: the first one finds the frames an earlier run left (later ones, this run's)."""
        with self._lock:
            if self._dropped_total is None:
                self.frames_carried = pending_frames
            self._dropped_total = dropped_total
            self.outbox_depth = pending_frames

    def enqueued(self, frame: bytes) -> None:
        seq, n = _seq_and_readings(frame)
        with self._lock:
            self._pending[seq] = n
            self.frames_enqueued += 1
            self.readings_enqueued += n

    def delivered(self, frame: bytes) -> None:
        seq, _n = _seq_and_readings(frame)
        with self._lock:
            n = self._pending.pop(seq, None)
            if n is None:
                self.carried_delivered += 1
                return
            self.frames_delivered += 1
            self.readings_delivered += n

    def woke(self, errors: list[tuple[str, str]], depth: int, dropped_total: int) -> None:
        """After a wake: its errors, the outbox's depth, and the frames it dropped (always its oldest)."""
        with self._lock:
            self.wakes += 1
            self.outbox_depth = depth
            if errors:
                self.failed_wakes += 1
                self.last_errors = list(errors)
            lost = max(0, dropped_total - (self._dropped_total or 0))
            self._dropped_total = dropped_total
            carried_lost = min(lost, self.frames_carried - self.carried_delivered - self.carried_dropped)
            self.carried_dropped += carried_lost  # an earlier run's frames are older: they go first
            for seq in list(self._pending)[:lost - carried_lost]:
                self.frames_dropped += 1
                self.readings_dropped += self._pending.pop(seq)

    def crashed(self) -> None:
        with self._lock:
            self.crashes += 1


def _seq_and_readings(frame: bytes) -> tuple[int, int]:
    _mac, body = telemetry.unframe(frame)
    obj = telemetry.parse_body(body)
    return int(obj["seq"]), len(obj.get("r", ()))


class _TalliedOutbox:
    """The firmware's outbox, with the tally told of every frame stored and every frame acknowledged."""

    def __init__(self, outbox: Outbox, tally: NodeTally) -> None:
        self._outbox, self._tally = outbox, tally
        self._oldest: tuple[object, bytes] | None = None

    def __len__(self) -> int:
        return len(self._outbox)

    def __getattr__(self, name: str) -> object:  # dropped, torn, capacity: the outbox's own
        return getattr(self._outbox, name)

    def append(self, payload: bytes) -> None:
        self._outbox.append(payload)  # raises OutboxError for a frame too large: then nothing was stored
        self._tally.enqueued(payload)

    def oldest(self) -> tuple[object, bytes] | None:
        self._oldest = self._outbox.oldest()
        return self._oldest

    def ack(self, ref: object) -> None:
        self._outbox.ack(ref)
        if self._oldest is not None and self._oldest[0] == ref:
            self._tally.delivered(self._oldest[1])
            self._oldest = None


# -- the node ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSettings:
    """What provisioning gives a node: its identity and key, its gateway's broker, its interval."""

    node_id: str
    key: bytes
    host: str
    port: int
    epoch: int = 1
    interval_s: int = 60  # the firmware's shortest (firmware/config.py)


class VirtualNode(SimulatorThread):
    """The firmware's wake cycle on a :class:`FarmBoard`, wake after wake, until :meth:`stop`.

    ``flash_path`` holds the node's flash (created erased).  At every start the board powers on:
    RTC memory is empty, flash is what the last run left.  The node's config — its interval and its
    probe's calibration — is written to flash signed with the node's key when it differs, as the
    cloud's config would arrive.  ``seq_floor``: a node re-flashed under a key epoch that already
    carried messages must not reuse their sequence numbers; a new flash starts above it.
    :meth:`stop` lets a wake in progress finish (it is bounded by the firmware's timeouts).
    """

    kind = "virtual node"

    def __init__(self, settings: NodeSettings, signals: SignalModel, flash_path: Path, *,
                 wake_every_s: float | None = None, seq_floor: int = 0) -> None:
        super().__init__()
        if wake_every_s is not None and wake_every_s <= 0:
            raise ValueError(f"wake_every_s must be > 0 or None; got {wake_every_s!r}")
        self.settings, self.signals, self.flash_path = settings, signals, flash_path
        self.wake_every_s, self.seq_floor = wake_every_s, seq_floor
        self.probe = SoilProbe.for_node(settings.node_id)
        self.net = SocketNet(time_server=True)
        self.tally = NodeTally()
        self.board: FarmBoard | None = None

    @property
    def config(self) -> dict:
        """The ``cfg`` of the node's config: its interval and the soil probe's calibration (from its two
        points); the DS18B20, the SHT3x and the divider give physical units and need none."""
        return {"interval_s": self.settings.interval_s, "calibration": {"soil_moisture": self.probe.calibration()}}

    def _build(self, board: FarmBoard) -> cycle.Node:
        """The firmware's node as ``firmware.main`` builds it at boot, its outbox seen by the tally."""
        s = self.settings
        identity = {"id": s.node_id, "key": s.key, "ep": s.epoch, "fw": FW, "host": s.host, "port": s.port}
        spec = {"soil_pin": SOIL_PIN, "ds18b20": {"pin": DS18B20_PIN, "rom": board.rom.hex()}, "sht3x": True,
                "battery_pin": BATTERY_PIN}
        node = cycle.Node(board, self.net, identity, build_sensors(board, spec))
        node.outbox = _TalliedOutbox(node.outbox, self.tally)
        return node

    def _open(self) -> None:
        fresh = not self.flash_path.exists()
        self.flash_path.parent.mkdir(parents=True, exist_ok=True)
        board = FarmBoard(FileFlash(str(self.flash_path), FLASH_SIZE), self.signals, self.settings.node_id,
                          self.probe)
        node = self._build(board)
        if fresh:
            while self.seq_floor and node.seq.next() < self.seq_floor - 1:
                pass  # the counter reserves ahead on flash as it goes: the next number is the floor
        self._provision(node)
        self.tally.powered_on(len(node.outbox), node.outbox.dropped)
        self.board = board

    def _provision(self, node: cycle.Node) -> None:
        """Store the wanted config on flash, signed with the node's key, unless it is there already."""
        wanted = validate_cfg(self.config)  # raises ConfigRefused (a ValueError) naming the field
        if node.config.settings == wanted:
            return
        frame = telemetry.sign(self.settings.key, config_body(self.settings.node_id, node.config.version + 1,
                                                               node.board.time_ms(), self.config))
        if not node.config.offer(frame):
            raise ValueError(f"node {self.settings.node_id}: its firmware refused the config "
                             f"({node.config.last_refusal})")

    def _thread_name(self) -> str:
        return f"node-{self.settings.node_id}"

    def _run(self) -> None:
        board = self.board
        assert board is not None
        node: cycle.Node | None = None
        while not self._stopping.is_set():
            try:
                if node is None:  # a boot: all but RTC memory and flash is built anew
                    node = self._build(board)
                mode, ms = node.run()
            except Exception:  # as firmware.main.run: a crash sleeps without clearing the boot counter
                log.exception("virtual node %s: the firmware crashed; it sleeps %d ms", self.settings.node_id,
                              CRASH_SLEEP_MS)
                self.tally.crashed()
                node, mode, ms = None, "deep", CRASH_SLEEP_MS
            else:
                self.tally.woke(node.errors, len(node.outbox), node.outbox.dropped)
                if node.errors:
                    log.info("virtual node %s: wake failed at %s", self.settings.node_id, node.errors)
            if mode == "deep":
                board.deep_sleep(ms)  # RTC memory and flash are kept; the next wake is a fresh boot
                node = None
            self._stopping.wait(ms / 1000 if self.wake_every_s is None else min(ms / 1000, self.wake_every_s))

    def _close(self) -> None:
        self.board = None  # the power goes off: RTC memory is lost, flash stays in its file
