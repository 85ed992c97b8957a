"""Growing delays after failed sign-ins, per account and per source, and the lock a clerk lifts.

Per account (the login or farmer id as typed, in the named tenant, whether or not it exists, so the
answers never tell which accounts exist): the first :data:`ACCOUNT_FREE` consecutive failures cost
nothing, then each failure makes the next attempt wait 1, 2, 4, ... seconds (at most
:data:`MAX_DELAY_S`).  After :data:`LOCK_AFTER` consecutive failures the account is locked: not even the
right password opens it until a clerk of its tenant unlocks it after checking the person's identity
(:func:`unlock`, audited).  So a stranger who knows a farmer's id can slow the farmer down and, at
worst, send them to the service point; never lock them out for good, and never guess a 6-digit PIN
(10 tries per unlock out of a million).

Per source address: :data:`SOURCE_FREE` failures (a service point's tablet or a village's shared
connection signs in many people), then the same growing delays, so one source cannot try a few
passwords on each of many accounts.  A source's count is forgotten after :data:`SOURCE_FORGET` without
failures, an unlocked account's after :data:`ACCOUNT_FORGET`; a success clears the account's count
(not the source's: one valid account must not reset an attacker's source).

Attempts that arrive during a delay are refused (429, ``Retry-After``) without checking the password
and without counting.  The account rows are tenant-owned (written in the named tenant's scope); the
source rows are a platform table, since one source reaches every tenant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import psycopg

ACCOUNT_FREE = 3
LOCK_AFTER = 10
SOURCE_FREE = 20
MAX_DELAY_S = 900
ACCOUNT_FORGET = timedelta(hours=24)
SOURCE_FORGET = timedelta(hours=1)


def delay_s(failures: int, free: int) -> int:
    """The wait after ``failures`` consecutive failures: 0 for the first ``free``, then 1, 2, 4, ... capped."""
    if failures <= free:
        return 0
    return min(2 ** min(failures - free - 1, 30), MAX_DELAY_S)


@dataclass(frozen=True)
class Gate:
    """Whether a sign-in may be tried now."""

    allowed: bool
    retry_after_s: int = 0
    locked: bool = False  # the account waits for a clerk's unlock
    by: str | None = None  # "account" or "source" when not allowed


@dataclass(frozen=True)
class Failure:
    account_failures: int
    source_failures: int
    locked_now: bool  # this failure locked the account


def check(conn: psycopg.Connection, tenant_id: str, account: str, source: str | None) -> Gate:
    """The gate for one attempt (the transaction is in ``tenant_id``'s scope)."""
    row = conn.execute(
        "SELECT locked_at IS NOT NULL, extract(epoch FROM next_allowed_at - now()) FROM ft.signin_accounts"
        " WHERE tenant_id = %s AND account = %s", (tenant_id, account)).fetchone()
    if row is not None and row[0]:
        return Gate(False, locked=True, by="account")
    if row is not None and row[1] is not None and row[1] > 0:
        return Gate(False, retry_after_s=math.ceil(row[1]), by="account")
    if source is not None:
        row = conn.execute("SELECT extract(epoch FROM next_allowed_at - now()) FROM ft.signin_sources"
                           " WHERE source = %s", (source,)).fetchone()
        if row is not None and row[0] is not None and row[0] > 0:
            return Gate(False, retry_after_s=math.ceil(row[0]), by="source")
    return Gate(True)


def failed(conn: psycopg.Connection, tenant_id: str, account: str, source: str | None) -> Failure:
    """Count a failed attempt against the account and the source, and set their next allowed times."""
    row = conn.execute(
        """
        INSERT INTO ft.signin_accounts AS a (tenant_id, account, failures, last_failure_at)
        VALUES (%(tenant)s, %(account)s, 1, now())
        ON CONFLICT (tenant_id, account) DO UPDATE SET
            failures = CASE WHEN a.locked_at IS NULL AND a.last_failure_at < now() - %(forget)s THEN 1
                            ELSE a.failures + 1 END,
            last_failure_at = now()
        RETURNING failures, locked_at IS NOT NULL
        """, {"tenant": tenant_id, "account": account, "forget": ACCOUNT_FORGET}).fetchone()
    assert row is not None
    account_failures, was_locked = row
    lock = account_failures >= LOCK_AFTER
    conn.execute(
        "UPDATE ft.signin_accounts SET next_allowed_at = now() + %s,"
        " locked_at = CASE WHEN %s THEN coalesce(locked_at, now()) END WHERE tenant_id = %s AND account = %s",
        (timedelta(seconds=delay_s(account_failures, ACCOUNT_FREE)), lock, tenant_id, account))
    source_failures = 0
    if source is not None:
        row = conn.execute(
            """
            INSERT INTO ft.signin_sources AS s (source, failures, last_failure_at) VALUES (%(source)s, 1, now())
            ON CONFLICT (source) DO UPDATE SET
                failures = CASE WHEN s.last_failure_at < now() - %(forget)s THEN 1 ELSE s.failures + 1 END,
                last_failure_at = now()
            RETURNING failures
            """, {"source": source, "forget": SOURCE_FORGET}).fetchone()
        assert row is not None
        source_failures = row[0]
        conn.execute("UPDATE ft.signin_sources SET next_allowed_at = now() + %s WHERE source = %s",
                     (timedelta(seconds=delay_s(source_failures, SOURCE_FREE)), source))
    return Failure(account_failures, source_failures, locked_now=lock and not was_locked)


def succeeded(conn: psycopg.Connection, tenant_id: str, account: str) -> None:
    """A successful sign-in clears the account's failures."""
    conn.execute("DELETE FROM ft.signin_accounts WHERE tenant_id = %s AND account = %s", (tenant_id, account))


def unlock(conn: psycopg.Connection, tenant_id: str, accounts: list[str]) -> list[str]:
    """Clear the failures and lock of a user's accounts (login and farmer id); those that were locked."""
    rows = conn.execute(
        "DELETE FROM ft.signin_accounts WHERE tenant_id = %s AND account = ANY(%s) RETURNING account, locked_at",
        (tenant_id, accounts)).fetchall()
    return sorted(account for account, locked_at in rows if locked_at is not None)


def locked(conn: psycopg.Connection, tenant_id: str) -> set[str]:
    """The tenant's locked accounts (logins and ``farmer:<id>``)."""
    return {r[0] for r in conn.execute(
        "SELECT account FROM ft.signin_accounts WHERE tenant_id = %s AND locked_at IS NOT NULL", (tenant_id,))}


def farmer_account(farmer_id: str) -> str:
    """The account name PIN sign-ins of a farmer are counted under."""
    return f"farmer:{farmer_id}"
