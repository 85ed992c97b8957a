"""What the downlink API accepts: a node's desired config, a firmware release, an OTA job; and its answers.

The bounds are the node's own (``firmware/config.py``), so a request the node would refuse is a 422
naming the field, before anything is signed or stored.  Calibration is given as ``[gain, offset]``
per metric and sent to the node as ``{"scale": gain, "offset": offset}``, its config format.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from cloud.store.downlink import ConfigVersion
from contract.models import MetricName
from firmware import config as node_config
from firmware import ota as node_ota


def _bounded(name: str) -> object:
    low, high = node_config.BOUNDS[name]
    return Field(default=None, ge=low, le=high, description=f"{low}..{high}; the node's default when absent: "
                                                            f"{node_config.DEFAULTS[name]}")


Finite = Annotated[float, Field(allow_inf_nan=False)]
Gain = Annotated[Finite, Field(ge=-node_config.MAX_ABS_SCALE, le=node_config.MAX_ABS_SCALE)]
Offset = Annotated[Finite, Field(ge=-node_config.MAX_ABS_OFFSET, le=node_config.MAX_ABS_OFFSET)]
Delta = Annotated[Finite, Field(ge=0)]


class ConfigUpdate(BaseModel):
    """A node's whole desired config: a field left out takes the node's default (it is not kept from before)."""

    model_config = ConfigDict(extra="forbid")
    interval_s: StrictInt | None = _bounded("interval_s")  # type: ignore[assignment]
    heartbeat_s: StrictInt | None = _bounded("heartbeat_s")  # type: ignore[assignment]
    samples: StrictInt | None = _bounded("samples")  # type: ignore[assignment]
    calibration: dict[MetricName, tuple[Gain, Offset]] | None = Field(
        default=None, max_length=node_config.MAX_METRICS, examples=[{"soil_moisture": [1.02, -0.5]}],
        description="per metric [gain, offset]: the node stores gain * raw + offset")
    deltas: dict[MetricName, Delta] | None = Field(
        default=None, max_length=node_config.MAX_METRICS, examples=[{"air_temperature": 0.5}],
        description="per metric, the change that makes the node send before its interval")

    @field_validator("calibration")
    @classmethod
    def _gain_not_zero(cls, value: dict[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]] | None:
        for metric, (gain, _offset) in (value or {}).items():
            if gain == 0:
                raise ValueError(f"{metric}: gain must not be 0")
        return value

    def cfg(self) -> dict[str, object]:
        """The ``cfg`` object of the node's config frame."""
        out: dict[str, object] = {}
        for name in ("interval_s", "heartbeat_s", "samples"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.calibration is not None:
            out["calibration"] = {metric: {"scale": _plain(gain), "offset": _plain(offset)}
                                  for metric, (gain, offset) in self.calibration.items()}
        if self.deltas is not None:
            out["deltas"] = {m: _plain(d) for m, d in self.deltas.items()}
        return out


def _plain(number: float) -> int | float:
    """Whole numbers as ints (shorter frames, same value on the node)."""
    return int(number) if float(number).is_integer() and abs(number) < 2**53 else number


class FileUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=128, examples=["firmware/cycle.mpy"],
                      description="where the node puts it, relative to its root")
    content_b64: str = Field(description="the file's bytes, base64")

    def content(self) -> bytes:
        try:
            return base64.b64decode(self.content_b64, validate=True)
        except (binascii.Error, ValueError):
            from cloud.store.registry import Invalid

            raise Invalid(f"file {self.path!r}: content_b64 is not valid base64") from None


class ReleaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt = Field(ge=1, lt=2**31, description="build number; a node installs only a higher one")
    files: list[FileUpload] = Field(min_length=1, max_length=node_ota.MAX_FILES)


class OtaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt = Field(ge=1, lt=2**31, description="a firmware release's build number")


class ConfigAccepted(BaseModel):
    device: str
    version: int
    status: str = Field(description="pending until the broker has it, then published")


class NodeConfigState(BaseModel):
    """Desired (the newest version) against reported (what the node said it runs), with the history."""

    device: str
    desired: ConfigVersion | None
    reported_version: int | None
    reported_at: datetime | None
    history: list[ConfigVersion] = Field(description="every version, newest first")
