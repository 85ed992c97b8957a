"""Two changes the console offers that cloud/fleet has no function for yet: resolving an alert by hand, and
halting a campaign by hand with a reason.

They belong next to their siblings (``cloud.fleet.alerts.acknowledge``, ``cloud.fleet.campaigns.pause``),
where they should move; they are here because that package belongs to another piece of work.  Each is one
guarded UPDATE in the caller's transaction, with the same errors as the siblings (NotFound, Conflict).

* An alert resolved by hand is closed now.  No webhook is sent (the person who resolved it knows); if the
  rule's condition still holds, its next evaluation opens a new alert (the one-open-alert index allows it).
* A halted campaign sends nothing more, like one the failure limit halted; :func:`cloud.fleet.campaigns.resume`
  runs it again.  Its reason is shown on the campaign's page.
"""

from __future__ import annotations

import psycopg

from cloud.fleet import alerts, campaigns
from cloud.store.registry import Conflict

HALTABLE = ("running", "paused")


def resolve_alert(conn: psycopg.Connection, tenant: str, alert_id: int) -> alerts.Alert:
    alert = alerts.get_alert(conn, tenant, alert_id)
    if alert.state == "resolved":
        raise Conflict(f"alert {alert_id} is resolved already")
    conn.execute("UPDATE ft.alerts SET state = 'resolved', resolved_at = now() WHERE tenant_id = %s AND id = %s"
                 " AND state <> 'resolved'", (tenant, alert_id))
    return alerts.get_alert(conn, tenant, alert_id)


def halt_campaign(conn: psycopg.Connection, tenant: str, campaign_id: int, reason: str) -> campaigns.Campaign:
    campaign = campaigns.get_campaign(conn, tenant, campaign_id)
    if campaign.state not in HALTABLE:
        raise Conflict(f"campaign {campaign_id} is {campaign.state}; only a running or paused one can be halted")
    conn.execute("UPDATE ft.campaigns SET state = 'halted', halted_reason = %s, updated_at = now()"
                 " WHERE tenant_id = %s AND id = %s", (reason, tenant, campaign_id))
    return campaigns.get_campaign(conn, tenant, campaign_id)
