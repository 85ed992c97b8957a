"""The gateway's agent updater on real directories, with a real subprocess "agent" that shows its heartbeat or not:
install beside the running release, atomic switch, switch back when the new release stays silent, a trial
interrupted by a crash judged at the next run; the hand-over from the agent (verified, spooled, not handed over
again once it failed).  The whole path through the broker and the real agent is tests/test_agent_update.py."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from contract.telemetry import sign
from edge_agent.updater import (
    HeartbeatFile,
    ProcessRestart,
    ReleaseLayout,
    UpdateError,
    Updater,
    UpdateReceiver,
    UpdateSpool,
    run_pending,
)
from fieldtrust import processes
from tests.support.releases import ReleaseServer, archive
from tests.support.waiting import wait_until

GOOD_AGENT = """
import pathlib, sys, time
beat = pathlib.Path(sys.argv[1])
while True:  # a heartbeat every 50 ms, like the agent's after each one it sends
    beat.write_text("{version}")
    time.sleep(0.05)
"""
BAD_AGENT = """
import sys
sys.exit(3)  # dies at start: no heartbeat ever
"""


def agent(version: str, code: str) -> dict[str, str]:
    return {"agent.py": textwrap.dedent(code).format(version=version)}


@pytest.fixture
def releases():
    server = ReleaseServer()
    yield server
    server.close()


@pytest.fixture
def gateway(tmp_path: Path):
    """A gateway's install root, and an updater that runs the agent as its child process."""
    layout = ReleaseLayout(tmp_path / "opt")
    beat = tmp_path / "heartbeat"
    runner = ProcessRestart(layout, lambda current: [sys.executable, str(current / "agent.py"), str(beat)],
                            spawn=processes.spawn)
    updater = Updater(layout, runner, HeartbeatFile(beat), health_timeout_s=5.0)
    yield layout, updater, runner, beat
    runner.stop()


def test_install_switch_and_switch_back(gateway, releases: ReleaseServer) -> None:
    layout, updater, runner, beat = gateway
    first = updater.apply(releases.publish("1.0.0", agent("1.0.0", GOOD_AGENT)))
    assert (first.result, layout.current_version()) == ("updated", "1.0.0")
    assert runner.proc is not None and runner.proc.poll() is None

    second = updater.apply(releases.publish("1.1.0", agent("1.1.0", GOOD_AGENT)))
    assert (second.result, second.detail) == ("updated", "was 1.0.0")
    assert (layout.current_version(), layout.version_of(layout.previous)) == ("1.1.0", "1.0.0")
    assert layout.installed() == ["1.0.0", "1.1.0"]  # installed beside each other
    assert wait_until(lambda: beat.read_text() == "1.1.0")
    assert os.path.islink(layout.current) and (layout.current / "VERSION").read_text() == "1.1.0"

    broken = updater.apply(releases.publish("1.2.0", agent("1.2.0", BAD_AGENT)))
    assert broken.result == "rolled_back" and "back on 1.1.0" in broken.detail
    assert layout.current_version() == "1.1.0" and layout.is_failed("1.2.0")
    switched_back = time.time()
    assert wait_until(lambda: beat.stat().st_mtime > switched_back)  # the old release runs again, healthy
    assert beat.read_text() == "1.1.0"

    again = updater.apply(releases.publish("1.2.0", agent("1.2.0", BAD_AGENT)))  # the retained update comes again
    assert (again.result, layout.current_version()) == ("skipped", "1.1.0")
    assert updater.apply(releases.publish("1.1.0", agent("1.1.0", GOOD_AGENT))).result == "skipped"  # running already


def test_refused_before_anything_switches(gateway, releases: ReleaseServer) -> None:
    layout, updater, _runner, _beat = gateway
    assert updater.apply(releases.publish("1.0.0", agent("1.0.0", GOOD_AGENT))).result == "updated"
    wrong = releases.publish("2.0.0", agent("2.0.0", GOOD_AGENT)).model_copy(update={"sha256": "0" * 64})
    outcome = updater.apply(wrong)
    assert outcome.result == "refused" and "does not match" in outcome.detail
    missing = releases.publish("2.0.1", agent("2.0.1", GOOD_AGENT)).model_copy(update={"url": wrong.url + ".gone"})
    assert "404" in updater.apply(missing).detail
    assert layout.current_version() == "1.0.0" and layout.installed() == ["1.0.0"]

    evil = archive({"../escape.py": "x", "agent.py": "pass"})
    with pytest.raises(UpdateError, match="cannot unpack"):
        layout.install("3.0.0", evil, hashlib.sha256(evil).hexdigest())
    assert not (layout.releases / "escape.py").exists() and layout.installed() == ["1.0.0"]
    with pytest.raises(UpdateError, match="not a release version"):
        layout.install("../x", evil, hashlib.sha256(evil).hexdigest())


