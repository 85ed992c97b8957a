"""What the API accepts (``…Create``) and returns (``…Public``): never a stored key or password hash.

Secrets appear in exactly one place, the answer to the request that created them
(:class:`GatewayCreated`, :class:`DeviceCreated`, :class:`KeyRotated`); they cannot be read back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["gw-kisumu-01"],
                             description="1-64 characters of A-Z a-z 0-9 - _ .")]
KeyHex = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{2}){16,64}$", description="16-64 bytes as hex")]


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantCreate(_Create):
    id: Ident
    name: str = Field(min_length=1, max_length=200)


class TenantPublic(_Public):
    id: str
    name: str
    created_at: datetime


class FarmCreate(_Create):
    id: Ident
    name: str = Field(min_length=1, max_length=200)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    area_ha: float | None = Field(default=None, ge=0)
    crop: str | None = Field(default=None, max_length=100)


class FarmPublic(_Public):
    id: str
    tenant_id: str
    name: str
    latitude: float | None
    longitude: float | None
    area_ha: float | None
    crop: str | None
    created_at: datetime


class GatewayCreate(_Create):
    id: Ident
    farm_id: Ident | None = None
    name: str = Field(default="", max_length=200)
    key_hex: KeyHex | None = Field(default=None, description="the gateway's HMAC key; generated when absent")
    mqtt_username: Ident | None = Field(default=None, description="defaults to the gateway id")
    mqtt_password: str | None = Field(default=None, min_length=8, max_length=200,
                                      description="generated when absent")


class GatewayPublic(_Public):
    id: str
    tenant_id: str
    farm_id: str | None
    name: str
    mqtt_username: str | None
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None


class GatewayCreated(BaseModel):
    """The new gateway and its secrets, shown this once: put them in the gateway's configuration."""

    gateway: GatewayPublic
    key_epoch: int
    key_hex: str
    mqtt_password: str


class DeviceCreate(_Create):
    id: Ident
    kind: Literal["node", "bus"]
    farm_id: Ident | None = None
    gateway_id: Ident | None = None
    spec: str | None = Field(default=None, max_length=200, examples=["jxct-soil-7in1@1.0.0"],
                             description="model or model@version of the device spec (required for bus devices)")
    key_hex: KeyHex | None = Field(default=None, description="a node's HMAC key; generated for nodes when absent")


class DevicePublic(_Public):
    id: str
    tenant_id: str
    farm_id: str | None
    gateway_id: str | None
    kind: str
    spec_key: str | None
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None


class DeviceCreated(BaseModel):
    """The new device; a node's key is shown this once."""

    device: DevicePublic
    key_epoch: int | None
    key_hex: str | None


class KeyRotate(_Create):
    key_hex: KeyHex | None = Field(default=None, description="the new key; generated when absent")


class KeyRotated(BaseModel):
    owner_kind: str
    owner_id: str
    key_epoch: int
    key_hex: str


class KeyEpochPublic(_Public):
    owner_kind: str
    owner_id: str
    epoch: int
    created_at: datetime
    revoked_at: datetime | None


class ErrorBody(BaseModel):
    """Every error: a short code, a sentence for people and, for invalid requests, the fields at fault."""

    error: str
    message: str
    fields: list[dict[str, object]] | None = None


class PointPublic(_Public):
    ts: datetime = Field(description="the reading's time, or the start of its bucket")
    value: float | None = Field(description="the reading, or the bucket's mean; null in a gap")
    min: float | None
    max: float | None
    n: int = Field(description="readings behind the point: 0 in a gap")


class SeriesPublic(BaseModel):
    metric: str
    start: datetime
    end: datetime
    bucket: str = Field(description="'raw', or the bucket length in seconds such as '3600s'")
    points: list[PointPublic]


class LatestPublic(_Public):
    metric: str
    unit: str
    ts: datetime
    value: float | None
    value_text: str | None
    quality: int
    trust: int = Field(description="1 node-signed, 2 gateway-attested")


class BatchTotals(_Public):
    batches: int
    readings: int
    duplicates: int
    rejected: int
    last_received_at: datetime | None


class DeadLetterTotals(BaseModel):
    total: int
    by_reason: dict[str, int]


class IngestStatus(BaseModel):
    since: datetime | None
    batches: BatchTotals
    dead_letters: DeadLetterTotals
    workers: list[dict[str, object]] = Field(description="each ingest worker's last published counters")
