"""A PRIVATE amqtt broker: the pure-Python fallback where no ``mosquitto`` binary is installed.

amqtt speaks MQTT 3.1.1 only and moves a few thousand QoS 1 messages a second, a third of
Mosquitto's (``bench/broker_throughput.py``): plenty for the demo and tests, not for a village of
gateways.
It runs in a child process (``fieldtrust.services.amqtt_process``) started through
``fieldtrust.processes.spawn``, so it has its own interpreter and event loop and ends with its
parent.  Sessions are kept in that process's memory: they survive client reconnects and agent
restarts, not a restart of the broker.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path
from typing import Literal

from fieldtrust import processes

STARTUP_TIMEOUT_S = 20.0
#: what the child prints on stdout once it listens: the parent waits for this, not for the port,
#: which another broker may hold
READY = "ready"


class AmqttBroker:
    """amqtt on 127.0.0.1 and a spare port; :meth:`stop` and :meth:`start` keep the port."""

    protocol: Literal["3.1.1"] = "3.1.1"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or processes.free_port()
        self.log_path = workdir / "amqtt.log"
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> AmqttBroker:
        if self.running:
            return self
        with self.log_path.open("ab") as log:  # the child's own errors (an import failure, a taken port)
            self._proc = processes.spawn(
                [sys.executable, "-m", "fieldtrust.services.amqtt_process", "--port", str(self.port),
                 "--log", str(self.log_path)],
                stdout=subprocess.PIPE, stderr=log,
            )
        if not self._ready():
            code = processes.stop(self._proc)
            self._proc = None
            raise RuntimeError(f"amqtt did not start (exit code {code}); {self.log_path}:\n{self.log_text()[-2000:]}")
        return self

    def _ready(self) -> bool:
        """Whether the child says it listens within the time allowed (end of file: it exited)."""
        assert self._proc is not None and self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(STARTUP_TIMEOUT_S):
                return False
        return self._proc.stdout.readline().strip() == READY.encode()

    def stop(self) -> None:
        """SIGTERM: amqtt closes its clients' connections and exits."""
        if self._proc is not None:
            processes.stop(self._proc)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> AmqttBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
