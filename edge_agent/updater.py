"""Gateway agent updates: a new release installed beside the running one, switched to, and switched back if unhealthy.

A gateway has nobody on site to repair a bad update, so nothing here is done in place:

* **Layout** (:class:`ReleaseLayout`) under one root (``/opt/fieldtrust``)::

      releases/<version>/    one directory per installed release (the agent's code and its venv)
      current -> releases/<version>    what the service runs (``ExecStart=/opt/fieldtrust/current/...``)
      previous -> releases/<version>   what ran before the last switch
      failed/<version>       a release that failed its health check: never tried again automatically
      switching              while a switched release is on trial: {version, old, at} (see recover)

  A release is unpacked into a temporary directory and renamed into place, so a half-unpacked
  release never exists under its name; ``current`` is switched with a new symlink renamed over the
  old one (``rename(2)`` is atomic), so the service finds the old release or the new, never neither.
* **Update** (:meth:`Updater.apply`): the archive named by a signed
  :class:`contract.agent_update.AgentUpdate` is downloaded, checked against its SHA-256 (before anything
  is unpacked), unpacked with tarfile's ``data`` filter (no absolute paths, no ``..``, no devices or
  links out of the tree), switched to, and the agent restarted.  The agent must then show its own
  heartbeat (:class:`HeartbeatFile`: the file it touches after every heartbeat it sends,
  edge_agent.health) within ``health_timeout_s``; otherwise ``current`` goes back to the previous
  release, the agent is restarted on it and the version is marked failed.  The trial is recorded in
  ``switching`` first, so an updater killed during it (a power cut) finishes the judgement at its next
  run (:meth:`Updater.recover`, also at boot) instead of leaving an unjudged release running.
* **Trigger**: the cloud's campaign publishes the update, retained, on ``ft/v1/<tenant>/gw/<gw>/update``.
  The running agent receives it on its own cloud connection (edge_agent.uplink) and
  :class:`UpdateReceiver` verifies it (the gateway's key, its gateway id) and leaves the frame in the
  :class:`UpdateSpool` (``<data_dir>/update/pending``).  The agent cannot install its own successor (the
  restart would end the judge with the judged), so the updater is a process of its own:
  ``fieldtrust edge update apply`` (:func:`run_pending`), started by systemd when ``pending`` appears
  (deploy/systemd/fieldtrust-edge-update.path).  It verifies the frame again (the spool is the agent's
  to write, the updater runs as root), applies it and records the outcome beside it, which the agent
  reads so a retained update that failed is not handed over again at every reconnect.

The agent's restart is a strategy: :class:`SystemdRestart` (``systemctl restart fieldtrust-edge``) on
a gateway, :class:`ProcessRestart` (the updater runs the agent as its child) where there is no systemd,
and in tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from contract.agent_update import AgentUpdate, parse_agent_update
from contract.telemetry import ContractError, verify

log = logging.getLogger(__name__)

MAX_ARCHIVE_BYTES = 512 * 2**20
_VERSION = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,63}")
KEEP_RELEASES = 3


class UpdateError(Exception):
    """An update that cannot be installed (download, checksum, archive); nothing was switched."""


# -- the install layout ------------------------------------------------------------------------------


class ReleaseLayout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.releases = self.root / "releases"
        self.current = self.root / "current"
        self.previous = self.root / "previous"
        self.failed = self.root / "failed"
        self.switching = self.root / "switching"

    def release_dir(self, version: str) -> Path:
        if not _VERSION.fullmatch(version or ""):  # the contract's rule: a safe directory name
            raise UpdateError(f"not a release version: {version!r}")
        return self.releases / version

    def version_of(self, link: Path) -> str | None:
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def current_version(self) -> str | None:
        return self.version_of(self.current)

    def installed(self) -> list[str]:
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.releases.is_dir() else []

    def failed_versions(self) -> list[str]:
        return sorted(p.name for p in self.failed.iterdir()) if self.failed.is_dir() else []

    def is_failed(self, version: str) -> bool:
        return (self.failed / version).exists()

    def mark_failed(self, version: str, reason: str) -> None:
        self.failed.mkdir(parents=True, exist_ok=True)
        (self.failed / version).write_text(reason + "\n")

    def install(self, version: str, archive: bytes, sha256: str) -> Path:
        """Unpack ``archive`` (a .tar.gz whose SHA-256 must be ``sha256``) as ``releases/<version>``."""
        digest = hashlib.sha256(archive).hexdigest()
        if digest != sha256:
            raise UpdateError(f"release {version}: SHA-256 {digest} does not match the update's {sha256}")
        target = self.release_dir(version)
        if target.exists():
            return target  # installed before (an update retried after a restart): the same bytes by its hash
        self.releases.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.releases))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise UpdateError(f"release {version}: cannot unpack the archive: {exc}") from None
        staging.chmod(0o755)
        os.rename(staging, target)
        return target

    def _link(self, link: Path, version: str) -> None:
        tmp = link.with_name(f".{link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, link)  # atomic: the link names the old release or the new one, never neither

    def switch(self, version: str) -> str | None:
        """Point ``current`` at ``version`` (``previous`` at what it was); returns the previous version."""
        if not self.release_dir(version).is_dir():
            raise UpdateError(f"release {version} is not installed")
        old = self.current_version()
        if old is not None and old != version:
            self._link(self.previous, old)
        self._link(self.current, version)
        return old

    def prune(self, keep: int = KEEP_RELEASES) -> list[str]:
        """Remove old releases beyond the newest ``keep`` (never ``current`` or ``previous``); the removed."""
        protected = {self.current_version(), self.version_of(self.previous)}
        ordered = sorted(self.installed(), key=lambda v: self.release_dir(v).stat().st_mtime, reverse=True)
        removed = [v for v in ordered[keep:] if v not in protected]
        for version in removed:
            shutil.rmtree(self.release_dir(version), ignore_errors=True)
        return removed


# -- restarting the agent and judging its health -----------------------------------------------------


class Restart(Protocol):
    def restart(self) -> None: ...


class SystemdRestart:
    """``systemctl restart <unit>``: the service runs ``current``'s code, so a restart runs the switched release."""

    def __init__(self, unit: str = "fieldtrust-edge.service") -> None:
        self.unit = unit

    def restart(self) -> None:
        subprocess.run(["systemctl", "restart", self.unit], check=True, timeout=60)


