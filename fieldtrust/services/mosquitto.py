"""A PRIVATE Mosquitto: for the demo on a machine without a broker, and for tests that stop,
restart or kill a broker (never the shared one).

Settings come from ``deploy/mosquitto/gateway.conf`` (the project's own gateway broker), minus
the listener, file locations and authentication, which are replaced by a loopback port, a
temporary folder and anonymous access.  The broker runs through ``fieldtrust.processes.spawn``
so it dies with the test process.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from fieldtrust import processes

REPO = Path(__file__).resolve().parents[2]
GATEWAY_CONF = REPO / "deploy" / "mosquitto" / "gateway.conf"
#: options the private broker replaces (where it listens, where it writes, who may connect)
REPLACED = {
    "listener",
    "persistence_location",
    "password_file",
    "acl_file",
    "allow_anonymous",
    "log_dest",
    "log_type",
    "pid_file",
    "user",
    "include_dir",
}


def derived_config(port: int, workdir: Path, overrides: dict[str, str] | None = None) -> str:
    """The gateway broker's settings, listening on 127.0.0.1:``port`` and writing in ``workdir``.

    ``overrides`` replace options of the file and the defaults below (for a broker that plays the
    cloud's part, say, with ``password_file``, ``acl_file`` and ``allow_anonymous false``).
    """
    overrides = overrides or {}
    kept = []
    for line in GATEWAY_CONF.read_text().splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0] not in REPLACED and words[0] not in overrides:
            kept.append(line)
    kept += [f"{name} {value}" for name, value in overrides.items()]
    defaults = [
        f"persistence_location {workdir}/",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type all",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # as root, mosquitto would switch to its own user, who cannot write in a test's folder
        f"user {getpass.getuser()}",
    ]
    kept += [line for line in defaults if line.split()[0] not in overrides]  # an override wins
    return "\n".join(kept) + "\n"


class PrivateMosquitto:
    """A broker of our own on a spare port; :meth:`stop` and :meth:`start` keep the port."""

    protocol: Literal["5"] = "5"  # the MQTT version the agent speaks to it

    def __init__(self, workdir: Path, port: int | None = None, overrides: dict[str, str] | None = None) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or processes.free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(derived_config(self.port, workdir, overrides))
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PrivateMosquitto:
        if self.running:
            return self
        self._proc = processes.spawn(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            processes.wait_for_port(self.port, self.host, timeout=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"private mosquitto did not start; see {self.workdir / 'mosquitto.log'}") from None
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions to the persistence file on the way out."""
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None

    def kill(self) -> None:
        """``kill -9`` (fault tests): nothing is saved; what was queued since the last autosave is lost."""
        if self._proc is not None:
            processes.kill9(self._proc)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
