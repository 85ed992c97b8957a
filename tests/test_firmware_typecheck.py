"""The firmware type-checked against MicroPython 1.27 on an ESP32, not CPython.

mypy runs over firmware/ and the contract modules the node imports with the ``micropython-esp32-stubs``
(and the ``micropython-stdlib-stubs`` they depend on) as its typeshed: ``time.ticks_ms`` and
``machine.Pin`` exist there, ``time.monotonic`` and ``hmac`` do not.  The stubs install their
``.pyi`` files loose in site-packages, so the session builds a typeshed directory from the packages'
file lists (``stdlib/`` as shipped, the ESP32 modules added to it and to its ``VERSIONS``); errors in
the stubs themselves are then the stubs' business, as for any typeshed.

The firmware has no annotations (it must stay MicroPython source), so mypy checks the bodies of
untyped functions (``check_untyped_defs``); where inference needs help, a ``# type:`` comment.
``contract/telemetry.py`` imports ``hmac`` only where it exists (CPython): that import may be missing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from fieldtrust.processes import spawn, stop

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["firmware", "contract/telemetry.py", "contract/topics.py"]
BOARD_STUBS = "micropython-esp32-stubs"
STDLIB_STUBS = "micropython-stdlib-stubs"
MYPY_CONFIG = """
[mypy]
custom_typeshed_dir = {typeshed}
cache_dir = {cache}
no_site_packages = True
check_untyped_defs = True
show_error_codes = True

[mypy-hmac]
ignore_missing_imports = True
"""


def _top_level(dist: str) -> tuple[Path, set[str]]:
    """The directory a stubs distribution installed into, and the top-level names it put there."""
    files = metadata.files(dist) or []
    names = {f.parts[0] for f in files if not f.parts[0].endswith((".dist-info", "__pycache__"))}
    return Path(str(metadata.distribution(dist).locate_file(""))), names


@pytest.fixture(scope="session")
def mypy_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A typeshed of MicroPython for the ESP32, and a mypy config that uses it."""
    try:
        board_dir, board_names = _top_level(BOARD_STUBS)
        stdlib_dir, _ = _top_level(STDLIB_STUBS)
    except metadata.PackageNotFoundError as exc:
        pytest.fail(f"{exc} is not installed: pip install -e '.[dev]' (pyproject pins the stubs)")
    base = tmp_path_factory.mktemp("mp-typeshed")
    stdlib = base / "typeshed" / "stdlib"
    stdlib.mkdir(parents=True)
    (base / "typeshed" / "stubs").symlink_to(stdlib_dir / "stubs")  # mypy_extensions, which mypy requires
    for entry in (stdlib_dir / "stdlib").iterdir():
        if entry.name != "VERSIONS":
            (stdlib / entry.name).symlink_to(entry)
    versions = (stdlib_dir / "stdlib" / "VERSIONS").read_text()
    listed = {line.split(":")[0].strip() for line in versions.splitlines() if ":" in line and line[0] != "#"}
    added = []  # the board's modules (machine, esp32, time with ticks_ms, ...) and the stubs' shared helpers
    extras = [board_dir / n for n in sorted(board_names) if n.endswith(".pyi")] + [stdlib_dir / "_mpy_shed"]
    for source in extras:
        if not (stdlib / source.name).exists():
            (stdlib / source.name).symlink_to(source)
        module = source.name.removesuffix(".pyi")
        if module not in listed:
            added.append(f"{module}: 3.0-")
    (stdlib / "VERSIONS").write_text(versions + "\n# MicroPython for the ESP32\n" + "\n".join(added) + "\n")
    assert "machine: 3.0-" in added and (stdlib / "machine.pyi").exists()
    config = base / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(typeshed=base / "typeshed", cache=base / "cache"))
    return config


def run_mypy(config: Path, targets: list[str]) -> tuple[int, str]:
    proc = spawn(
        [sys.executable, "-m", "mypy", "--config-file", str(config), *targets],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=100)
    finally:
        stop(proc)
    return proc.returncode, out


def test_firmware_type_checks_against_the_esp32_stubs(mypy_config: Path):
    code, out = run_mypy(mypy_config, CHECKED)
    assert code == 0, out
    assert "Success: no issues found" in out, out


def test_the_checker_knows_micropython_not_cpython(mypy_config: Path, tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent(
            """
            import machine
            import sys
            import time

            def board_calls():
                start = time.ticks_ms()  # MicroPython only
                elapsed = time.ticks_diff(time.ticks_ms(), start)
                sys.print_exception(ValueError(elapsed))
                machine.Pin(4, machine.Pin.OUT).value(1)
                machine.RTC().memory(b"x")

            def mistakes():
                time.monotonic()  # CPython only
                machine.Pin(4).toggle_fast()
                import hmac
            """
        )
    )
    code, out = run_mypy(mypy_config, [str(sample)])
    errors = [line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line]
    lines = sorted(int(line.split(":")[1]) for line in out.splitlines() if ": error: " in line)
    assert code == 1 and lines == [14, 15], out  # hmac is allowed to be missing (see the module docstring)
    assert 'Module has no attribute "monotonic"' in errors[0] and "toggle_fast" in errors[1], out