class ProcessRestart:
    """Runs the agent as a child process: ``command(current_dir)`` is started again at every restart."""

    def __init__(self, layout: ReleaseLayout, command: Callable[[Path], Sequence[str]],
                 env: dict[str, str] | None = None, spawn: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.layout = layout
        self.command = command
        self.env = env
        self._spawn = spawn
        self.proc: subprocess.Popen | None = None

    def restart(self) -> None:
        self.stop()
        current = self.layout.current.resolve()
        self.proc = self._spawn(list(self.command(current)), cwd=current, env=self.env, stdin=subprocess.DEVNULL)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None


class HeartbeatFile:
    """Healthy once the agent has touched ``path`` after ``since`` (the agent touches it after each heartbeat)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def beat_since(self, since: float) -> bool:
        try:
            return self.path.stat().st_mtime > since
        except FileNotFoundError:
            return False


@dataclass(frozen=True)
class Outcome:
    result: Literal["updated", "rolled_back", "skipped", "refused"]
    version: str
    detail: str = ""


class Updater:
    def __init__(self, layout: ReleaseLayout, restart: Restart, health: HeartbeatFile, *,
                 health_timeout_s: float = 120.0, fetch: Callable[[str], bytes] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.layout = layout
        self._restart = restart
        self._health = health
        self.health_timeout_s = health_timeout_s
        self._fetch = fetch or download
        self._sleep = sleep
        self._lock = threading.Lock()

    def apply(self, update: AgentUpdate) -> Outcome:
        """Install, switch, restart, check; switch back if the new release shows no heartbeat in time."""
        with self._lock:
            version = update.version
            if self.layout.current_version() == version:
                return Outcome("skipped", version, "running already")
            if self.layout.is_failed(version):
                return Outcome("skipped", version, "failed its health check before; not retried")
            try:
                self.layout.install(version, self._fetch(update.url), update.sha256)
            except UpdateError as exc:
                log.error("agent update %s refused: %s", version, exc)
                return Outcome("refused", version, str(exc))
            old = self.layout.current_version()
            _write_json(self.layout.switching, {"version": version, "old": old, "at": time.time()})
            self.layout.switch(version)
            log.info("agent release %s installed and switched to (was %s); restarting", version, old)
            return self._restart_and_judge(version, old)

    def recover(self) -> Outcome | None:
        """Finish the trial of a release that an earlier run switched to and did not judge (it was killed)."""
        with self._lock:
            trial = _read_json(self.layout.switching)
            if trial is None:
                return None
            version, old = str(trial.get("version")), trial.get("old")
            if self.layout.current_version() != version:  # switched back already, or never switched
                self.layout.switching.unlink(missing_ok=True)
                return None
            log.warning("agent release %s was left on trial by an earlier run; judging it now", version)
            return self._restart_and_judge(version, None if old is None else str(old))

    def _restart_and_judge(self, version: str, old: str | None) -> Outcome:
        """Restart the agent on ``version``; keep it if a heartbeat follows, else mark it failed and go back to ``old``.

        Only a heartbeat after the restart counts: the old agent may beat until the moment it is stopped."""
        try:
            try:
                self._restart.restart()
                healthy = self._healthy(time.time())
            except (OSError, subprocess.SubprocessError) as exc:  # systemctl failed: as good as no heartbeat
                log.error("cannot restart the agent on release %s: %s", version, exc)
                healthy = False
            if healthy:
                self.layout.prune()
                return Outcome("updated", version, f"was {old}")
            reason = f"no heartbeat within {self.health_timeout_s:g} s after the switch"
            self.layout.mark_failed(version, reason)
            if old is None:
                return Outcome("rolled_back", version, reason + "; no earlier release to go back to")
            self.layout.switch(old)
            log.error("agent release %s: %s; switched back to %s", version, reason, old)
            self._restart.restart()
            return Outcome("rolled_back", version, f"{reason}; back on {old}")
        finally:
            self.layout.switching.unlink(missing_ok=True)

    def _healthy(self, since: float) -> bool:
        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            if self._health.beat_since(since):
                return True
            self._sleep(0.1)
        return self._health.beat_since(since)


def download(url: str, max_bytes: int = MAX_ARCHIVE_BYTES) -> bytes:
    """The archive at ``url`` (UpdateError on an HTTP error or one larger than ``max_bytes``)."""
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise UpdateError(f"{url}: larger than {max_bytes} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise UpdateError(f"cannot download {url}: {exc}") from None
    return b"".join(chunks)




def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write whole or not at all (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


# -- the trigger: from the agent's cloud connection to the updater ------------------------------------------


def verified_update(frame: bytes, key: bytes, gateway_id: str) -> AgentUpdate:
    """The update in a signed frame for this gateway; ContractError when the signature, form or gateway is wrong."""
    update = parse_agent_update(verify(frame, key))
    if update.gw != gateway_id:
        raise ContractError("gateway_mismatch", f"the update is for gateway {update.gw!r}, not {gateway_id!r}")
    return update


class UpdateSpool:
    """The hand-over in ``<data_dir>/update/``: ``pending`` (the signed frame, written by the agent, taken by the
    updater) and ``outcome.json`` (the updater's last result, read by the agent)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.pending = self.dir / "pending"
        self.outcome = self.dir / "outcome.json"

    def offer(self, frame: bytes) -> bool:
        """Leave ``frame`` for the updater; False when that very frame is waiting already."""
        try:
            if self.pending.read_bytes() == frame:
                return False
        except FileNotFoundError:
            pass
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / ".pending.tmp"
        tmp.write_bytes(frame)
        os.replace(tmp, self.pending)  # the path unit sees a whole frame or none
        return True

    def take(self) -> bytes | None:
        try:
            frame = self.pending.read_bytes()
        except FileNotFoundError:
            return None
        self.pending.unlink(missing_ok=True)
        return frame

    def record(self, update: AgentUpdate | None, outcome: Outcome) -> None:
        """The updater's result, for the agent (and people).  Only into a directory the agent made: one made by
        the updater (root) would be the agent's no more."""
        if not self.dir.is_dir():
            return
        _write_json(self.outcome, {**asdict(outcome), "sha256": update.sha256 if update else None,
                                   "campaign": update.campaign if update else None, "at": time.time()})

    def last_outcome(self) -> dict[str, Any] | None:
        return _read_json(self.outcome)


class UpdateReceiver:
    """The agent's side: verifies what arrives on its ``update`` topic and leaves it in the spool for the updater.

    Runs on the uplink's thread.  Skipped: an update of the version running, and one whose very release
    (version and SHA-256) the updater rolled back or skipped last time (the retained message comes again at
    every reconnect).
    """

    def __init__(self, gateway_id: str, key: bytes, spool: UpdateSpool, running_version: str) -> None:
        self.gateway_id = gateway_id
        self._key = key
        self.spool = spool
        self.running_version = running_version
        self.counters = dict.fromkeys(("received", "refused", "running", "failed_before", "spooled", "unchanged",
                                       "spool_errors"), 0)

    def handle(self, payload: bytes) -> str:
        """One message of the update topic; returns what became of it (a counter's name, or "cleared")."""
        if not payload:
            return "cleared"  # the cloud cleared the retained update
        self.counters["received"] += 1
        result = self._judge(payload)
        self.counters[result] += 1
        return result

    def _judge(self, payload: bytes) -> str:
        try:
            update = verified_update(payload, self._key, self.gateway_id)
        except (ContractError, ValueError) as exc:
            log.warning("agent update refused: %s", exc)
            return "refused"
        if update.version == self.running_version:
            return "running"
        last = self.spool.last_outcome() or {}
        if ((last.get("version"), last.get("sha256")) == (update.version, update.sha256)
                and last.get("result") in ("rolled_back", "skipped")):
            return "failed_before"
        try:
            offered = self.spool.offer(payload)
        except OSError as exc:  # a full disk: the retained update comes again at the next connection
            log.error("cannot leave agent update %s for the updater in %s: %s", update.version, self.spool.dir, exc)
            return "spool_errors"
        if offered:
            log.info("agent update %s received; left for the updater in %s", update.version, self.spool.pending)
        return "spooled" if offered else "unchanged"


def run_pending(spool: UpdateSpool, updater: Updater, key: bytes, gateway_id: str) -> Outcome | None:
    """``fieldtrust edge update apply``: finish an interrupted trial, then apply the pending update (if any).

    The pending frame is verified again: the spool is written by the agent's user, the updater runs as root.
    """
    recovered = updater.recover()
    frame = spool.take()
    if frame is None:
        if recovered is not None:
            spool.record(None, recovered)
        return recovered
    try:
        update = verified_update(frame, key, gateway_id)
    except (ContractError, ValueError) as exc:
        outcome = Outcome("refused", "?", f"the pending update does not verify: {exc}")
        spool.record(None, outcome)
        return outcome
    outcome = updater.apply(update)
    spool.record(update, outcome)
    log.info("agent update %s: %s %s", outcome.version, outcome.result, outcome.detail)
    return outcome
