"""OTA files on the gateway's disk, named by their SHA-256: what the nodes download from the gateway.

Content addressing makes the cache simple to trust: a file is stored only when its bytes hash to
its name, so a name says everything about the content, whoever sent it; the same file named by
several manifests is stored once.  Writes go to a temporary file, are fsynced and renamed, so a
power cut leaves the old state or the new file, never half of one; at start every file is hashed
again and one that does not match (a bad sector) is removed, to be fetched again.

The folder is bounded (``max_bytes``).  Room is made by evicting the least recently stored files
that no current manifest names; a file the manifests still need is never evicted, and a new file
that does not fit even then is refused (counted), so the manifest naming it stays withheld.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
STORED, PRESENT, BAD_HASH, NO_ROOM = "stored", "present", "bad_hash", "no_room"
_TMP_PREFIX = ".tmp-"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_name(sha: str) -> None:
    if not SHA256_HEX.match(sha):
        raise ValueError(f"not a SHA-256 in lower-case hex: {sha!r}")


class OtaCache:
    """A bounded, content-addressed folder of files; safe to use from several threads."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive; got {max_bytes}")
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # in the order stored (oldest first): the eviction order
        folder.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        entries = []
        for path in self.folder.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                path.unlink(missing_ok=True)  # a write cut short: never renamed, never valid
            elif SHA256_HEX.match(path.name) and path.is_file():
                if sha256_hex(path.read_bytes()) != path.name:
                    log.warning("OTA cache: %s does not match its name any more; removed", path.name)
                    path.unlink(missing_ok=True)
                    continue
                entries.append((path.stat().st_mtime_ns, path.name, path.stat().st_size))
        for _mtime, name, size in sorted(entries):
            self._sizes[name] = size

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def names(self) -> set[str]:
        with self._lock:
            return set(self._sizes)

    def has(self, sha: str) -> bool:
        with self._lock:
            return sha in self._sizes

    def size(self, sha: str) -> int | None:
        with self._lock:
            return self._sizes.get(sha)

    def path(self, sha: str) -> Path:
        """Where the file named ``sha`` is (check :meth:`has` first); ValueError for anything but 64 hex."""
        _check_name(sha)
        return self.folder / sha

    def put(self, sha: str, data: bytes, keep: Collection[str] = ()) -> str:
        """Store ``data`` as ``sha``: stored, present (already there), bad_hash, or no_room.

        ``keep`` names the files current manifests refer to: they are not evicted to make room.
        """
        _check_name(sha)
        if sha256_hex(data) != sha:
            return BAD_HASH
        with self._lock:
            if sha in self._sizes:
                return PRESENT
            if len(data) > self.max_bytes or not self._make_room(len(data), set(keep)):
                return NO_ROOM
            self._write(sha, data)
            self._sizes[sha] = len(data)
        return STORED

    def _make_room(self, need: int, keep: set[str]) -> bool:
        """Evict unreferenced files, oldest first, until ``need`` more bytes fit (call with the lock held)."""
        free = self.max_bytes - sum(self._sizes.values())
        if free >= need:
            return True
        evictable = [name for name in self._sizes if name not in keep]
        if free + sum(self._sizes[name] for name in evictable) < need:
            return False
        for name in evictable:
            (self.folder / name).unlink(missing_ok=True)
            free += self._sizes.pop(name)
            log.info("OTA cache: evicted %s (no manifest names it) to make room", name)
            if free >= need:
                break
        return True

    def _write(self, sha: str, data: bytes) -> None:
        tmp = self.folder / f"{_TMP_PREFIX}{sha}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / sha)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves nothing half-written behind
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
