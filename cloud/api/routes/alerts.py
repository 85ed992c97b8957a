"""Alert rules, alerts, silences and webhooks of a tenant.  Reading needs ``fleet:read``, changing ``fleet:write``;
every change is audited.  The fleet service (``fieldtrust cloud fleet``) evaluates the rules and sends the webhooks.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import SettingsDep, TenantConnDep, require
from cloud.auth.principal import Principal
from cloud.fleet import alerts, rules, webhooks
from cloud.store import registry

router = APIRouter(prefix="/tenants/{tenant}", tags=["alerts"])
FleetReader = Annotated[Principal, require("fleet:read")]
FleetWriter = Annotated[Principal, require("fleet:write")]
CREATED = status.HTTP_201_CREATED
NO_CONTENT = status.HTTP_204_NO_CONTENT


def _by(principal: Principal) -> str:
    return f"{principal.kind}:{principal.id}"


def _check_subject(conn: TenantConnDep, tenant: str, kind: str | None, subject_id: str | None) -> None:
    """404 unless a rule's or silence's subject is one of the tenant's gateways or devices (never another
    tenant's, nor one that does not exist)."""
    if subject_id is not None:
        (registry.get_gateway if kind == "gateway" else registry.get_device)(conn, tenant, subject_id)


# -- rules ----------------------------------------------------------------------------------------------


@router.post("/alert-rules", status_code=CREATED, response_model=rules.Rule, summary="Create an alert rule")
def create_rule(tenant: str, body: rules.RuleCreate, principal: FleetWriter, conn: TenantConnDep) -> rules.Rule:
    _check_subject(conn, tenant, body.subject_kind, body.subject_id)
    rule = rules.create_rule(conn, tenant, body, _by(principal))
    registry.audit(conn, principal, "alert_rule.created", "alert_rule", str(rule.id), tenant,
                   detail=body.model_dump())
    return rule


@router.get("/alert-rules", response_model=list[rules.Rule], summary="The tenant's alert rules")
def read_rules(tenant: str, principal: FleetReader, conn: TenantConnDep) -> list[rules.Rule]:
    return rules.list_rules(conn, tenant)


@router.patch("/alert-rules/{rule_id}", response_model=rules.Rule, summary="Switch a rule on or off, or its severity")
def update_rule(tenant: str, rule_id: int, body: rules.RuleUpdate, principal: FleetWriter,
                conn: TenantConnDep) -> rules.Rule:
    rule = rules.update_rule(conn, tenant, rule_id, body)
    registry.audit(conn, principal, "alert_rule.updated", "alert_rule", str(rule_id), tenant,
                   detail=body.model_dump(exclude_none=True))
    return rule


@router.delete("/alert-rules/{rule_id}", status_code=NO_CONTENT, summary="Remove a rule with its alerts and silences")
def delete_rule(tenant: str, rule_id: int, principal: FleetWriter, conn: TenantConnDep) -> None:
    rules.delete_rule(conn, tenant, rule_id)
    registry.audit(conn, principal, "alert_rule.deleted", "alert_rule", str(rule_id), tenant)


# -- alerts ---------------------------------------------------------------------------------------------


@router.get("/alerts", response_model=list[alerts.Alert], summary="Alerts, newest first (active ones by default)")
def read_alerts(tenant: str, principal: FleetReader, conn: TenantConnDep, state: alerts.AlertState | None = None,
                include_resolved: bool = False) -> list[alerts.Alert]:
    return alerts.list_alerts(conn, tenant, state=state, active_only=state is None and not include_resolved)


@router.post("/alerts/{alert_id}/acknowledge", response_model=alerts.Alert,
             summary="Acknowledge an alert (it still resolves by itself when the condition clears)")
def acknowledge(tenant: str, alert_id: int, principal: FleetWriter, conn: TenantConnDep) -> alerts.Alert:
    alert = alerts.acknowledge(conn, tenant, alert_id, _by(principal))
    registry.audit(conn, principal, "alert.acknowledged", "alert", str(alert_id), tenant)
    return alert


# -- silences -------------------------------------------------------------------------------------------


@router.post("/silences", status_code=CREATED, response_model=alerts.Silence,
             summary="Silence alerts for a maintenance window (recorded, not notified)")
def create_silence(tenant: str, body: alerts.SilenceCreate, principal: FleetWriter,
                   conn: TenantConnDep) -> alerts.Silence:
    _check_subject(conn, tenant, body.subject_kind, body.subject_id)
    silence = alerts.create_silence(conn, tenant, body, _by(principal))
    registry.audit(conn, principal, "silence.created", "silence", str(silence.id), tenant, detail=body.model_dump())
    return silence


@router.get("/silences", response_model=list[alerts.Silence], summary="The tenant's silences")
def read_silences(tenant: str, principal: FleetReader, conn: TenantConnDep) -> list[alerts.Silence]:
    return alerts.list_silences(conn, tenant)


@router.delete("/silences/{silence_id}", status_code=NO_CONTENT, summary="End a silence now")
def end_silence(tenant: str, silence_id: int, principal: FleetWriter, conn: TenantConnDep) -> None:
    alerts.end_silence(conn, tenant, silence_id)
    registry.audit(conn, principal, "silence.ended", "silence", str(silence_id), tenant)


# -- webhooks -------------------------------------------------------------------------------------------


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2000, description="http(s); no local or private address outside dev mode")]
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = Field(
        default=None, description="the HMAC key of the signatures (default: generated, returned once)")


class WebhookCreated(BaseModel):
    webhook: webhooks.Webhook
    secret: str = Field(description="shown this once: X-FieldTrust-Signature is sha256=HMAC-SHA256(secret, body)")


@router.post("/webhooks", status_code=CREATED, response_model=WebhookCreated,
             summary="Register a webhook for alert events; its secret is returned this once")
def create_webhook(tenant: str, body: WebhookCreate, principal: FleetWriter, conn: TenantConnDep,
                   settings: SettingsDep) -> WebhookCreated:
    hook, secret = webhooks.create_webhook(conn, tenant, body.url, _by(principal), dev_mode=settings.dev_mode,
                                           secret=body.secret)
    registry.audit(conn, principal, "webhook.created", "webhook", str(hook.id), tenant, detail={"url": body.url})
    return WebhookCreated(webhook=hook, secret=secret)


@router.get("/webhooks", response_model=list[webhooks.Webhook], summary="The tenant's webhooks")
def read_webhooks(tenant: str, principal: FleetReader, conn: TenantConnDep) -> list[webhooks.Webhook]:
    return webhooks.list_webhooks(conn, tenant)


@router.delete("/webhooks/{webhook_id}", status_code=NO_CONTENT, summary="Remove a webhook and its delivery log")
def delete_webhook(tenant: str, webhook_id: int, principal: FleetWriter, conn: TenantConnDep) -> None:
    webhooks.delete_webhook(conn, tenant, webhook_id)
    registry.audit(conn, principal, "webhook.deleted", "webhook", str(webhook_id), tenant)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[webhooks.Delivery],
            summary="A webhook's delivery log, newest first")
def read_deliveries(tenant: str, webhook_id: int, principal: FleetReader,
                    conn: TenantConnDep) -> list[webhooks.Delivery]:
    webhooks.get_webhook(conn, tenant, webhook_id)
    return webhooks.list_deliveries(conn, tenant, webhook_id)
