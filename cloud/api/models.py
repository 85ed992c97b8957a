"""What the API accepts (``…Create``) and returns: never a stored key or password hash.

Stored rows are answered as the store's own row types (:class:`cloud.store.registry.Gateway`,
:class:`cloud.store.series.Point`, ...), which hold no secret; the models here are what the
store has no type for.  Secrets appear in exactly one place, the answer to the request that
created them (:class:`GatewayCreated`, :class:`DeviceCreated`, :class:`KeyRotated`); they cannot
be read back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.store.ingest_status import BatchTotals
from cloud.store.registry import Device, Gateway
from cloud.store.series import Point

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["gw-kisumu-01"],
                             description="1-64 characters of A-Z a-z 0-9 - _ .")]
KeyHex = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{2}){16,64}$", description="16-64 bytes as hex")]


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Create):
    id: Ident
    name: str = Field(min_length=1, max_length=200)


class FarmCreate(_Create):
    id: Ident
    name: str = Field(min_length=1, max_length=200)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    area_ha: float | None = Field(default=None, ge=0)
    crop: str | None = Field(default=None, max_length=100)


class GatewayCreate(_Create):
    id: Ident
    farm_id: Ident | None = None
    name: str = Field(default="", max_length=200)
    key_hex: KeyHex | None = Field(default=None, description="the gateway's HMAC key; generated when absent")
    mqtt_username: Ident | None = Field(default=None, description="defaults to the gateway id")
    mqtt_password: str | None = Field(default=None, min_length=8, max_length=200,
                                      description="generated when absent")


class GatewayCreated(BaseModel):
    """The new gateway and its secrets, shown this once: put them in the gateway's configuration."""

    gateway: Gateway
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


class DeviceCreated(BaseModel):
    """The new device; a node's key is shown this once."""

    device: Device
    key_epoch: int | None
    key_hex: str | None


class KeyRotate(_Create):
    key_hex: KeyHex | None = Field(default=None, description="the new key; generated when absent")


class KeyRotated(BaseModel):
    owner_kind: str
    owner_id: str
    key_epoch: int
    key_hex: str


class ErrorBody(BaseModel):
    """Every error: a short code, a sentence for people and, for invalid requests, the fields at fault."""

    error: str
    message: str
    fields: list[dict[str, object]] | None = None


class SeriesPublic(BaseModel):
    metric: str
    start: datetime
    end: datetime
    bucket: str = Field(description="'raw', or the bucket length in seconds such as '3600s'")
    points: list[Point]


class DeadLetterTotals(BaseModel):
    total: int
    by_reason: dict[str, int]


class IngestStatus(BaseModel):
    since: datetime | None
    batches: BatchTotals
    dead_letters: DeadLetterTotals
    workers: list[dict[str, object]] = Field(description="each ingest worker's last published counters")
