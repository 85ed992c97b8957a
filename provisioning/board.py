"""A board on a USB serial port, driven through the real ``mpremote`` command, with errors a technician acts on.

Every operation on the board runs ``python -m mpremote connect PORT …`` as a child process (through
:func:`fieldtrust.processes.spawn`), so what the tool does can be repeated by hand with the same
commands, and a hung board never hangs the tool (each call has a deadline).  Before the first
command the port is checked with pyserial: missing, held by another program (pyserial's exclusive
lock, the same one mpremote takes), not ours to open, or silent / not a MicroPython REPL (a short
raw-REPL handshake, a few seconds instead of mpremote's own ten).

Code run on the board prints its answer as one ``FT:<json>`` line, so boot messages and firmware
prints around it never confuse the parser.  Secrets never go on a command line (``ps`` shows those):
a file with a key is written to a private temporary file, copied with ``fs cp``, then overwritten and
removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import serial

from fieldtrust.processes import spawn, stop
from provisioning.errors import (
    BoardCommandFailed,
    BoardDisconnected,
    NotMicroPython,
    PortBusy,
    PortMissing,
    PortPermission,
    SensorNotFound,
    WrongFirmware,
)

#: the oldest MicroPython the firmware runs on (Unix-epoch ``time``; .mpy version 6)
MIN_MICROPYTHON = (1, 22)
BAUD = 115200
PROBE_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 60.0
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
ANSWER_PREFIX = "FT:"
#: where the firmware's files go, relative to the board's working directory (its root on an ESP32)
SETTINGS_PATH = "ft_node.json"
MANIFEST_PATH = "ft_manifest.json"

_IDENTIFY = """
import sys, json
try:
    import machine, binascii
    uid = binascii.hexlify(machine.unique_id()).decode()
except (ImportError, AttributeError):
    uid = None
fw = None
try:
    with open(@ARG@) as f:
        fw = json.load(f).get('version')
except (OSError, ValueError):
    pass
impl = sys.implementation
print('FT:' + json.dumps({'uid': uid, 'impl': impl.name, 'version': list(impl.version[:3]),
                          'mpy': getattr(impl, '_mpy', 0), 'machine': getattr(impl, '_machine', ''), 'fw': fw}))
""".replace("@ARG@", repr(MANIFEST_PATH))

_HASHES = """
import hashlib, binascii, json
found = {}
for p in @ARG@:
    try:
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        found[p] = binascii.hexlify(h.digest()).decode()
    except OSError:
        found[p] = None
print('FT:' + json.dumps(found))
"""

_MKDIRS = """
import os
for d in @ARG@:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""

_READ_FILE = """
import binascii, json
try:
    d = binascii.hexlify(open(@ARG@, 'rb').read()).decode()
except OSError:
    d = None
print('FT:' + json.dumps(d))
"""

# Runs before the firmware is on the board (the settings need the ROM), so it switches the rail itself:
# ``(bus pin, rail)``, rail as the settings' ``power`` ({pin, active, settle_ms}) or None (always powered).
_DS18B20_SCAN = """
import json, binascii, machine, onewire, time
bus, power = @ARG@
rail = None
if power:
    rail = machine.Pin(power['pin'], machine.Pin.OUT, value=power['active'])
    time.sleep_ms(power['settle_ms'])
try:
    roms = [binascii.hexlify(r).decode() for r in onewire.OneWire(machine.Pin(bus)).scan() if r[0] == 0x28]
finally:
    if rail is not None:
        rail.value(1 - power['active'])
print('FT:' + json.dumps(roms))
"""


def _code(template: str, value: object) -> str:
    """Board code with ``@ARG@`` replaced by ``value``'s Python literal."""
    return template.replace("@ARG@", repr(value))


