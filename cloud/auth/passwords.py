"""Password and PIN hashing (argon2id, via argon2-cffi) and the rules a new password or PIN must meet.

argon2id with RFC 9106's second recommended profile (64 MiB, 3 passes, 4 lanes): memory-hard, so
guessing a stolen hash costs an attacker memory as well as time.  Hashes are PHC strings carrying
their own parameters, so raising the cost later only needs :func:`needs_rehash` at the next sign-in.

Farmers sign in with a 6-digit PIN at a service point or on a basic phone.  A PIN has only a million
values: what protects it is the lockout (:mod:`cloud.auth.lockout`), not the hash; the hash keeps a
database leak from handing out every PIN at once.

Tests swap :data:`HASHER` for argon2's cheapest profile (hashing at full cost takes about a second on
a busy test machine); the code never reads the parameters from anywhere else.
"""

from __future__ import annotations

import functools

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = argon2.PasswordHasher.from_parameters(argon2.profiles.RFC_9106_LOW_MEMORY)

PASSWORD_MIN, PASSWORD_MAX = 10, 256
PIN_LENGTH = 6


class WeakSecret(ValueError):
    """A new password or PIN that does not meet the rules; the message says which rule."""


def hash_secret(secret: str) -> str:
    """The argon2id PHC string of a password or PIN."""
    return HASHER.hash(secret)


def verify(stored_hash: str | None, secret: str) -> bool:
    """Whether ``secret`` matches ``stored_hash``.  With no stored hash, the same work is done on a dummy
    hash and False returned, so an unknown account takes as long to refuse as a wrong password."""
    if stored_hash is None:
        _verify(_dummy_hash(HASHER), secret)
        return False
    return _verify(stored_hash, secret)


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than :data:`HASHER`'s (rehash at the next sign-in)."""
    try:
        return HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def check_password(password: str, login: str) -> None:
    """Raise :class:`WeakSecret` unless ``password`` is 10-256 characters, not the login and not one repeated
    character."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise WeakSecret(f"password: must be {PASSWORD_MIN}-{PASSWORD_MAX} characters, got {len(password)}")
    if password.casefold() == login.casefold():
        raise WeakSecret("password: must not be the login name")
    if len(set(password)) == 1:
        raise WeakSecret("password: must not be one character repeated")


def check_pin(pin: str) -> None:
    """Raise :class:`WeakSecret` unless ``pin`` is 6 digits and not trivially guessable: not one digit
    repeated (111111), not a run up or down (123456, 654321, 890123), not a repeated pair or triple
    (121212, 123123)."""
    if len(pin) != PIN_LENGTH or not pin.isascii() or not pin.isdigit():
        raise WeakSecret(f"pin: must be exactly {PIN_LENGTH} digits")
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:], strict=False)}
    if steps in ({0}, {1}, {9}):
        raise WeakSecret("pin: must not be one digit repeated or a run of digits up or down")
    if any(pin == pin[:period] * (PIN_LENGTH // period) for period in (2, 3)):
        raise WeakSecret("pin: must not be a pair or triple of digits repeated")


def _verify(stored_hash: str, secret: str) -> bool:
    try:
        return HASHER.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):  # a mismatch is a VerificationError too
        return False


@functools.cache
def _dummy_hash(hasher: argon2.PasswordHasher) -> str:
    return hasher.hash("not a password: the hash unknown accounts are checked against")
