"""Telemetry messages as the node sends them: the shared contract's body, signed with the device key.

Every message says how long ago the clock was last synchronised (``sync``, seconds; -1 never),
so the cloud can judge its timestamps; a clock never synchronised, or not for longer than
``MAX_SYNC_AGE_S``, flags the header and every record with Q_CLOCK_UNSYNCED.  A frame is signed as
it is built, so one stamped before the first sync keeps its stamp (and ``sync: -1``) for good: a
later sync never re-stamps it, and the cloud judges it by its own time window.
"""

from contract import telemetry

MAX_SYNC_AGE_S = 2 * 86400  # the node resyncs daily; two missed days make its timestamps doubtful


def sync_age_s(now_ms, synced_at_ms):
    """Whole seconds since the last clock sync, or -1 when the clock was never synchronised."""
    if synced_at_ms is None or synced_at_ms <= 0:
        return -1
    return max(0, (now_ms - synced_at_ms) // 1000)


def build_body(dev, ep, seq, bt_ms, readings, fw, sync_age, max_sync_age_s=MAX_SYNC_AGE_S):
    """Body bytes for ``readings``: ``(name, unit, value or None, t_ms offset, quality)`` tuples."""
    unsynced = sync_age < 0 or sync_age > max_sync_age_s
    clock_q = telemetry.Q_CLOCK_UNSYNCED if unsynced else 0
    records = [telemetry.record(name, unit, value, t_ms, q | clock_q) for name, unit, value, t_ms, q in readings]
    return telemetry.encode_body(telemetry.telemetry(dev, ep, seq, bt_ms, records, fw, sync_age, clock_q))


def build_frame(key, dev, ep, seq, bt_ms, readings, fw, sync_age, max_sync_age_s=MAX_SYNC_AGE_S):
    """The signed frame (HMAC-SHA256 under the device ``key``) ready for the outbox."""
    return telemetry.sign(key, build_body(dev, ep, seq, bt_ms, readings, fw, sync_age, max_sync_age_s))
