"""Gateway configuration: one YAML file validated by pydantic at start.

A bad file fails at start with the field named (``buses[0].devices[2].spec: unknown sensor
model``); the agent never runs on a half-understood configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from device_specs.registry import SpecError, get_spec
from device_specs.schema import DeviceSpec, Interface, Parity

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(_Strict):
    id: Ident
    spec: str  # model id, model@version, or a path to a spec file
    unit: int = Field(default=1, ge=0, le=247)
    poll_interval_s: float | None = Field(default=None, ge=0.1, le=86_400)  # overrides the spec's
    enabled: bool = True

    def load_spec(self) -> DeviceSpec:
        return get_spec(self.spec)


class BusConfig(_Strict):
    """A physical bus: ``rtu`` (Modbus RS485), ``tcp`` (Modbus TCP) or ``serial`` (one line-protocol sensor)."""

    id: Ident
    kind: Literal["rtu", "tcp", "serial"]
    # rtu and serial
    port: str | None = None
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Parity = Parity.NONE
    stop_bits: Literal[1, 2] = 1
    data_bits: Literal[7, 8] = 8  # 7 only on a serial bus: Modbus RTU is 8 data bits
    # tcp
    host: str | None = None
    tcp_port: int | None = Field(default=None, ge=1, le=65535)
    # both
    timeout_ms: int = Field(default=300, ge=10, le=10_000)
    retries: int = Field(default=1, ge=0, le=5)
    #: consecutive failures that open a device's circuit breaker, and the longest back-off
    breaker_failures: int = Field(default=3, ge=1, le=100)
    breaker_max_backoff_s: float = Field(default=300.0, ge=1, le=86_400)
    devices: list[DeviceConfig] = []

    @model_validator(mode="after")
    def _endpoint(self) -> BusConfig:
        if self.kind in ("rtu", "serial") and not self.port:
            raise ValueError(f"port: required for an {self.kind} bus (e.g. /dev/ttyUSB0)")
        if self.kind == "tcp" and (not self.host or not self.tcp_port):
            raise ValueError("host and tcp_port: required for a tcp bus")
        if self.data_bits != 8 and self.kind != "serial":
            raise ValueError(f"data_bits: Modbus {self.kind} uses 8 data bits; 7 is only for a serial bus")
        units = [d.unit for d in self.devices]
        if self.kind == "rtu" and len(units) != len(set(units)):
            raise ValueError("devices: two devices share a unit id on one RS485 line")
        if self.kind == "serial" and sum(d.enabled for d in self.devices) > 1:
            raise ValueError("devices: a serial bus carries one sensor (line protocols here have no addresses); "
                             "give each sensor its own port")
        return self

    @property
    def bits_per_char(self) -> int:
        return 1 + self.data_bits + (0 if self.parity == Parity.NONE else 1) + self.stop_bits


class TlsConfig(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    #: the MQTT version: 5, or 3.1.1 for a broker that speaks nothing newer (the pure-Python amqtt)
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        """YAML reads ``protocol: 5`` as a number; it means the version "5"."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class GatewayIdentity(_Strict):
    id: Ident
    tenant: Ident
    key_epoch: int = Field(default=1, ge=0)
    #: the gateway's HMAC key: a file holding hex, or (development only) the hex inline
    key_file: Path | None = None
    key_hex: str | None = None
    data_dir: Path = Path("/var/lib/fieldtrust")

    @model_validator(mode="after")
    def _one_key(self) -> GatewayIdentity:
        if (self.key_file is None) == (self.key_hex is None):
            raise ValueError("key_file or key_hex: give exactly one")
        return self

    def key(self) -> bytes:
        text = self.key_hex if self.key_hex is not None else self._read_key_file()
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise ConfigError("gateway.key: not hexadecimal") from None
        if len(key) < 16:
            raise ConfigError("gateway.key: shorter than 16 bytes")
        return key

    def _read_key_file(self) -> str:
        assert self.key_file is not None
        try:
            return self.key_file.read_text()
        except OSError as exc:
            raise ConfigError(f"gateway.key_file: cannot read {self.key_file}: {exc}") from None


class IntakeConfig(_Strict):
    """Node messages from the gateway's local broker."""

    enabled: bool = True
    broker: BrokerConfig = BrokerConfig()
    #: sequence numbers remembered per node to tell duplicates and replays
    replay_window: int = Field(default=4096, ge=16, le=1_000_000)
    #: how long the local broker keeps the agent's session (node frames queued while it is down)
    session_expiry_s: int = Field(default=86_400, ge=0, le=2**32 - 1)