def test_prune_keeps_current_and_previous(tmp_path: Path) -> None:
    layout = ReleaseLayout(tmp_path)
    for n in range(5):
        data = archive({"VERSION": str(n)})
        layout.install(f"0.{n}", data, hashlib.sha256(data).hexdigest())
        os.utime(layout.release_dir(f"0.{n}"), (n, n))  # installed in this order
    layout.switch("0.0")
    layout.switch("0.1")
    assert sorted(layout.prune(keep=2)) == ["0.2"]
    assert layout.installed() == ["0.0", "0.1", "0.3", "0.4"]


def test_a_trial_interrupted_by_a_crash_is_judged_at_the_next_run(gateway, releases: ReleaseServer) -> None:
    layout, updater, runner, beat = gateway
    assert updater.apply(releases.publish("1.0.0", agent("1.0.0", GOOD_AGENT))).result == "updated"
    bad = releases.publish("1.1.0", agent("1.1.0", BAD_AGENT))
    # what apply() leaves when the updater dies right after the switch (a power cut): the trial, unjudged
    layout.install("1.1.0", releases.files["/edge-1.1.0.tar.gz"], bad.sha256)
    layout.switching.write_text(json.dumps({"version": "1.1.0", "old": "1.0.0", "at": time.time()}))
    layout.switch("1.1.0")
    outcome = updater.recover()
    assert outcome is not None and outcome.result == "rolled_back" and "back on 1.0.0" in outcome.detail
    assert layout.current_version() == "1.0.0" and layout.is_failed("1.1.0") and not layout.switching.exists()
    assert updater.recover() is None  # nothing on trial any more
    assert wait_until(lambda: beat.read_text() == "1.0.0")


def test_the_agent_hands_over_verified_updates_once(gateway, releases: ReleaseServer, tmp_path: Path) -> None:
    layout, updater, _runner, _beat = gateway
    key = os.urandom(32)
    spool = UpdateSpool(tmp_path / "data" / "update")
    receiver = UpdateReceiver("gw-1", key, spool, running_version="1.0.0")
    good = releases.publish("1.0.0", agent("1.0.0", GOOD_AGENT))
    assert run_pending(spool, updater, key, "gw-1") is None  # nothing pending, nothing on trial

    assert receiver.handle(sign(key, good.model_dump_json().encode())) == "running"  # the version it runs
    assert receiver.handle(sign(os.urandom(32), good.model_dump_json().encode())) == "refused"  # forged
    other = good.model_copy(update={"gw": "gw-2", "version": "1.0.1"})
    assert receiver.handle(sign(key, other.model_dump_json().encode())) == "refused"  # another gateway's
    assert receiver.handle(b"") == "cleared" and not spool.pending.exists()

    bad = releases.publish("1.1.0", agent("1.1.0", BAD_AGENT))
    frame = sign(key, bad.model_dump_json().encode())
    spool.dir.mkdir(parents=True)  # the agent makes it at start
    assert receiver.handle(frame) == "spooled" and spool.pending.read_bytes() == frame
    assert receiver.handle(frame) == "unchanged"  # the retained message again: one hand-over
    assert updater.apply(good).result == "updated"
    outcome = run_pending(spool, updater, key, "gw-1")
    assert outcome is not None and outcome.result == "rolled_back" and not spool.pending.exists()
    last = spool.last_outcome()
    assert last is not None and (last["version"], last["result"], last["sha256"]) == ("1.1.0", "rolled_back",
                                                                                     bad.sha256)
    assert receiver.handle(frame) == "failed_before" and not spool.pending.exists()
    assert receiver.counters == {"received": 6, "refused": 2, "running": 1, "failed_before": 1, "spooled": 1,
                                 "unchanged": 1, "spool_errors": 0}

    # a pending frame that does not verify (the spool is the agent's to write; the updater runs as root)
    spool.pending.write_bytes(sign(os.urandom(32), bad.model_dump_json().encode()))
    forged = run_pending(spool, updater, key, "gw-1")
    assert forged is not None and (forged.result, forged.version) == ("refused", "?")
    assert "does not verify" in forged.detail
    assert layout.current_version() == "1.0.0"


def test_update_commands(gateway, releases: ReleaseServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fieldtrust.cli.main import app

    layout, updater, _runner, _beat = gateway
    config = tmp_path / "gateway.yaml"
    config.write_text(f"gateway: {{id: gw-1, tenant: t-1, key_hex: '{'ab' * 32}', data_dir: '{tmp_path / 'data'}'}}\n")
    assert updater.apply(releases.publish("1.0.0", agent("1.0.0", GOOD_AGENT))).result == "updated"
    runner = CliRunner()
    common = ["--config", str(config), "--root", str(layout.root)]
    applied = runner.invoke(app, ["edge", "update", "apply", *common])
    assert applied.exit_code == 0 and "no agent update pending" in applied.output, applied.output
    shown = runner.invoke(app, ["edge", "update", "status", *common])
    assert shown.exit_code == 0 and "current:   1.0.0" in shown.output and "pending:   no" in shown.output, shown.output
    bad = runner.invoke(app, ["edge", "update", "apply", "--config", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "invalid configuration" in bad.output
