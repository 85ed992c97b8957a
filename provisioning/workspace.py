"""The technician's data folder and what lives in it: journals, the key vault, labels, firmware bundles, and
calibrations waiting for the cloud.

``FIELDTRUST_TECH_DIR`` when set, else the platform's per-user data folder (``~/.local/share/fieldtrust/
technician`` on Linux).  The folder is private (0700): the vault in it is encrypted, the journals hold no
secret but say which boards were provisioned where.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from provisioning.bundle import Bundle, BundleError, build_bundle, load_bundle
from provisioning.errors import BundleMissing
from provisioning.journal import JournalStore
from provisioning.pending import PendingConfigs
from provisioning.vault import Vault


def firmware_version() -> str:
    """The firmware release of this installation (``firmware.main.FW`` without its ``fw/`` prefix)."""
    from firmware.main import FW

    return FW.removeprefix("fw/")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls, root: Path | None = None) -> Workspace:
        env = os.environ.get("FIELDTRUST_TECH_DIR")
        folder = root or (Path(env) if env else Path(platformdirs.user_data_dir("fieldtrust")) / "technician")
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        return cls(folder)

    @property
    def journals(self) -> JournalStore:
        return JournalStore(self.root / "journal")

    @property
    def pending(self) -> PendingConfigs:
        """Calibrations waiting for ``node sync``."""
        return PendingConfigs(self.root / "pending")

    @property
    def vault_dir(self) -> Path:
        return self.root / "vault"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def private_tmp(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def vault(self, passphrase: str) -> Vault:
        return Vault(self.vault_dir, passphrase)

    def bundle(self, given: Path | None = None) -> Bundle:
        """``given`` (a bundle folder), else this installation's firmware, compiled once into the data folder."""
        try:
            if given is not None:
                return load_bundle(given)
            version = firmware_version()
            folder = self.root / "bundles" / version
            if not (folder / "manifest.json").exists():
                build_bundle(folder, version)
            return load_bundle(folder)
        except BundleError as exc:
            raise BundleMissing(str(exc)) from None
