"""OTA campaigns: one firmware release to a tenant's nodes, or an agent release to its gateways, in stages that halt
when too many fail.  Reading needs ``fleet:read``; creating, pausing, resuming and cancelling ``fleet:write`` (audited).
The fleet service advances running campaigns; the downlink publisher (nodes) and the fleet service (gateways) deliver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, status
from pydantic import BaseModel

from cloud.api.deps import KekDep, TenantConnDep, require
from cloud.auth.principal import Principal
from cloud.fleet import campaigns
from cloud.store import registry

router = APIRouter(prefix="/tenants/{tenant}/campaigns", tags=["campaigns"])
FleetReader = Annotated[Principal, require("fleet:read")]
FleetWriter = Annotated[Principal, require("fleet:write")]


class CampaignStatus(BaseModel):
    campaign: campaigns.Campaign
    counts: dict[str, int]
    failure_rate: float


def _status(conn: psycopg.Connection, campaign: campaigns.Campaign) -> CampaignStatus:
    progress = campaigns.progress(conn, campaign.id)
    return CampaignStatus(campaign=campaign, counts=progress.counts, failure_rate=progress.failure_rate)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CampaignStatus,
             summary="Start a campaign: its targets are chosen now and its first stage is sent")
def create_campaign(tenant: str, body: campaigns.CampaignCreate, principal: FleetWriter, conn: TenantConnDep,
                    kek: KekDep) -> CampaignStatus:
    campaign = campaigns.create_campaign(conn, tenant, body, kek, f"{principal.kind}:{principal.id}",
                                         datetime.now(UTC))
    registry.audit(conn, principal, "campaign.created", "campaign", str(campaign.id), tenant,
                   detail=body.model_dump(exclude_none=True))
    return _status(conn, campaign)


@router.get("", response_model=list[campaigns.Campaign], summary="The tenant's campaigns, newest first")
def read_campaigns(tenant: str, principal: FleetReader, conn: TenantConnDep) -> list[campaigns.Campaign]:
    return campaigns.list_campaigns(conn, tenant)


@router.get("/{campaign_id}", response_model=CampaignStatus, summary="A campaign with its targets counted by status")
def read_campaign(tenant: str, campaign_id: int, principal: FleetReader, conn: TenantConnDep) -> CampaignStatus:
    return _status(conn, campaigns.get_campaign(conn, tenant, campaign_id))


@router.get("/{campaign_id}/targets", response_model=list[campaigns.Target],
            summary="Every target's stage and status")
def read_targets(tenant: str, campaign_id: int, principal: FleetReader,
                 conn: TenantConnDep) -> list[campaigns.Target]:
    return campaigns.list_targets(conn, tenant, campaign_id)


def _change(conn: TenantConnDep, principal: Principal, tenant: str, campaign: campaigns.Campaign,
            action: str) -> CampaignStatus:
    registry.audit(conn, principal, f"campaign.{action}", "campaign", str(campaign.id), tenant)
    return _status(conn, campaign)


@router.post("/{campaign_id}/pause", response_model=CampaignStatus,
             summary="Pause a running campaign: nothing more is sent")
def pause_campaign(tenant: str, campaign_id: int, principal: FleetWriter, conn: TenantConnDep) -> CampaignStatus:
    return _change(conn, principal, tenant, campaigns.pause(conn, tenant, campaign_id), "paused")


@router.post("/{campaign_id}/resume", response_model=CampaignStatus,
             summary="Resume a paused or halted campaign (the stage's clock starts anew)")
def resume_campaign(tenant: str, campaign_id: int, principal: FleetWriter, conn: TenantConnDep) -> CampaignStatus:
    return _change(conn, principal, tenant, campaigns.resume(conn, tenant, campaign_id), "resumed")


@router.post("/{campaign_id}/cancel", response_model=CampaignStatus,
             summary="Cancel a campaign: nothing more is sent, what was sent stays")
def cancel_campaign(tenant: str, campaign_id: int, principal: FleetWriter, conn: TenantConnDep) -> CampaignStatus:
    return _change(conn, principal, tenant, campaigns.cancel(conn, tenant, campaign_id), "cancelled")
