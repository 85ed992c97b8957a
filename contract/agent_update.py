"""The gateway agent update message (CPython only): what the cloud sends on ``ft/v1/<tenant>/gw/<gw>/update``.

The cloud's OTA campaigns for gateways (cloud.fleet.campaigns) sign it with the gateway's key, like
the config the gateway reads; the gateway's updater (edge_agent.updater) verifies the signature,
downloads the release archive from ``url``, checks it against ``sha256`` and installs it beside the
running release.  It sits in the contract because both sides build or read it, and nothing else does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contract.models import Ident, Millis
from contract.telemetry import CONTRACT_VERSION, ContractError

#: what a release version may look like (it becomes a directory name on the gateway)
AgentVersion = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,63}$")]
KIND = "agent_update"


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    v: Literal[1] = CONTRACT_VERSION
    k: Literal["agent_update"] = KIND
    gw: Ident
    version: AgentVersion
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    issued: Millis
    campaign: Annotated[int, Field(ge=1)] | None = None


def parse_agent_update(body: bytes) -> AgentUpdate:
    """The update in ``body``; ContractError naming the first field at fault."""
    try:
        return AgentUpdate.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ContractError("bad_field", f"{where}: {err['msg']}") from None
