"""The virtual board against the real ``mpremote``: exec, fs cp/ls/cat, run, errors, soft reset, the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from fieldtrust.processes import spawn, stop
from hardware.micropython_runner import micropython_available
from hardware.virtual_board import VirtualBoard

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


def test_cli_prints_the_port_and_serves_until_terminated(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-m", "fieldtrust.cli.main", "sim", "board", "--fs", str(tmp_path / "flash")],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        assert mpremote(port, "exec", "print(6 * 7)").stdout == "42\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop(proc)


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
