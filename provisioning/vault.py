"""New device keys on the technician's laptop, encrypted at rest until the cloud and the board both have them.

A node's key is generated on the laptop, so it exists before the cloud has registered it: offline
(the village has no signal), or between registering and writing the board (unplugged halfway).  Until
the key is where it belongs it waits here, never in clear on disk:

* ``vault.json`` holds a random salt, the scrypt cost and a check value: the passphrase (prompted, or
  ``FIELDTRUST_VAULT_PASSPHRASE``) gives one AES-256 key through scrypt, and a wrong passphrase is
  refused at once (:class:`VaultLocked`) instead of sealing keys nobody can open later.
* ``<device>.vault`` holds one entry: AES-GCM (a fresh 96-bit nonce each time) over the key and the
  registration the cloud must receive, the device and tenant bound in as associated data, and a clear
  ``state``: ``held`` while provisioning runs, ``pending-sync`` when the registration waits for
  ``fieldtrust node sync``.
* :meth:`Vault.wipe` overwrites an entry with random bytes, syncs it to disk, then deletes it.  (On
  flash storage a filesystem may keep old blocks elsewhere; full-disk encryption covers those.)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from provisioning.errors import VaultLocked

STATES = ("held", "pending-sync")
#: scrypt cost: 2**15 x 8 x 128 bytes = 32 MiB of memory, about 0.1 s on a laptop
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_CHECK = b"fieldtrust vault v1"
_HEADER = "vault.json"


@dataclass(frozen=True)
class Entry:
    device_id: str
    tenant: str
    state: str
    created_at: str
    secret: dict[str, Any]
    """``key_hex`` and ``registration`` (farm_id, gateway_id, spec, event_id, ...)"""


class Vault:
    """The encrypted entries in ``directory``, opened with ``passphrase``."""

    def __init__(self, directory: Path, passphrase: str) -> None:
        if not passphrase:
            raise VaultLocked("the key vault needs a passphrase (FIELDTRUST_VAULT_PASSPHRASE or the prompt)")
        self.directory = directory
        self._aead = AESGCM(self._derive(passphrase))

    # -- the vault-wide key ------------------------------------------------------------------------

    def _derive(self, passphrase: str) -> bytes:
        header = self.directory / _HEADER
        if header.exists():
            meta = json.loads(header.read_text())
            key = _scrypt(passphrase, bytes.fromhex(meta["salt"]), meta["n"], meta["r"], meta["p"])
            try:
                AESGCM(key).decrypt(bytes.fromhex(meta["check_nonce"]), bytes.fromhex(meta["check"]), _CHECK)
            except InvalidTag:
                raise VaultLocked(f"wrong passphrase for the key vault in {self.directory}") from None
            return key
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        salt, nonce = os.urandom(16), os.urandom(12)
        key = _scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        meta = {"v": 1, "kdf": "scrypt", "salt": salt.hex(), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                "check_nonce": nonce.hex(), "check": AESGCM(key).encrypt(nonce, _CHECK, _CHECK).hex()}
        write_private(header, json.dumps(meta).encode())
        return key

    # -- entries -------------------------------------------------------------------------------------

    def path(self, device_id: str) -> Path:
        return self.directory / f"{device_id}.vault"

    def put(self, device_id: str, tenant: str, secret: dict[str, Any], state: str = "held") -> Entry:
        if state not in STATES:
            raise ValueError(f"vault state must be one of {STATES}; got {state!r}")
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(secret).encode(), _aad(device_id, tenant))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"v": 1, "device_id": device_id, "tenant": tenant, "state": state, "created_at": created,
                  "nonce": nonce.hex(), "sealed": sealed.hex()}
        write_private(self.path(device_id), json.dumps(record).encode())
        return Entry(device_id, tenant, state, created, secret)

    def get(self, device_id: str) -> Entry | None:
        path = self.path(device_id)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        try:
            plain = self._aead.decrypt(bytes.fromhex(record["nonce"]), bytes.fromhex(record["sealed"]),
                                       _aad(record["device_id"], record["tenant"]))
        except InvalidTag:
            raise VaultLocked(f"{path}: cannot be decrypted (another vault's passphrase, or altered)") from None
        return Entry(record["device_id"], record["tenant"], record["state"], record["created_at"], json.loads(plain))

    def set_state(self, device_id: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"vault state must be one of {STATES}; got {state!r}")
        path = self.path(device_id)
        record = json.loads(path.read_text())
        record["state"] = state
        write_private(path, json.dumps(record).encode())

    def entries(self, state: str | None = None) -> list[str]:
        """Device ids with an entry (in ``state``), without decrypting."""
        found = []
        for path in sorted(self.directory.glob("*.vault")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(path.read_text())
                if state is None or record["state"] == state:
                    found.append(record["device_id"])
        return found

    def wipe(self, device_id: str) -> bool:
        """Overwrite the entry with random bytes, sync, delete; False when there was none."""
        return wipe_file(self.path(device_id))


def wipe_file(path: Path) -> bool:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    with open(path, "r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _aad(device_id: str, tenant: str) -> bytes:
    return f"fieldtrust-vault/1:{tenant}:{device_id}".encode()


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
