"""The message contract under real MicroPython: the node signs what CPython verifies, byte for byte.

Scripts run on the official MicroPython WebAssembly port (hardware/micropython_runner.py) with the
project's contract/telemetry.py and contract/topics.py installed unchanged.  Where a check can be
phrased as one snippet, the same snippet runs in both interpreters and the outputs must match.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from test_contract import BODY, BODY_F32, KEY, MAC, MAC_F32

from contract import models, telemetry
from contract.telemetry import ContractError
from fieldtrust.processes import spawn, stop
from hardware.micropython_runner import (
    CONTRACT_MODULES,
    RUNNER_SCRIPT,
    MicroPythonUnavailable,
    micropython_available,
    run_micropython,
)

UNAVAILABLE = micropython_available()
needs_micropython = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"MicroPython unavailable: {UNAVAILABLE}")

FOX = b"The quick brown fox jumps over the lazy dog"


def on_micropython(script: str) -> str:
    """Run ``script`` on the virtual board; fail the test with its stderr unless it exits 0."""
    run = run_micropython(textwrap.dedent(script), timeout=20)
    assert run.returncode == 0, f"MicroPython exited {run.returncode}:\n{run.stderr}"
    return run.stdout


def on_cpython(script: str) -> str:
    """Run the same snippet here, capturing what it prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(textwrap.dedent(script), {"__name__": "__main__"})
    return out.getvalue()


@needs_micropython
def test_contract_imports_unchanged_and_takes_the_portable_hmac_path():
    out = on_micropython(
        """
        import sys, hashlib, binascii
        from contract import telemetry, topics
        for mod in (telemetry, topics):
            with open(mod.__file__, "rb") as f:
                print(binascii.hexlify(hashlib.sha256(f.read()).digest()).decode())
        print(sys.implementation.name, telemetry._hmac is None)
        """
    ).split()
    expected = [hashlib.sha256(CONTRACT_MODULES[name].read_bytes()).hexdigest() for name in CONTRACT_MODULES]
    assert out[:2] == expected  # the very files CPython imports
    # This build freezes micropython-lib's hmac (no compare_digest): the contract must not use it.
    assert out[2:] == ["micropython", "True"]


@needs_micropython
def test_sign_reproduces_the_test_vectors():
    snippet = f"""
        from contract import telemetry
        KEY, BODY, BODY_F32, FOX = {KEY!r}, {BODY!r}, {BODY_F32!r}, {FOX!r}
        print(telemetry.sign(KEY, BODY).decode())
        print(telemetry.sign(KEY, BODY_F32)[8:72].decode())
        print(telemetry._hex(telemetry.hmac_sha256(b"key", FOX)))
        print(telemetry.digest(BODY))
        for n in (0, 1, 32, 64, 65, 200):
            print(n, telemetry._hex(telemetry.hmac_sha256(bytes(range(256))[:n], BODY)))
        """
    out = on_micropython(snippet)
    lines = out.splitlines()
    assert lines[0].encode() == b'{"mac":"' + MAC + b'","body":' + BODY + b"}"
    assert lines[1].encode() == MAC_F32
    assert lines[2] == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert out == on_cpython(snippet)  # portable HMAC on MicroPython == C hmac on CPython, every key length


@needs_micropython
def test_verify_under_micropython_accepts_good_and_names_tampering():
    good = telemetry.sign(KEY, BODY)
    cases = [
        good.replace(b"23.5", b"99.5"),
        good[:-1],
        good[:-2],
        good.replace(b'"mac":"6b', b'"mac":"6B'),
        telemetry.sign(b"another key of the same size!!!!", BODY),
        b"x" * (telemetry.MAX_NODE_FRAME_BYTES + 1),
        b"",
    ]
    snippet = f"""
        from contract import telemetry
        print(telemetry.verify({good!r}, {KEY!r}) == {BODY!r})
        for frame in {cases!r}:
            try:
                telemetry.verify(frame, {KEY!r})
                print("accepted")
            except telemetry.ContractError as exc:
                print(exc.reason)
        """
    out = on_micropython(snippet)
    assert out.split() == ["True", "bad_signature", "bad_signature", "bad_frame", "bad_frame", "bad_signature",
                           "oversized", "bad_frame"]
    assert out == on_cpython(snippet)


@needs_micropython
def test_body_helpers_and_the_duplicate_rule_agree():
    snippet = f"""
        from contract import telemetry
        frame = telemetry.sign({KEY!r}, {BODY!r})
        obj, body = telemetry.peek(frame)
        print(body == {BODY!r}, telemetry.message_key(obj))
        print(telemetry.verify(bytearray(frame), {KEY!r}) == body, telemetry.verify(memoryview(frame), {KEY!r}) == body)
        d, other = telemetry.digest(body), telemetry.digest({BODY_F32!r})
        print(telemetry.classify(None, d), telemetry.classify(d, d), telemetry.classify(d, other))
        print(telemetry.quality_names(telemetry.Q_STALE | telemetry.Q_COMM_ERROR))
        for raw in (b"{{", b"[]", b'{{"v":2,"k":"tel"}}', b'{{"v":1,"k":"nope"}}', b"\\xff\\xfe"):
            try:
                telemetry.parse_body(raw)
                print("accepted")
            except telemetry.ContractError as exc:
                print(exc.reason)
        try:
            telemetry.unframe(frame.decode())
        except telemetry.ContractError as exc:
            print(exc.reason, exc.detail)
        """
    out = on_micropython(snippet)
    assert out.splitlines()[-6:] == ["bad_json", "bad_header", "bad_version", "bad_header", "bad_json",
                                     "bad_frame frame must be bytes"]
    assert out == on_cpython(snippet)


