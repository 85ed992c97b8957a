"""What the consent functions refuse with; the API maps each to its status (cloud/api/routes/consent.py)."""

from __future__ import annotations

from cloud.auth.principal import Principal


class ConsentError(Exception):
    """A consent operation refused; the message says why."""

    status = 400


class ConsentInvalid(ConsentError):
    """A request that names unknown purposes, scopes or languages, or a stale consent text."""

    status = 422


class ConsentNotFound(ConsentError):
    """No such consent or farmer in the caller's reach (also when it exists beyond it: nothing leaks)."""

    status = 404


class ConsentConflict(ConsentError):
    """Already revoked."""

    status = 409


class PinRejected(ConsentError):
    """The farmer's PIN was missing or wrong, or the farmer's account is locked or waiting after failures."""

    status = 403

    def __init__(self, message: str, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConsentRequired(ConsentError):
    """A use of a farmer's data without a valid consent: refused, and recorded as ``data_use_refused``.

    ``entry_id`` is the audit entry written in the caller's transaction; if that transaction rolls back, the
    API's handler writes the refusal again (see cloud/api/routes/consent.py), so it is never lost.
    """

    status = 403

    def __init__(self, message: str, *, principal: Principal, tenant_id: str, farmer_id: str, purpose: str,
                 scope: str, reason: str, entry_id: int | None) -> None:
        super().__init__(message)
        self.principal = principal
        self.tenant_id, self.farmer_id, self.purpose, self.scope = tenant_id, farmer_id, purpose, scope
        self.reason, self.entry_id = reason, entry_id