@dataclass(frozen=True)
class BoardInfo:
    """What a board says about itself."""

    port: str
    uid: str
    """``machine.unique_id()`` as hex (the ESP32's factory MAC: 12 hex digits)"""
    micropython: tuple[int, int, int]
    mpy: int
    """``sys.implementation._mpy``: the .mpy version in the low byte"""
    machine: str
    firmware: str | None
    """the FieldTrust firmware version installed (its manifest on the board), None when none is"""

    @property
    def mpy_version(self) -> int:
        return self.mpy & 0xFF


def check_port(port: str) -> None:
    """Raise PortMissing / PortBusy / PortPermission when ``port`` cannot be opened for us alone."""
    if not os.path.exists(port):
        raise PortMissing(f"{port}: no such serial port")
    try:
        line = serial.Serial(port, BAUD, timeout=0, exclusive=True)
    except serial.SerialException as exc:
        raise _port_error(port, exc) from None
    line.close()


def _port_error(port: str, exc: serial.SerialException) -> Exception:
    code = exc.errno
    text = str(exc)
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text:
        return PortBusy(f"{port} is in use by another program")
    if code in (errno.EACCES, errno.EPERM):
        return PortPermission(f"{port}: permission denied")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or not os.path.exists(port):
        return PortMissing(f"{port}: the port went away ({text})")
    return BoardDisconnected(f"{port}: cannot open the port ({text})")


