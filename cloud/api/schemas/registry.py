"""The registry's API models: per entity a ``Base`` (the fields a client sets), ``Create`` (Base plus the id
and write-only inputs), ``Update`` (every field optional: what a PATCH sends is changed, ``null`` clears)
and ``Public`` (Base plus what the server assigns).  Public models never carry a secret or a hash: a
farmer's national id is write-only (``has_national_id`` says whether one is on file), keys and broker
passwords appear only in the answer to the request that made them (``GatewayCreated``,
``DeviceCreated``), claim codes only in ``ClaimCodeCreated``.

Routes answer the store's row types (cloud.store.registry, farmers, fields, claim_codes) through these
models, so a column the store adds is not published until it is added here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cloud.api.models import Ident, KeyHex
from cloud.store import fields as store_fields
from cloud.store.registry import Invalid


def _store_check(check: Callable[[Any], Any]) -> AfterValidator:
    """The store's own check as a field validator, so a bad value is reported at its field."""
    def validate(value: Any) -> Any:
        if value is None:
            return value
        try:
            return check(value)
        except Invalid as exc:
            raise ValueError(str(exc)) from None
    return AfterValidator(validate)


Name = Annotated[str, Field(min_length=1, max_length=200)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Crop = Annotated[str, Field(max_length=40, examples=["maize"], description="a crop name of the registry: "
                            + ", ".join(sorted(store_fields.CROPS))), _store_check(store_fields.check_crop)]
Season = Annotated[str, Field(max_length=37, examples=["2026-long-rains"], description="<year>-<name>"),
                   _store_check(store_fields.check_season)]
Boundary = Annotated[dict[str, Any], Field(description="a GeoJSON Polygon: [longitude, latitude] positions, rings "
                                           f"closed, at most {store_fields.MAX_POSITIONS} positions"),
                     _store_check(store_fields.check_boundary)]
Phone = Annotated[str, Field(min_length=6, max_length=32, examples=["+254 712 345 678"])]
Tenure = Literal["owned", "leased", "communal"]
Sex = Literal["female", "male", "other"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- tenants -----------------------------------------------------------------------------------------------


class TenantBase(_In):
    name: Name


class TenantCreate(TenantBase):
    id: Ident


class TenantPublic(_Out):
    id: str
    name: str
    created_at: datetime


# -- farmers -----------------------------------------------------------------------------------------------


class FarmerBase(_In):
    name: Name
    phone: Phone | None = None
    village: str | None = Field(default=None, max_length=200)
    sex: Sex | None = Field(default=None, description="optional, kept only with demographics_consent")
    birth_year: int | None = Field(default=None, ge=1900, le=2100,
                                   description="optional, kept only with demographics_consent")


class FarmerCreate(FarmerBase):
    id: Ident
    national_id: str | None = Field(default=None, min_length=4, max_length=40, description=(
        "write-only: kept as a keyed hash, to find the farmer by id card and refuse a second record"))
    demographics_consent: bool = Field(default=False, description=(
        "the farmer agrees that sex and birth year are kept, for fairness monitoring by group"))


class FarmerUpdate(_In):
    name: Name | None = None
    phone: Phone | None = None
    village: str | None = Field(default=None, max_length=200)
    sex: Sex | None = None
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    national_id: str | None = Field(default=None, min_length=4, max_length=40, description="write-only")
    demographics_consent: bool | None = Field(default=None, description="false: withdraw, erasing sex and birth year")


class FarmerPublic(_Out):
    id: str
    tenant_id: str
    name: str
    phone: str | None
    village: str | None
    sex: str | None
    birth_year: int | None
    has_national_id: bool
    demographics_consented_at: datetime | None
    created_at: datetime
    updated_at: datetime


# -- farms -------------------------------------------------------------------------------------------------


class FarmBase(_In):
    name: Name
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    area_ha: float | None = Field(default=None, ge=0)
    crop: Crop | None = None
    farmer_id: Ident | None = Field(default=None, description="the farmer who works it")
    tenure: Tenure | None = None
    village: str | None = Field(default=None, max_length=200)


class FarmCreate(FarmBase):
    id: Ident


class FarmUpdate(_In):
    name: Name | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    area_ha: float | None = Field(default=None, ge=0)
    crop: Crop | None = None
    farmer_id: Ident | None = None
    tenure: Tenure | None = None
    village: str | None = Field(default=None, max_length=200)


class FarmPublic(_Out):
    id: str
    tenant_id: str
    name: str
    latitude: float | None
    longitude: float | None
    area_ha: float | None
    crop: str | None
    farmer_id: str | None
    tenure: str | None
    village: str | None
    created_at: datetime
    updated_at: datetime | None


# -- fields ------------------------------------------------------------------------------------------------


class FieldBase(_In):
    name: Name
    area_ha: float | None = Field(default=None, gt=0)
    crop: Crop | None = None
    season: Season | None = None
    season_start: date | None = None
    season_end: date | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    boundary: Boundary | None = None


class FieldCreate(FieldBase):
    id: Ident
    farm_id: Ident


class FieldUpdate(_In):
    name: Name | None = None
    area_ha: float | None = Field(default=None, gt=0)
    crop: Crop | None = None
    season: Season | None = None
    season_start: date | None = None
    season_end: date | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    boundary: Boundary | None = None


class FieldPublic(_Out):
    id: str
    tenant_id: str
    farm_id: str
    name: str
    area_ha: float | None
    crop: str | None
    season: str | None
    season_start: date | None
    season_end: date | None
    latitude: float | None
    longitude: float | None
    boundary: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


# -- gateways ----------------------------------------------------------------------------------------------


class GatewayBase(_In):
    farm_id: Ident | None = None
    name: str = Field(default="", max_length=200)


class GatewayCreate(GatewayBase):
    id: Ident
    key_hex: KeyHex | None = Field(default=None, description="the gateway's HMAC key; generated when absent")
    mqtt_username: Ident | None = Field(default=None, description="defaults to the gateway id")
    mqtt_password: str | None = Field(default=None, min_length=8, max_length=200,
                                      description="generated when absent")


class GatewayUpdate(_In):
    farm_id: Ident | None = None
    name: str | None = Field(default=None, max_length=200)


class GatewayPublic(_Out):
    id: str
    tenant_id: str
    farm_id: str | None
    name: str
    mqtt_username: str | None
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None = Field(description="the newest key epoch not revoked; null when every key is revoked")


class GatewayCreated(BaseModel):
    """The new gateway and its secrets, shown this once: put them in the gateway's configuration."""

    gateway: GatewayPublic
    key_epoch: int
    key_hex: str
    mqtt_password: str


# -- devices -----------------------------------------------------------------------------------------------


class DeviceBase(_In):
    farm_id: Ident | None = Field(default=None, description="default: its field's farm, else its gateway's")
    field_id: Ident | None = Field(default=None, description="the field it measures (puts it on the field's farm)")
    gateway_id: Ident | None = None
    firmware_version: str | None = Field(default=None, min_length=1, max_length=64)
    install_note: str | None = Field(default=None, max_length=500, examples=["north corner, probe 30 cm deep"])
    install_latitude: Latitude | None = None
    install_longitude: Longitude | None = None
    installed_at: datetime | None = None


class DeviceCreate(DeviceBase):
    id: Ident
    kind: Literal["node", "bus"]
    spec: str | None = Field(default=None, max_length=200, examples=["jxct-soil-7in1@1.0.0"],
                             description="model or model@version of the device spec (required for bus devices)")
    key_hex: KeyHex | None = Field(default=None, description="a node's HMAC key; generated for nodes when absent")


class DeviceUpdate(_In):
    spec: str | None = Field(default=None, max_length=200, description="model or model@version")
    farm_id: Ident | None = Field(default=None, description="moving to another farm takes it off its field")
    field_id: Ident | None = None
    gateway_id: Ident | None = None
    firmware_version: str | None = Field(default=None, min_length=1, max_length=64)
    install_note: str | None = Field(default=None, max_length=500)
    install_latitude: Latitude | None = None
    install_longitude: Longitude | None = None
    installed_at: datetime | None = None


class DevicePublic(_Out):
    id: str
    tenant_id: str
    farm_id: str | None
    field_id: str | None
    gateway_id: str | None
    kind: str = Field(description="node or bus")
    spec_key: str | None = Field(description="the device spec as model@version")
    firmware_version: str | None
    install_note: str | None
    install_latitude: float | None
    install_longitude: float | None
    installed_at: datetime | None
    created_at: datetime
    last_seen_at: datetime | None
    key_epoch: int | None = Field(description="nodes only: the newest key epoch not revoked")


class DeviceCreated(BaseModel):
    """The new device; a node's key is shown this once."""

    device: DevicePublic
    key_epoch: int | None
    key_hex: str | None


# -- claim codes -------------------------------------------------------------------------------------------


class ClaimCodeCreate(_In):
    farm_id: Ident
    field_id: Ident | None = Field(default=None, description="a field of the farm")
    note: str = Field(default="", max_length=500, examples=["soil node by the borehole"])
    valid_hours: int = Field(default=168, ge=1, le=90 * 24, description="how long it can be redeemed")


class ClaimCodePublic(_Out):
    id: str
    tenant_id: str
    farm_id: str
    field_id: str | None
    note: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None
    used_by_device: str | None
    revoked_at: datetime | None
    status: Literal["open", "used", "expired", "revoked"]


class ClaimCodeCreated(BaseModel):
    """The code, shown this once: write it on the work order for the technician."""

    claim_code: ClaimCodePublic
    code: str = Field(examples=["7KQ4-M2XD"])


class ClaimRedeem(_In):
    code: str = Field(min_length=8, max_length=20, examples=["7KQ4-M2XD"],
                      description="as written; case, spaces and hyphens do not matter")
    device_id: Ident = Field(description="the node being installed (registered already)")
    gateway_id: Ident | None = Field(default=None, description="the gateway it reports through, when it changes")
    install_note: str | None = Field(default=None, max_length=500)
    install_latitude: Latitude | None = None
    install_longitude: Longitude | None = None


class ClaimRedeemed(BaseModel):
    claim_code: ClaimCodePublic
    device: DevicePublic
