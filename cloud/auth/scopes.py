"""What each role may do: the one table of scopes, and the scopes of each role.

A route asks for scopes (``cloud.api.deps.require("registry:read")``), never for roles, so a partner's API
key and a user are checked the same way.  Users get the union of their roles' scopes; API keys get the
scopes named when they were created, from :data:`API_KEY_SCOPES` (a key never administers accounts, so a
leaked key cannot mint more keys or users).  Platform admins hold every scope, in every tenant.

Farmers' scopes are *self* scopes: they reach the farmer's own record only (``Principal.farmer_id``).
Routes serving a farmer's data check :func:`self_only` and compare the farmer id; the scope alone does
not say "any farmer of the tenant" for them.

``users:unlock`` is one scope beyond the shared design's list: a service-point clerk unlocks a farmer's
account after checking the farmer's identity, without being a tenant admin.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloud.auth.principal import Principal, Role

#: every scope, with what it allows
SCOPES: dict[str, str] = {
    "registry:read": "read farmers, farms, fields, gateways and devices",
    "registry:write": "register and change farmers, farms, fields, gateways and devices",
    "devices:admin": "device keys, claim codes, configuration and maintenance of devices",
    "series:read": "read sensor time series (farm data: audited, needs the farmer's consent for staff)",
    "credit:apply": "file a credit application (farmers: their own)",
    "credit:read": "read credit applications and assessments",
    "credit:decide": "decide credit applications",
    "consent:manage": "record and revoke farmers' consents (confirmed with the farmer's PIN)",
    "audit:read": "read the tenant's audit log",
    "fleet:read": "fleet status, alerts and OTA campaigns",
    "fleet:write": "alert rules, silences, remote configuration and OTA campaigns",
    "usage:read": "the tenant's metered usage",
    "users:admin": "invite users, change their roles, disable them; create and revoke API keys",
    "users:unlock": "unlock an account locked after failed sign-ins, after checking the person's identity",
}

_ROLE_SCOPES: dict[Role, frozenset[str]] = {
    # their own farm, series, credit applications and consents (self scopes, see the module docstring)
    "farmer": frozenset({"registry:read", "series:read", "credit:apply", "consent:manage"}),
    # a service point assisting the tenant's farmers: registers them, files for them, records consents, unlocks
    "clerk": frozenset({"registry:read", "registry:write", "credit:apply", "consent:manage", "users:unlock"}),
    "technician": frozenset({"registry:read", "registry:write", "devices:admin", "fleet:read"}),
    "credit_officer": frozenset({"registry:read", "series:read", "credit:apply", "credit:read", "credit:decide"}),
    "ops": frozenset({"registry:read", "devices:admin", "fleet:read", "fleet:write", "usage:read"}),
    "tenant_admin": frozenset(SCOPES),
    "platform_admin": frozenset(SCOPES),
}
#: roles whose scopes reach only the principal's own farmer record
SELF_ONLY_ROLES: frozenset[Role] = frozenset({"farmer"})
#: the scopes an API key may be given
API_KEY_SCOPES: frozenset[str] = frozenset(SCOPES) - {"users:admin", "users:unlock"}


def scopes_for(roles: Iterable[Role]) -> frozenset[str]:
    """The union of the roles' scopes."""
    return frozenset().union(*(_ROLE_SCOPES[role] for role in roles))


def self_only(principal: Principal) -> bool:
    """Whether the principal reaches only its own farmer record (a farmer and nothing more)."""
    return principal.kind == "user" and bool(principal.roles) and principal.roles <= SELF_ONLY_ROLES


def check_api_key_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """``scopes`` as a set; ValueError naming any that is unknown or not for API keys."""
    wanted = frozenset(scopes)
    if not wanted:
        raise ValueError("scopes: give at least one")
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"scopes: unknown {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    refused = sorted(wanted - API_KEY_SCOPES)
    if refused:
        raise ValueError(f"scopes: {', '.join(refused)} cannot be given to an API key")
    return wanted


def admin_principal(source_ip: str | None = None) -> Principal:
    """The principal of the admin-token bearer: every scope, no tenant."""
    return Principal(kind="platform_admin", id="admin", tenant_id=None, roles=frozenset({"platform_admin"}),
                     scopes=_ROLE_SCOPES["platform_admin"], source_ip=source_ip)


def user_principal(user_id: str, tenant_id: str, roles: Iterable[str], farmer_id: str | None,
                   source_ip: str | None) -> Principal:
    """The principal of a signed-in user: scopes from the roles the database holds for them."""
    role_set: frozenset[Role] = frozenset(roles)  # type: ignore[arg-type]  # the column's CHECK allows only Roles
    return Principal(kind="user", id=user_id, tenant_id=tenant_id, roles=role_set, scopes=scopes_for(role_set),
                     farmer_id=farmer_id, source_ip=source_ip)
