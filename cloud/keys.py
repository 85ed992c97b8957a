"""Gateway and node HMAC keys at rest: AES-256-GCM under the key-encryption key (KEK).

The KEK lives outside the database (``CloudSettings.kek_bytes()``), so a dump of the database
holds no usable key.  Each blob is bound to its row by the additional authenticated data
``"<kind>:<id>:<epoch>"``: a blob copied onto another owner or epoch fails to decrypt instead of
handing one device's key to another.  Blob layout: 12-byte nonce || ciphertext || 16-byte tag.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OWNER_KINDS = ("gateway", "device")
KEY_BYTES = 32  # a new HMAC-SHA256 key: as long as the hash's block of output
MIN_KEY_BYTES = 16  # the edge agent refuses shorter keys; so do we
NONCE_BYTES = 12
TAG_BYTES = 16


class KeyCryptoError(ValueError):
    """A key cannot be encrypted or decrypted; the message says which owner and why."""


def new_key() -> bytes:
    """A fresh random HMAC key."""
    return secrets.token_bytes(KEY_BYTES)


def _aad(owner_kind: str, owner_id: str, epoch: int) -> bytes:
    if owner_kind not in OWNER_KINDS:
        raise KeyCryptoError(f"owner kind must be one of {', '.join(OWNER_KINDS)}; got {owner_kind!r}")
    if not owner_id:
        raise KeyCryptoError("owner id must not be empty")
    if epoch < 0:
        raise KeyCryptoError(f"key epoch must be >= 0; got {epoch}")
    return f"{owner_kind}:{owner_id}:{epoch}".encode()


def _cipher(kek: bytes) -> AESGCM:
    if len(kek) != 32:
        raise KeyCryptoError(f"the key-encryption key must be 32 bytes; got {len(kek)}")
    return AESGCM(kek)


def encrypt_key(kek: bytes, owner_kind: str, owner_id: str, epoch: int, key: bytes) -> bytes:
    """The blob to store in ``ft.keys.key_enc`` for ``key`` of (owner_kind, owner_id, epoch)."""
    aad = _aad(owner_kind, owner_id, epoch)
    if len(key) < MIN_KEY_BYTES:
        raise KeyCryptoError(f"{owner_kind} {owner_id!r}: key must be at least {MIN_KEY_BYTES} bytes; got {len(key)}")
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + _cipher(kek).encrypt(nonce, key, aad)


def decrypt_key(kek: bytes, owner_kind: str, owner_id: str, epoch: int, blob: bytes) -> bytes:
    """The key in ``blob``; raises :class:`KeyCryptoError` if the KEK, the owner or the epoch is not the one
    it was encrypted for, or the blob was altered."""
    aad = _aad(owner_kind, owner_id, epoch)
    if len(blob) < NONCE_BYTES + TAG_BYTES + MIN_KEY_BYTES:
        raise KeyCryptoError(f"{owner_kind} {owner_id!r} epoch {epoch}: encrypted key is truncated ({len(blob)} bytes)")
    try:
        return _cipher(kek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise KeyCryptoError(
            f"{owner_kind} {owner_id!r} epoch {epoch}: cannot decrypt the stored key "
            "(wrong key-encryption key, or the blob belongs to another owner or epoch, or was altered)"
        ) from None