class UplinkConfig(_Strict):
    broker: BrokerConfig = BrokerConfig()
    client_id: str | None = None  # default: fieldtrust-gw-<id>
    batch_max_items: int = Field(default=200, ge=1, le=5000)
    batch_max_bytes: int = Field(default=256 * 1024, ge=4096, le=1024 * 1024)
    batch_max_wait_s: float = Field(default=1.0, ge=0.0, le=600)
    #: batches in flight (sent, not yet receipted) at once
    max_in_flight: int = Field(default=8, ge=1, le=1000)
    receipt_timeout_s: float = Field(default=30.0, ge=0.5, le=3600)
    session_expiry_s: int = Field(default=86_400, ge=0, le=2**32 - 1)
    reconnect_min_s: float = Field(default=1.0, ge=0.05, le=60)
    reconnect_max_s: float = Field(default=60.0, ge=0.1, le=3600)


class NodesConfig(_Strict):
    """What the gateway serves its sensor nodes: config and OTA relayed from the cloud, OTA files, time.

    The relay needs the local broker (``intake``); the two servers are off until given a port, so
    that two agents on one machine (tests, the demo) never fight over one.
    """

    #: relay each node's signed config and OTA manifest from the cloud to the local broker
    relay: bool = True
    #: nodes known to belong here before they are first heard (others are learnt from their frames)
    ids: list[Ident] = []
    cache_dir: Path | None = None  # OTA files by SHA-256; default: <data_dir>/ota-cache
    cache_mb: float = Field(default=64, ge=1, le=65_536)
    #: HTTP server for OTA files (``GET /ota/<sha256>`` with Range); None: off, 0: any free port
    ota_bind: str = "0.0.0.0"
    ota_port: int | None = Field(default=None, ge=0, le=65535)
    #: SNTP server for nodes; stock MicroPython asks port 123 (binding it needs CAP_NET_BIND_SERVICE)
    sntp_bind: str = "0.0.0.0"
    sntp_port: int | None = Field(default=None, ge=0, le=65535)


class OutboxConfig(_Strict):
    path: Path | None = None  # default: <data_dir>/outbox.db
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    overflow: Literal["drop-oldest"] = "drop-oldest"


class HealthConfig(_Strict):
    interval_s: float = Field(default=60.0, ge=0.5, le=86_400)
    #: touched after each heartbeat sent: the agent updater's health check; default: <data_dir>/heartbeat
    heartbeat_file: Path | None = None


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None  # default: stderr only
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024)
    backups: int = Field(default=5, ge=0, le=100)


class AgentConfig(_Strict):
    gateway: GatewayIdentity
    buses: list[BusConfig] = []
    intake: IntakeConfig = IntakeConfig()
    uplink: UplinkConfig = UplinkConfig()
    outbox: OutboxConfig = OutboxConfig()
    nodes: NodesConfig = NodesConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _unique(self) -> AgentConfig:
        bus_ids = [b.id for b in self.buses]
        if len(bus_ids) != len(set(bus_ids)):
            raise ValueError("buses: bus ids must be unique")
        dev_ids = [d.id for b in self.buses for d in b.devices]
        if len(dev_ids) != len(set(dev_ids)):
            raise ValueError("buses: device ids must be unique across the gateway")
        return self

    @property
    def outbox_path(self) -> Path:
        return self.outbox.path or self.gateway.data_dir / "outbox.db"

    @property
    def ota_cache_dir(self) -> Path:
        return self.nodes.cache_dir or self.gateway.data_dir / "ota-cache"

    @property
    def heartbeat_path(self) -> Path:
        return self.health.heartbeat_file or self.gateway.data_dir / "heartbeat"

    @property
    def update_dir(self) -> Path:
        """Where the agent leaves a verified agent update for the updater (edge_agent.updater.UpdateSpool)."""
        return self.gateway.data_dir / "update"


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out or "config"


def parse_config(text: str, origin: str = "<config>") -> AgentConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of ``[[[[…``
        raise ConfigError(f"{origin}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a YAML mapping")
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{origin}: {_where(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None
    for bi, bus in enumerate(cfg.buses):
        for di, dev in enumerate(bus.devices):
            try:
                spec = dev.load_spec()
            except SpecError as exc:
                raise ConfigError(f"{origin}: buses[{bi}].devices[{di}].spec: {exc}") from None
            wanted = {"rtu": "modbus-rtu", "tcp": "modbus-tcp", "serial": "serial-line"}[bus.kind]
            fits = spec.interface == Interface.SERIAL_LINE if bus.kind == "serial" else spec.interface.is_modbus
            if not fits:
                raise ConfigError(
                    f"{origin}: buses[{bi}].devices[{di}].spec: {spec.model} is a {spec.interface.value} "
                    f"sensor and cannot sit on a {wanted} bus ({bus.id}, kind {bus.kind})"
                )
    cfg.gateway.key()  # fail now, not at the first signature
    return cfg


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, str(path))
