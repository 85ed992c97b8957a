"""The authenticated caller of a request, as every route sees it (the issue-5 design, fixed for all helpers).

A principal is a user (signed in with a session), a partner's API key, or the platform admin (the
``FIELDTRUST_ADMIN_TOKEN`` bearer).  Users' scopes are derived from their roles
(:mod:`cloud.auth.scopes`); API keys carry the scopes they were created with.  Platform admins may do
everything, in every tenant.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel

Role = Literal["farmer", "clerk", "technician", "credit_officer", "ops", "tenant_admin", "platform_admin"]
#: every role, in the order above
ROLES: tuple[Role, ...] = get_args(Role)
#: the roles a user of a tenant may hold (platform admins are not users: see migration 041)
TENANT_ROLES: tuple[Role, ...] = tuple(role for role in ROLES if role != "platform_admin")


class Principal(BaseModel, frozen=True):
    kind: Literal["user", "api_key", "platform_admin"]  # platform_admin = the FIELDTRUST_ADMIN_TOKEN bearer
    id: str  # user id / api key id / "admin"
    tenant_id: str | None  # None only for platform admins
    roles: frozenset[Role]
    scopes: frozenset[str]  # API keys: as created; users: derived from roles
    farmer_id: str | None = None  # a farmer's own record (farmer users)
    source_ip: str | None = None

    def can(self, scope: str) -> bool:
        """Whether this principal holds ``scope`` (platform admins hold every scope)."""
        return self.kind == "platform_admin" or scope in self.scopes

