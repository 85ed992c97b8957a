"""Random tokens and their stored digests: sessions, invites and API keys share these two functions.

Every token is 256 random bits, so a plain SHA-256 digest is enough to store it: nobody can search a
space of 2**256 for a preimage, however fast the hash (a slow KDF is for low-entropy human passwords,
:mod:`cloud.auth.passwords`).  A fast digest lets every request check its token in microseconds.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token(prefix: str) -> str:
    """``prefix`` followed by 256 random bits, URL-safe base64 (43 characters)."""
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """The SHA-256 digest a token is stored and looked up by."""
    return hashlib.sha256(token.encode()).digest()