@needs_micropython
def test_node_signed_telemetry_verifies_and_parses_in_cpython():
    out = on_micropython(
        f"""
        import binascii
        from contract import telemetry
        recs = [
            telemetry.record("soil_moisture", "%", 23.5),
            telemetry.record("soil_ec", "mS/cm", 0.1, t_ms=40),
            telemetry.record("third", "", 1 / 3, t_ms=80),
            telemetry.record("pump_on", "", True),
            telemetry.record("site", "", "Fazenda São João"),
            telemetry.record("soil_ph", "pH", None, t_ms=120),
        ]
        body = telemetry.encode_body(telemetry.telemetry("node-0007", 1, 42, 1764480000000, recs, "fw/0.1.0", 35))
        frame = telemetry.sign({KEY!r}, body)
        print(binascii.hexlify(frame).decode())
        print(telemetry.digest(body))
        """
    )
    frame_hex, node_digest = out.split()
    frame = bytes.fromhex(frame_hex)
    body = telemetry.verify(frame, KEY)  # over the node's exact bytes
    assert telemetry.digest(body) == node_digest
    msg = models.parse(body, expect="tel")
    assert isinstance(msg, models.Telemetry)
    assert (msg.dev, msg.ep, msg.seq, msg.bt, msg.sync, msg.q) == ("node-0007", 1, 42, 1764480000000, 35, 0)
    values = [r.value for r in msg.r]
    assert values[:2] == [23.5, 0.1]
    assert values[2] == pytest.approx(1 / 3, rel=1e-6)  # a float32 board prints fewer digits
    assert values[3:] == [True, "Fazenda São João", None]
    assert msg.r[5].q & telemetry.Q_COMM_ERROR

    # CPython would encode the same body to other bytes (it escapes non-ASCII): that is why the MAC
    # covers the bytes as sent and the verifier never re-serialises.
    reencoded = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert reencoded != body
    with pytest.raises(ContractError) as info:
        telemetry.verify(frame[: telemetry.BODY_OFFSET] + reencoded + b"}", KEY)
    assert info.value.reason == "bad_signature"


@needs_micropython
def test_topics_give_the_same_strings():
    snippet = """
        from contract import topics
        out = [
            topics.gateway("demo", "gw-1", "up"),
            topics.node("n-7", "up"),
            topics.parse_gateway_topic("ft/v1/demo/gw/gw-1/receipt"),
            topics.parse_node_topic("ft/v1/node/n-7/up"),
            topics.gateway_uplink_filter(),
            topics.gateway_uplink_filter(shared=False),
            topics.NODE_UPLINK_FILTER,
            topics.NODE_STATE_FILTER,
        ]
        for bad in ("", "a/b", "+", "#", "x" * 65, None):
            out.append(topics.valid_id(bad))
            try:
                topics.node(bad, "up")
            except ValueError as exc:
                out.append(str(exc))
        for topic in ("ft/v1/node/+/up", "ft/v1/demo/gw/gw-1"):
            try:
                topics.parse_node_topic(topic)
            except ValueError as exc:
                out.append(str(exc))
        print(out)
        """
    out = on_micropython(snippet)
    assert "ft/v1/node/n-7/up" in out and "$share/ingest/ft/v1/+/gw/+/up" in out
    assert out == on_cpython(snippet)


@needs_micropython
def test_runner_reports_exit_status_output_and_tracebacks(tmp_path: Path):
    module = tmp_path / "probe.py"
    module.write_text("ANSWER = 42\n")
    run = run_micropython(
        "from board.probe import ANSWER\nimport sys\nprint(ANSWER)\nprint('no newline', end='')\nsys.exit(3)\n",
        modules={"board.probe": module},
    )
    assert (run.stdout, run.returncode) == ("42\nno newline", 3)
    run = run_micropython("print('before')\nraise ValueError('boom')\n", modules={})
    assert run.returncode == 1 and run.stdout == "before\n"
    assert "ValueError: boom" in run.stderr


def _runner_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if str(RUNNER_SCRIPT) in " ".join(p.cmdline())]


@needs_micropython
def test_timeout_ends_a_stuck_board():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still running"):
        run_micropython("print('stuck')\nwhile True:\n    pass\n", modules={}, timeout=1.0)
    assert time.monotonic() - started < 5
    assert _runner_children() == []


@needs_micropython
def test_runner_exits_when_its_stdin_closes_even_in_a_busy_loop():
    proc = spawn(
        ["node", str(RUNNER_SCRIPT), "-c", "print('spinning')\nwhile True:\n    pass\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline() == b"spinning\n"
        proc.stdin.close()
        assert proc.wait(timeout=3) == 129
    finally:
        stop(proc)


def test_missing_node_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "node" in (micropython_available() or "")
    with pytest.raises(MicroPythonUnavailable, match="Node.js"):
        run_micropython("print(1)")
