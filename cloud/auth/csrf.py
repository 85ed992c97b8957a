"""CSRF protection of cookie-authenticated requests: a synchronizer token tied to the session.

A browser sends the ``ft_session`` cookie with every request to the API, including ones another site
makes it send (a form posted from elsewhere; SameSite=Lax stops most, not top-level POST navigations in
every browser).  So an unsafe request (anything but GET, HEAD, OPTIONS) authenticated by the cookie must
also carry the session's CSRF token in the ``X-CSRF-Token`` header, which only the page that signed in
(or read ``GET /auth/me``) knows and which another site cannot read.  Requests with an
``Authorization`` header (apps, partners' keys) carry no ambient credential and need no token.
"""

from __future__ import annotations

import hmac

HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfError(Exception):
    """An unsafe cookie-authenticated request without the session's CSRF token."""


def check(method: str, presented: str | None, session_secret: str) -> None:
    """Raise :class:`CsrfError` unless the method is safe or ``presented`` is the session's token."""
    if method.upper() in SAFE_METHODS:
        return
    if not presented:
        raise CsrfError(f"missing {HEADER} header: a {method} with the session cookie needs the session's CSRF token")
    if not hmac.compare_digest(presented.encode(), session_secret.encode()):
        raise CsrfError(f"wrong {HEADER}: not this session's CSRF token")
