"""Over-the-air updates, file by file: signed manifest, staged download, SHA-256 check, switch, rollback.

The cloud signs a manifest for this node with the device key (the same HMAC-SHA256 frame as every
message; the node can verify it because it holds that key)::

    {"v":1,"k":"ota","target":"node-7","version":12,
     "files":[{"path":"firmware/cycle.py","sha256":"<64 hex>","size":5120}]}

``version`` is a build number that only grows: a replayed older manifest is refused.  The steps:

1. ``verify_manifest`` checks MAC, target, version and every path (relative, no ``..``, never
   into the updater's own directory) before anything is downloaded.
2. ``Updater.stage`` downloads each file into ``<root>/.ota/stage/`` through ``fetch(sha256,
   offset, n)`` in small chunks, hashing as it writes; a wrong size or hash discards the stage.
   Files are fetched by content (the gateway caches and serves them as ``/ota/<sha256>``,
   ``edge_agent/ota_server.py``), so one cached file serves every node and path that names it.
3. ``Updater.switch`` notes the trial in ``.ota/state.json`` *first*, then moves each live file to
   ``.ota/prev/`` and the staged one into place.
4. At every boot ``Updater.boot`` counts trial boots; ``mark_good`` (after a healthy cycle)
   drops the backups; a trial that does not get there in ``MAX_TRIAL_BOOTS`` boots is rolled
   back (backups restored, new files removed), also after a power cut halfway through a switch.

Boards with A/B app partitions (``esp32.Partition``) confirm the running image through the hal
hook ``mark_app_valid`` passed to the updater.
"""

import binascii
import hashlib
import json
import os

from contract import telemetry

KIND_OTA = "ota"
MAX_FILES = 32
MAX_FILE_BYTES = 512 * 1024
MAX_TRIAL_BOOTS = 2
CHUNK = 1024
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
_HEX = "0123456789abcdef"