def probe_repl(port: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Ask for MicroPython's raw REPL; NotMicroPython (saying what, if anything, answered) when it never comes."""
    try:
        line = serial.Serial(port, BAUD, timeout=0.05, exclusive=True)
    except serial.SerialException as exc:
        raise _port_error(port, exc) from None
    seen = b""
    try:
        line.write(b"\r\x03\x03")  # stop a running program (the firmware)
        time.sleep(0.1)
        line.reset_input_buffer()
        line.write(b"\r\x01")  # enter the raw REPL
        deadline = time.monotonic() + timeout
        while RAW_REPL_BANNER not in seen and time.monotonic() < deadline:
            seen += line.read(256)
        if RAW_REPL_BANNER in seen:
            line.write(b"\x02")  # back to the friendly REPL, as we found it
    except (serial.SerialException, OSError) as exc:
        raise BoardDisconnected(f"{port}: the board went away while probing ({exc})") from None
    finally:
        line.close()
    if RAW_REPL_BANNER not in seen:
        if not seen.strip():
            raise NotMicroPython(f"nothing answered on {port} within {timeout:g} s")
        raise NotMicroPython(f"{port} answered, but not as a MicroPython REPL: {seen[:60]!r}")


def check_version(info: BoardInfo, mpy_version: int | None = None) -> None:
    """WrongFirmware when the board's MicroPython is too old, or loads another .mpy version than the bundle's."""
    if tuple(info.micropython[:2]) < MIN_MICROPYTHON:
        have = ".".join(map(str, info.micropython))
        raise WrongFirmware(f"MicroPython {have} on the board; the firmware needs {MIN_MICROPYTHON[0]}."
                            f"{MIN_MICROPYTHON[1]} or later")
    if mpy_version is not None and info.mpy_version != mpy_version:
        raise WrongFirmware(f"the board loads .mpy version {info.mpy_version}, the firmware bundle is compiled for "
                            f"version {mpy_version} (MicroPython {'.'.join(map(str, info.micropython))} on the board)")


class Board:
    """One board on ``port``; each method is one ``mpremote`` run."""

    def __init__(self, port: str, timeout: float = COMMAND_TIMEOUT_S, private_dir: Path | None = None) -> None:
        self.port = port
        self.timeout = timeout
        self.private_dir = private_dir

    # -- checks and identity ---------------------------------------------------------------------

    def identify(self) -> BoardInfo:
        """Check the port and the REPL, then read the board's id and versions."""
        check_port(self.port)
        probe_repl(self.port)
        answer = self.eval_json(_IDENTIFY)
        if answer.get("impl") != "micropython":
            raise NotMicroPython(f"{self.port} runs {answer.get('impl')!r}, not MicroPython")
        if not answer.get("uid"):
            raise WrongFirmware(f"the board on {self.port} has no machine.unique_id(): not an ESP32 MicroPython port")
        version = tuple(int(v) for v in answer["version"])
        return BoardInfo(self.port, str(answer["uid"]).lower(), (version[0], version[1], version[2]),
                         int(answer["mpy"]), str(answer["machine"]), answer.get("fw"))

    # -- files ------------------------------------------------------------------------------------

    def hashes(self, paths: Iterable[str]) -> dict[str, str | None]:
        """SHA-256 (hex) of each file on the board, None where it is missing."""
        return self.eval_json(_code(_HASHES, list(paths)))

    def copy(self, files: list[tuple[Path, str]], on_file: Callable[[str], None] | None = None) -> None:
        """Copy ``(local, board path)`` pairs in one mpremote run; ``on_file(board path)`` after each."""
        if not files:
            return
        dirs = sorted({"/".join(p.split("/")[:i]) for _, p in files for i in range(1, p.count("/") + 1)},
                      key=lambda d: d.count("/"))
        if dirs:
            self.exec(_code(_MKDIRS, dirs))
        args: list[str] = []
        for local, remote in files:
            args += (["+"] if args else []) + ["fs", "cp", str(local), ":" + remote]
        started: list[str] = []

        def line(text: str) -> None:
            if text.startswith("cp ") and on_file is not None:
                if started:
                    on_file(started[-1])
                started.append(text.rsplit(" :", 1)[-1].strip())

        self.run(*args, on_line=line)
        if started and on_file is not None:
            on_file(started[-1])

    def write_file(self, remote: str, data: bytes) -> None:
        """Write ``data`` to ``remote`` through a private temporary file, overwritten and removed afterwards."""
        with _private_file(data, self.private_dir) as path:
            self.run("fs", "cp", str(path), ":" + remote)

    def read_file(self, remote: str) -> bytes | None:
        """A file's bytes, None when the board has no such file."""
        found = self.eval_json(_code(_READ_FILE, remote))
        return None if found is None else bytes.fromhex(found)

    # -- the board's state ------------------------------------------------------------------------

    def reset(self) -> None:
        """Hard reset: the board boots and runs main.py (the firmware)."""
        self.run("reset")

    def ds18b20_roms(self, pin: int, power: dict[str, int] | None = None) -> list[str]:
        """ROM codes of the DS18B20s on the 1-Wire bus on GPIO ``pin``, with the sensor rail ``power`` (the
        settings' ``power``: pin, active level, settle time) switched on for the scan and off after it."""
        try:
            return self.eval_json(_code(_DS18B20_SCAN, (pin, power)))
        except BoardCommandFailed as exc:
            raise SensorNotFound(f"no 1-Wire bus on GPIO{pin}: {exc}") from None

    # -- running code -----------------------------------------------------------------------------

    def exec(self, code: str) -> str:
        """Run ``code`` on the board; its printed output."""
        return self.run("exec", code)

    def eval_json(self, code: str) -> Any:
        """Run ``code``, which prints one ``FT:<json>`` line; that value."""
        out = self.exec(code)
        for line in out.splitlines():
            if line.startswith(ANSWER_PREFIX):
                return json.loads(line[len(ANSWER_PREFIX):])
        raise BoardCommandFailed(f"the board on {self.port} gave no answer: {out.strip()[-200:]!r}")

    def run(self, *args: str, on_line: Callable[[str], None] | None = None, timeout: float | None = None) -> str:
        """``mpremote connect PORT *args``: its output, or the typed error its failure means."""
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        limit = timeout or self.timeout
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = spawn(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
            timed_out = threading.Event()

            def expire() -> None:
                timed_out.set()
                stop(proc, timeout=2)

            timer = threading.Timer(limit, expire)
            timer.start()
            lines = []
            try:
                assert proc.stdout is not None
                for text in proc.stdout:
                    lines.append(text)
                    if on_line is not None:
                        on_line(text.rstrip("\r\n"))
                proc.wait()
            finally:
                timer.cancel()
                stop(proc)
            err.seek(0)
            stderr = err.read()
        out = "".join(lines)
        if timed_out.is_set():
            self._after_failure(stderr)
            raise BoardDisconnected(f"the board on {self.port} stopped answering ({' '.join(args[:2])}, {limit:g} s)")
        if proc.returncode != 0:
            self._after_failure(stderr)
            raise self._failure(out, stderr)
        return out

    def _after_failure(self, stderr: str) -> None:
        """Raise the port's own error when the port is the reason (gone, taken, forbidden)."""
        if not os.path.exists(self.port):
            raise BoardDisconnected(f"{self.port} disappeared: the board was unplugged")
        if "failed to access" in stderr:
            check_port(self.port)

    def _failure(self, out: str, stderr: str) -> Exception:
        text = stderr.strip() or out.strip()
        last = text.splitlines()[-1] if text else "no message"
        if "could not enter raw repl" in text.lower():
            return NotMicroPython(f"{self.port}: the board does not enter MicroPython's raw REPL ({last})")
        if "Traceback" in out:
            return BoardCommandFailed(f"the board on {self.port} raised {out.strip().splitlines()[-1]}")
        if any(s in text for s in ("TransportError", "failed to access", "Input/output error", "disconnected",
                                   "SerialException", "timeout")):
            return BoardDisconnected(f"lost the board on {self.port}: {last}")
        return BoardCommandFailed(f"mpremote failed on {self.port}: {last}")


#: USB ids (vendor, product) of the serial bridges ESP32 boards use; product None: any of the vendor's
ESP32_USB_IDS: dict[tuple[int, int | None], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, None): "Espressif native USB (ESP32-S2/S3/C3)",
}


class PortInfo(Protocol):
    """What :func:`serial.tools.list_ports.comports` says of a port (its ``ListPortInfo``)."""

    device: str
    vid: int | None
    pid: int | None


def esp32_bridge(port: PortInfo) -> str | None:
    """The name of the ESP32 USB bridge on ``port``, None when it is none of :data:`ESP32_USB_IDS`."""
    if port.vid is None:
        return None
    return ESP32_USB_IDS.get((port.vid, port.pid)) or ESP32_USB_IDS.get((port.vid, None))


def esp32_ports(ports: Iterable[PortInfo]) -> list[str]:
    """The devices of ``ports`` that are ESP32 boards' USB bridges, in a stable order (a mouse, a modem or a
    USB-RS485 adapter on the same laptop is left alone)."""
    return sorted(p.device for p in ports if esp32_bridge(p) is not None)


def usb_serial_ports() -> list[str]:
    """Every ESP32 board plugged in by USB (:func:`esp32_ports` of the laptop's serial ports)."""
    from serial.tools import list_ports

    return esp32_ports(list_ports.comports())


def tail(port: str, seconds: float | None, emit: Callable[[str], None]) -> None:
    """Print the board's own output (what the firmware prints) line by line, for ``seconds`` or until Ctrl-C."""
    check_port(port)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        with serial.Serial(port, BAUD, timeout=0.2, exclusive=True) as line:
            pending = b""
            while deadline is None or time.monotonic() < deadline:
                pending += line.read(512)
                *done, pending = pending.split(b"\n")
                for raw in done:
                    emit(raw.rstrip(b"\r").decode(errors="replace"))
    except serial.SerialException as exc:
        raise BoardDisconnected(f"lost {port}: {exc}") from None


@contextlib.contextmanager
def _private_file(data: bytes, directory: Path | None) -> Iterator[Path]:
    """A 0600 file holding ``data`` in a 0700 folder; overwritten with zeros and removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="ft-board-", dir=directory))
    os.chmod(folder, 0o700)
    path = folder / "payload"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError), open(path, "r+b") as f:
            f.write(b"\0" * len(data))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
