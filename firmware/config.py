"""Remote config: a contract Config frame from the cloud, verified and bounded before the node uses it.

The config arrives retained on ``ft/v1/node/<id>/config``, signed by the cloud with this node's
device key.  Anyone on the gateway's network can publish there, and a node that took a forged
calibration would go on *signing* false values, so a frame is refused unless:

* its MAC verifies under the device key (``contract.telemetry.verify``),
* it is a ``config`` body for this node (``target``) with a version above the current one,
* every field is known and within bounds: ``interval_s``, ``heartbeat_s``, ``samples``,
  ``calibration`` ({metric: {"scale", "offset"}}), ``deltas`` ({metric: threshold >= 0}).

A refusal is a ``ConfigRefused(reason)``; the cycle reports its reason in the next telemetry frame.
The last good frame is kept on flash (two erase blocks used in turn, CRC'd), verified again at boot.
"""

import struct

from contract import telemetry
from firmware.crc import crc32

DEFAULTS = {"interval_s": 900, "heartbeat_s": 3600, "samples": 5, "calibration": {}, "deltas": {}}
BOUNDS = {"interval_s": (60, 86400), "heartbeat_s": (60, 7 * 86400), "samples": (1, 31)}
MAX_METRICS = 16
MAX_ABS_SCALE = 1e6
MAX_ABS_OFFSET = 1e6
_MAGIC = b"CF"
_CAL_KEYS = ("scale", "offset")


class ConfigRefused(ValueError):
    """A config the node will not use; ``reason`` is a short code reported upstream."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e300


def _metric_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not "a" <= name[0] <= "z":
        return False
    return all("a" <= c <= "z" or "0" <= c <= "9" or c == "_" for c in name)


def validate_cfg(cfg):
    """The node settings from a config's ``cfg`` object, defaults filled in; ConfigRefused when out of bounds."""
    if not isinstance(cfg, dict):
        raise ConfigRefused("bad_cfg", "cfg is not an object")
    unknown = [k for k in cfg if k not in DEFAULTS]
    if unknown:
        raise ConfigRefused("unknown_field", ",".join(sorted(unknown)))
    out = {}
    for name in DEFAULTS:
        value = cfg.get(name, DEFAULTS[name])
        if name in BOUNDS:
            low, high = BOUNDS[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigRefused("out_of_bounds", "%s=%r not in %d..%d" % (name, value, low, high))
        elif not isinstance(value, dict) or len(value) > MAX_METRICS:
            raise ConfigRefused("bad_" + name, "an object of at most %d metrics" % MAX_METRICS)
        out[name] = value
    for metric, entry in out["calibration"].items():
        if not _metric_name(metric) or not isinstance(entry, dict) or [k for k in entry if k not in _CAL_KEYS]:
            raise ConfigRefused("bad_calibration", "entry for %r" % (metric,))
        scale, offset = entry.get("scale", 1), entry.get("offset", 0)
        bounded = _number(scale) and _number(offset) and 0 < abs(scale) <= MAX_ABS_SCALE
        if not bounded or abs(offset) > MAX_ABS_OFFSET:
            raise ConfigRefused("bad_calibration", "%s scale=%r offset=%r" % (metric, scale, offset))
    for metric, delta in out["deltas"].items():
        if not _metric_name(metric) or not _number(delta) or delta < 0:
            raise ConfigRefused("bad_delta", "%s=%r" % (metric, delta))
    return out


def verify_config(frame, key, node_id, current_version):
    """``(version, settings)`` from a signed config frame; ConfigRefused for anything the node must not use."""
    try:
        body = telemetry.parse_body(telemetry.verify(frame, key))
    except telemetry.ContractError as exc:
        raise ConfigRefused(exc.reason) from None
    if body.get("k") != telemetry.KIND_CONFIG:
        raise ConfigRefused("not_config", "kind %r" % (body.get("k"),))
    if body.get("target") != node_id:
        raise ConfigRefused("wrong_target", "for %r" % (body.get("target"),))
    version = body.get("ver")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigRefused("bad_version", repr(version))
    if version <= current_version:
        raise ConfigRefused("stale_version", "%d <= current %d" % (version, current_version))
    return version, validate_cfg(body.get("cfg"))


class ConfigStore:
    """The node's current config: the last good signed frame on flash (``region``: two erase blocks)."""

    def __init__(self, region, key, node_id):
        if region.size < 2 * region.block_size:
            raise ValueError("the config store needs two erase blocks")
        self.region = region
        self.key = key
        self.node_id = node_id
        self.version = 0
        self.settings = validate_cfg({})
        self.refused = 0
        self.last_refusal = None
        self._block = 1  # the next save goes to block 0
        for block in (0, 1):
            frame = self._read(block)
            if frame is None:
                continue
            try:
                version, settings = verify_config(frame, key, node_id, self.version)
            except ConfigRefused:
                continue  # an older copy, or flash written under another key
            self.version, self.settings, self._block = version, settings, block

    def offer(self, frame):
        """Take a config frame from the broker: True when applied; False (and counted) when refused."""
        try:
            if len(frame) > self.region.block_size - 10:
                raise ConfigRefused("oversized", "%d bytes" % len(frame))
            version, settings = verify_config(frame, self.key, self.node_id, self.version)
        except ConfigRefused as exc:
            if exc.reason == "stale_version" and self._is_current(frame):
                return False  # the retained copy of what is already in use: not a refusal
            self.refused += 1
            self.last_refusal = exc.reason
            return False
        self._save(frame)
        self.version, self.settings = version, settings
        return True

    def _is_current(self, frame):
        return self._read(self._block) == bytes(frame)

    def _read(self, block):
        size = self.region.block_size
        head = self.region.read(block * size, 6)
        if head[:2] != _MAGIC:
            return None
        length = struct.unpack(">I", head[2:6])[0]
        if length > size - 10:
            return None
        data = self.region.read(block * size + 6, length + 4)
        if struct.unpack(">I", data[length:])[0] != crc32(head + data[:length]):
            return None
        return bytes(data[:length])

    def _save(self, frame):
        """Write into the other block, so a power cut leaves the previous good copy intact."""
        size = self.region.block_size
        block = 1 - self._block
        record = _MAGIC + struct.pack(">I", len(frame)) + bytes(frame)
        self.region.erase(block * size, size)
        self.region.write(block * size, record + struct.pack(">I", crc32(record)))
        self._block = block


def config_body(target, ver, issued_ms, cfg):
    """A config body as the cloud builds it (for tests and tools; the node never signs its own config)."""
    return telemetry.encode_body(
        {"v": 1, "k": telemetry.KIND_CONFIG, "target": target, "ver": ver, "issued": issued_ms, "cfg": cfg}
    )