class OtaRefused(ValueError):
    """A manifest or download the node will not install; ``reason`` is a short code reported upstream."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _safe_path(path):
    if not isinstance(path, str) or not 1 <= len(path) <= 128 or path.startswith("/"):
        return False
    parts = path.split("/")
    if parts[0] == ".ota":
        return False
    return all(part not in ("", ".", "..") and all(c in _PATH_CHARS for c in part) for part in parts)


def verify_manifest(frame, key, node_id, current_version):
    """The manifest dict from a signed frame; OtaRefused for anything that must not be installed."""
    try:
        obj = json.loads(telemetry.verify(frame, key).decode())
    except telemetry.ContractError as exc:
        raise OtaRefused(exc.reason) from None
    except (ValueError, UnicodeError):
        raise OtaRefused("bad_json") from None
    if not isinstance(obj, dict) or obj.get("v") != 1 or obj.get("k") != KIND_OTA:
        raise OtaRefused("not_ota")
    if obj.get("target") != node_id:
        raise OtaRefused("wrong_target", repr(obj.get("target")))
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise OtaRefused("bad_version", repr(version))
    if version <= current_version:
        raise OtaRefused("stale_version", "%d <= current %d" % (version, current_version))
    files = obj.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise OtaRefused("bad_files", "1..%d files" % MAX_FILES)
    seen = []
    for entry in files:
        if not isinstance(entry, dict) or sorted(entry) != ["path", "sha256", "size"]:
            raise OtaRefused("bad_files", "each file has exactly path, sha256, size")
        path, sha, size = entry["path"], entry["sha256"], entry["size"]
        if not _safe_path(path) or path in seen:
            raise OtaRefused("bad_path", repr(path))
        if not isinstance(sha, str) or len(sha) != 64 or not all(c in _HEX for c in sha):
            raise OtaRefused("bad_sha256", path)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
            raise OtaRefused("bad_size", path)
        seen.append(path)
    return obj


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _makedirs(path):
    current = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        current = current + part if current in ("", "/") else current + "/" + part
        if not _exists(current):
            os.mkdir(current)


def _parent(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def remove_tree(path):
    """Remove a file or a directory with everything under it (missing is fine)."""
    if not _exists(path):
        return
    if os.stat(path)[0] & 0x4000:  # S_IFDIR
        for name in os.listdir(path):
            remove_tree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


class Updater:
    """File-level A/B for the files under ``root`` (``"/"`` on the board).

    ``build`` is the build of the files running now (``firmware/version.py``, written by the
    bundle): a manifest must name a higher one, also on a node flashed by hand with no OTA history.
    """

    def __init__(self, root, mark_app_valid=None, build=0):
        self.root = root.rstrip("/")
        self.dir = self.root + "/.ota"
        self.mark_app_valid = mark_app_valid
        self.build = build
        _makedirs(self.dir)
        self.state = self._load_state()

    @property
    def version(self):
        return self.state.get("version", 0)

    @property
    def floor(self):
        """Manifests at or below this version are refused: running, installed, or failed and rolled back."""
        return max(self.build, self.version, self.state.get("failed") or 0, self.state.get("trial") or 0)

    def _live(self, path):
        return self.root + "/" + path

    def _load_state(self):
        try:
            with open(self.dir + "/state.json") as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self, state):
        tmp = self.dir + "/state.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(state))
        os.rename(tmp, self.dir + "/state.json")  # atomic on LittleFS: old or new state, never half
        self.state = state

    def stage(self, manifest, fetch):
        """Download and check every file into the stage; OtaRefused (stage discarded) on a mismatch."""
        stage = self.dir + "/stage"
        remove_tree(stage)
        try:
            for entry in manifest["files"]:
                self._download(entry, stage + "/" + entry["path"], fetch)
        except OtaRefused:
            remove_tree(stage)
            raise
        except OSError as exc:
            remove_tree(stage)
            raise OtaRefused("download_failed", str(exc)) from None

    def _download(self, entry, target, fetch):
        _makedirs(_parent(target))
        sha = hashlib.sha256()
        size = 0
        with open(target, "wb") as f:
            while size < entry["size"]:
                chunk = fetch(entry["sha256"], size, min(CHUNK, entry["size"] - size))
                if not chunk:
                    break
                sha.update(chunk)
                f.write(chunk)
                size += len(chunk)
        if size != entry["size"]:
            raise OtaRefused("bad_size", "%s: %d of %d bytes" % (entry["path"], size, entry["size"]))
        if binascii.hexlify(sha.digest()).decode() != entry["sha256"]:
            raise OtaRefused("bad_sha256", entry["path"])

    def switch(self, manifest):
        """Install the staged files; the state says 'trial' before the first file moves."""
        paths = [entry["path"] for entry in manifest["files"]]
        new = [path for path in paths if not _exists(self._live(path))]
        self._save_state(
            {"version": self.version, "trial": manifest["version"], "paths": paths, "new": new, "boots": 0}
        )
        for path in paths:
            live, prev = self._live(path), self.dir + "/prev/" + path
            _makedirs(_parent(prev))
            if path not in new and _exists(live):
                os.rename(live, prev)
            _makedirs(_parent(live))
            os.rename(self.dir + "/stage/" + path, live)
        remove_tree(self.dir + "/stage")

    def boot(self):
        """Call once per boot before the app runs: "ok", "trial", or "rolled_back"."""
        if "trial" not in self.state:
            return "ok"
        state = dict(self.state)
        state["boots"] = state.get("boots", 0) + 1
        if state["boots"] > MAX_TRIAL_BOOTS:
            self.rollback()
            return "rolled_back"
        self._save_state(state)
        return "trial"

    def mark_good(self):
        """The trial version survived a healthy cycle: keep it, drop the backups."""
        if "trial" not in self.state:
            return
        self._save_state({"version": self.state["trial"]})
        remove_tree(self.dir + "/prev")
        if self.mark_app_valid is not None:
            self.mark_app_valid()

    def rollback(self):
        """Put back every backed-up file and remove files the trial added; works after a cut mid-switch."""
        for path in self.state.get("paths", []):
            live, prev = self._live(path), self.dir + "/prev/" + path
            if _exists(prev):
                remove_tree(live)
                os.rename(prev, live)
            elif path in self.state.get("new", []):
                remove_tree(live)
        remove_tree(self.dir + "/prev")
        remove_tree(self.dir + "/stage")
        self._save_state({"version": self.version, "failed": self.state.get("trial")})
