"""The frames the cloud signs for a node: its config and its OTA manifest, exactly as the node verifies them.

A node holds one secret, its HMAC key, so the cloud signs what it sends the node with that key
(``contract.telemetry.sign``).  The node's acceptance rules live in ``firmware/config.py`` and
``firmware/ota.py``, which also run under CPython: every frame built here is first run through the
node's own verifier (``verify_config`` / ``verify_manifest``), so the cloud never stores, let alone
publishes, a frame the node would refuse, and there is no second copy of the node's bounds to drift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cloud.store.registry import Invalid
from contract import telemetry
from firmware import config as node_config
from firmware import ota as node_ota

#: a node's config store keeps the frame in one erase block (4096 bytes) less its 10-byte record header
MAX_CONFIG_FRAME_BYTES = 4096 - 10
#: the longest node id, for checking that a release's manifest fits a frame whatever node it goes to
_LONGEST_ID = "n" * 64


@dataclass(frozen=True)
class FirmwareFile:
    """One file of a release, as the manifest names it and the gateway caches it (by SHA-256)."""

    path: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def entry(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": len(self.content)}


def config_frame(key: bytes, node_id: str, version: int, issued_ms: int, cfg: dict[str, object]) -> bytes:
    """The signed contract ``config`` frame for ``node_id``; Invalid (with the node's reason) if it would refuse it."""
    frame = telemetry.sign(key, node_config.config_body(node_id, version, issued_ms, cfg))
    if len(frame) > MAX_CONFIG_FRAME_BYTES:
        raise Invalid(f"config for {node_id!r} is {len(frame)} bytes signed; a node keeps at most "
                      f"{MAX_CONFIG_FRAME_BYTES}")
    try:
        node_config.verify_config(frame, key, node_id, version - 1)
    except node_config.ConfigRefused as exc:
        raise Invalid(f"config for {node_id!r} refused by the node's rules: {exc}") from None
    return frame


def manifest_body(node_id: str, version: int, files: Sequence[dict[str, object]]) -> bytes:
    """The OTA manifest body of ``firmware/ota.py``: target node, build number, files (path, sha256, size)."""
    return telemetry.encode_body(
        {"v": telemetry.CONTRACT_VERSION, "k": node_ota.KIND_OTA, "target": node_id, "version": version,
         "files": [{"path": f["path"], "sha256": f["sha256"], "size": f["size"]} for f in files]}
    )


def ota_frame(key: bytes, node_id: str, version: int, files: Sequence[dict[str, object]]) -> bytes:
    """The signed OTA manifest frame for ``node_id``; Invalid (with the node's reason) if it would refuse it."""
    frame = telemetry.sign(key, manifest_body(node_id, version, files))
    _check_manifest(frame, key, node_id, version)
    return frame


def check_release(version: int, files: Sequence[FirmwareFile]) -> list[dict[str, object]]:
    """The manifest entries of a release, checked by the node's own rules for any node id; Invalid otherwise."""
    if not files:
        raise Invalid(f"firmware release {version}: no files")
    for f in files:
        if len(f.content) > node_ota.MAX_FILE_BYTES:
            raise Invalid(f"firmware release {version}: {f.path!r} is {len(f.content)} bytes; a node takes at most "
                          f"{node_ota.MAX_FILE_BYTES} per file")
    entries = [f.entry() for f in files]
    probe_key = bytes(32)  # any key: the signature is not what is checked here
    _check_manifest(telemetry.sign(probe_key, manifest_body(_LONGEST_ID, version, entries)), probe_key, _LONGEST_ID,
                    version, what=f"firmware release {version}")
    return entries


def _check_manifest(frame: bytes, key: bytes, node_id: str, version: int, what: str = "") -> None:
    what = what or f"OTA manifest for {node_id!r}"
    if len(frame) > telemetry.MAX_NODE_FRAME_BYTES:
        raise Invalid(f"{what}: the signed manifest is {len(frame)} bytes; a node takes at most "
                      f"{telemetry.MAX_NODE_FRAME_BYTES} (fewer or shorter paths)")
    try:
        node_ota.verify_manifest(frame, key, node_id, version - 1)
    except node_ota.OtaRefused as exc:
        raise Invalid(f"{what} refused by the node's rules: {exc}") from None
