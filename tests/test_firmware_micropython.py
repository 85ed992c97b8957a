"""The firmware on real MicroPython: every portable case, the node's frame checked by the cloud's models, heap.

tests/test_firmware_cases.py runs here under CPython (pytest collects it) and, through this
module, on the MicroPython WebAssembly board with firmware/ and contract/ installed unchanged.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
from pathlib import Path

import pytest
import test_firmware_cases as cases

from contract import models, telemetry
from hardware.micropython_runner import CONTRACT_MODULES, micropython_available, run_micropython

UNAVAILABLE = micropython_available()
needs_micropython = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"MicroPython unavailable: {UNAVAILABLE}")

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = ROOT / "firmware"
FIRMWARE_MODULES = {
    ".".join(path.relative_to(ROOT).with_suffix("").parts): path
    for path in sorted(FIRMWARE_DIR.rglob("*.py"))
    if path.name != "__init__.py"
}
BOARD_MODULES = {**CONTRACT_MODULES, **FIRMWARE_MODULES, "test_firmware_cases": Path(cases.__file__)}
HARDWARE_MODULES = {"machine", "esp32", "network", "onewire", "neopixel", "bluetooth"}
HEAP_BUDGET_BYTES = 32 * 1024


def on_micropython(script: str) -> str:
    run = run_micropython(textwrap.dedent(script), modules=BOARD_MODULES, timeout=20)
    assert run.returncode == 0, f"MicroPython exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def on_cpython(script: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(textwrap.dedent(script), {"__name__": "__main__"})
    return out.getvalue()


def assert_cases_pass_on_micropython(case_module, modules: dict, preamble: str = "") -> None:
    """Run every ``test_*`` function of ``case_module`` on MicroPython; each must print PASS, in order."""
    run = run_micropython(
        preamble
        + textwrap.dedent(
            f"""
            import sys
            import {case_module.__name__} as cases
            failed = 0
            for name in sorted(n for n in dir(cases) if n.startswith("test_")):
                try:
                    getattr(cases, name)()
                    print("PASS", name)
                except Exception as exc:
                    failed += 1
                    print("FAIL", name)
                    sys.print_exception(exc)
            sys.exit(1 if failed else 0)
            """
        ),
        modules=modules,
        timeout=25,
    )
    expected = sorted(name for name in dir(case_module) if name.startswith("test_"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == [word for name in expected for word in ("PASS", name)]


@needs_micropython
def test_every_firmware_case_passes_on_micropython():
    # every module compiles and imports there first, hal.py included
    preamble = f"for name in {sorted(FIRMWARE_MODULES)!r}:\n    __import__(name)\n"
    assert_cases_pass_on_micropython(cases, BOARD_MODULES, preamble)


@needs_micropython
def test_node_frame_verifies_and_parses_in_cpython():
    out = on_micropython(
        """
        import binascii
        import test_firmware_cases as cases
        print(binascii.hexlify(cases.one_cycle(cases.Node())).decode())
        """
    )
    frame = bytes.fromhex(out.strip())
    body = telemetry.verify(frame, cases.KEY)  # the node's exact bytes, checked by CPython's C hmac
    msg = models.parse(body, expect="tel")
    assert isinstance(msg, models.Telemetry)
    assert (msg.dev, msg.seq, msg.sync, msg.q, msg.fw) == ("node-7", 0, 35, 0, "fw/0.1.0")
    values = {r.n: r.value for r in msg.r}
    assert values["soil_moisture"] == pytest.approx(50, abs=1e-5)
    assert values["soil_temperature"] == 18.5 and values["battery"] == 3700
    assert values["air_temperature"] == pytest.approx(21.3, abs=0.003)
    assert len(frame) <= 512 - 13  # fits one outbox record
    print(f"node frame: {len(frame)} bytes (body {len(body)})")


@needs_micropython
def test_heap_allocated_by_one_cycle_is_within_budget():
    out = on_micropython(
        """
        import gc
        import test_firmware_cases as cases
        node = cases.Node()
        cases.one_cycle(node)  # first cycle: imports and one-time tables are not per-cycle cost
        node.board.sleep_ms(3600 * 1000)  # heartbeat due: every metric is sent again
        gc.collect()
        gc.disable()  # nothing is freed while measuring: the difference is everything the cycle allocated
        before = gc.mem_alloc()
        frame = cases.one_cycle(node)
        allocated = gc.mem_alloc() - before
        gc.enable()
        print(allocated, len(frame))
        """
    )
    allocated, frame_len = (int(x) for x in out.split())
    print(f"heap per cycle: {allocated} bytes allocated, frame {frame_len} bytes")
    assert frame_len > 300  # a full frame (all four metrics) was built
    assert 0 < allocated <= HEAP_BUDGET_BYTES


FILE_FLASH_SNIPPET = """
    from firmware.flash import FileFlash, FlashError
    flash = FileFlash(PATH, 2048, block_size=1024)
    print(flash.read(0, 4), flash.read(2044, 4))
    flash.write(10, b"\\x0f\\xf0")
    flash.write(10, b"\\xf3\\x3f")
    print(flash.read(10, 2))
    flash = FileFlash(PATH, 2048, block_size=1024)
    print(flash.read(10, 2))
    flash.erase(0, 1024)
    print(flash.read(10, 2))
    for bad in ((lambda: flash.erase(10, 1024)), (lambda: flash.read(2047, 2)), (lambda: FileFlash(PATH, 1000, 512))):
        try:
            bad()
        except FlashError as exc:
            print("FlashError", str(exc))
    flash = FileFlash(PATH, 4096, block_size=1024)
    print(flash.read(4092, 4))
    """


@needs_micropython
def test_file_flash_behaves_as_nor_flash_on_both(tmp_path: Path):
    on_board = on_micropython(f"PATH = '/tmp/ft_flash.bin'\n{textwrap.dedent(FILE_FLASH_SNIPPET)}")
    here = on_cpython(f"PATH = {str(tmp_path / 'flash.bin')!r}\n{textwrap.dedent(FILE_FLASH_SNIPPET)}")
    assert on_board == here
    lines = here.splitlines()
    erased4 = repr(b"\xff" * 4)
    assert lines[:4] == [f"{erased4} {erased4}", repr(b"\x03\x30"), repr(b"\x03\x30"), repr(b"\xff\xff")]
    assert [line.split()[0] for line in lines[4:7]] == ["FlashError"] * 3
    assert lines[7] == erased4  # a file of another size is recreated erased


def test_only_the_hardware_layer_imports_hardware_modules():
    offenders = []
    for path in FIRMWARE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            hits = {name.split(".")[0] for name in names} & HARDWARE_MODULES
            if hits and path.name != "hal.py":
                offenders.append((path.name, sorted(hits)))
    assert offenders == []
    assert re.search(r"^\s+import machine\b", (FIRMWARE_DIR / "hal.py").read_text(), re.M)
