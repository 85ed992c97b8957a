"""Connections as the services make them: role ft_app (under row-level security), never the owner.

Tests seed and inspect rows with the owner's URL (``fresh_db``: a superuser on the test server,
which bypasses row-level security); what they exercise as a service goes through these, so a
store function that does not work under the tenant policies fails its test.
"""

from __future__ import annotations

import psycopg

from cloud.config import app_url
from cloud.store import db, scope


def app_connect(owner_url: str, *, autocommit: bool = False, tenant: str | None = None) -> psycopg.Connection:
    """A connection of ft_app to ``owner_url``'s database: in platform scope for its whole session (as the
    ingest's own connections are), or, given ``tenant``, scoped to that tenant in its first transaction."""
    conn = db.connect(app_url(owner_url), autocommit=autocommit)
    if tenant is None:
        scope.platform_session(conn)
    elif autocommit:
        conn.close()
        raise ValueError("a tenant scope lasts one transaction: use autocommit=False")
    else:
        scope.tenant_scope(conn, tenant)
    return conn
