"""The node's wake cycle as a state machine: boot, (clock,) sample, enqueue, connect, drain, notices, sleep.

One ``Node.run()`` is one wake.  Each state returns the next one; a state that fails goes to its
fallback (a sensor failure still enqueues what was read, a network failure goes to sleep with the
frames kept in the outbox), and the watchdog is fed only after a state that succeeded, so a
node stuck in a loop or hanging on a bus is reset by the hardware.

* Boot counter in RTC memory: raised at boot, cleared when the cycle reaches sleep.  A count above
  ``SAFE_MODE_BOOTS`` means the previous wakes crashed: safe mode skips the sensors, reports
  ``safe_mode`` and still connects, so config and OTA (or a rollback) can get the node out of it.
* Connect briefly: birth (retained, signed) and last will; subscribe to the node's retained
  config / OTA / awake topics; drain the outbox, one QoS 1 publish per frame, a frame deleted
  only on its PUBACK.
* Notices: a config is verified and bounded (``firmware/config.py``), an OTA manifest verified,
  staged and switched (``firmware/ota.py``); refusals go out at once as a signed report frame.
  The retained "stay awake" flag (``1``) keeps the node up for maintenance.
* Time: NTP through the network hook when never synced or not for a day; the sync time is kept in
  RTC memory and every message says how old it is (``firmware/message.py`` flags unsynced).  A clock
  never synced (power-on: an ESP32's RTC starts at 2000-01-01 and RTC memory is empty) is set
  *before* sampling (the ``clock`` step: link up and NTP, within the usual timeouts), so the first
  frame is not stamped in 2000 and refused by the cloud as too old.  When that fails the wake goes
  on: readings are sampled, stamped and flagged unsynced (``sync: -1``) and never re-stamped later
  (frames are signed when built); the cloud judges them by its own policy.  A link that failed in
  the clock step is not tried again in the same wake.
* Sensor supply: a ``rail`` (``firmware/hal.py`` ``SensorRail``) is switched on and settled just
  before sampling and off right after, also when a sensor raises.
* Link quality: the Wi-Fi RSSI read when the link comes up is kept in RTC memory and rides, once,
  as an ``rssi`` record (dBm, its ``t`` the moment it was read) in the next frame that goes out
  anyway, so the gateway's health shows it without a frame or a signature of its own.
* Sleep aligned to the schedule: the next wake is the next multiple of ``interval_s``.

Network interface (``net``; the hal's on a board, a fake in the tests)::

    up(timeout_ms)                           bring the link up (Wi-Fi); OSError on failure
    tcp_connect(host, port, timeout_ms)      socket-like object (settimeout/send/recv/close)
    ntp_sync()                               set the board's wall clock; OSError on failure
    fetch(sha256, offset, n)                 OTA file bytes from the gateway, by content
    rssi()                                   dBm of the joined link or None (optional: a wired link has none)
"""

import struct

from contract import telemetry, topics
from firmware import message, ota, sampling, version
from firmware.config import ConfigStore
from firmware.crc import crc32
from firmware.drivers.errors import DriverError
from firmware.flash import Region
from firmware.mqtt import MqttClient
from firmware.outbox import Outbox
from firmware.seq import SequenceCounter

BOOT, CLOCK, SAMPLE, ENQUEUE, CONNECT = "boot", "clock", "sample", "enqueue", "connect"
DRAIN, NOTICES, SLEEP = "drain", "notices", "sleep"
SAFE_MODE_BOOTS = 3
RESYNC_MS = 86400 * 1000
MIN_SLEEP_MS = 5000
AWAKE_POLL_MS = 10000
NOTICE_WAIT_MS = 300
CONNECT_TIMEOUT_MS = 5000
RTC_OFFSET = 16  # after the sequence counter's 14 bytes
_RTC_MAGIC = b"C2"  # a layout change gets a new magic: an older layout reads as none (after an OTA)
_RTC_STATE = ">BBQQb"  # boots, awake, synced_at ms, rssi_at ms (0: none to send), rssi dBm
_RTC_FIXED = 25  # magic, the state's 19 bytes, CRC32
_DELTA_OFFSET = RTC_OFFSET + _RTC_FIXED
BLOCK = 4096


class Node:
    """One sensor node: its identity, sensors, storage and the hooks of its board."""

    def __init__(self, board, net, identity, sensors, watchdog=None, updater=None, rail=None):
        self.board = board
        self.net = net
        self.id = identity["id"]
        self.key = identity["key"]
        self.ep = identity.get("ep", 1)
        self.fw = identity.get("fw", "fw/" + version.VERSION)
        self.broker = (identity.get("host", "192.168.4.1"), identity.get("port", 1883))
        self.sensors = sensors  # [sampling.sensor(metric, unit, read, samples, needs_calibration, flags)]
        self.watchdog = watchdog
        self.updater = updater
        self.rail = rail  # the sensors' switched supply (hal.SensorRail) or None
        flash = board.flash
        self.seq = SequenceCounter(board, Region(flash, 0, 2 * BLOCK))
        self.config = ConfigStore(Region(flash, 2 * BLOCK, 2 * BLOCK), self.key, self.id)
        self.outbox = Outbox(Region(flash, 4 * BLOCK, flash.size - 4 * BLOCK))
        base = topics.node(self.id, "")  # validates the id once
        self.topics = dict((leaf, base + leaf) for leaf in ("up", "state", "config", "ota", "awake"))
        self.trace = []
        self.errors = []
        self.published = 0
        self._load_rtc()

    # -- RTC state -------------------------------------------------------------------------------

    def _load_rtc(self):
        blob = self.board.rtc_read()
        raw = blob[RTC_OFFSET : RTC_OFFSET + _RTC_FIXED]
        self.boots, self.awake, self.synced_at, self.rssi_at, self.rssi = 0, False, 0, 0, 0
        end = _RTC_FIXED - 4
        if len(raw) == _RTC_FIXED and raw[:2] == _RTC_MAGIC and struct.unpack(">I", raw[end:])[0] == crc32(raw[:end]):
            boots, awake, self.synced_at, self.rssi_at, self.rssi = struct.unpack(_RTC_STATE, raw[2:end])
            self.boots, self.awake = boots, bool(awake)
        settings = self.config.settings
        size = blob[_DELTA_OFFSET] if len(blob) > _DELTA_OFFSET else 0
        self.reporter = sampling.DeltaReporter.from_bytes(
            blob[_DELTA_OFFSET + 1 : _DELTA_OFFSET + 1 + size * 4], settings["deltas"], settings["heartbeat_s"]
        )

    def _save_rtc(self):
        state = (min(self.boots, 255), 1 if self.awake else 0, self.synced_at, self.rssi_at, self.rssi)
        fixed = _RTC_MAGIC + struct.pack(_RTC_STATE, *state)
        deltas = self.reporter.to_bytes()
        if len(deltas) > 255 * 4:
            deltas = b""  # too many metrics to keep: everything is sent once more next wake
        deltas += b" " * (-len(deltas) % 4)
        blob = bytearray(self.board.rtc_read())
        end = _DELTA_OFFSET + 1 + len(deltas)
        if len(blob) < end:
            blob.extend(bytes(end - len(blob)))
        blob[RTC_OFFSET:end] = fixed + struct.pack(">I", crc32(fixed)) + bytes([len(deltas) // 4]) + deltas
        self.board.rtc_write(blob)  # the board copies it

    # -- the cycle -------------------------------------------------------------------------------

    def run(self):
        """One wake; returns ``("deep", ms)`` to deep-sleep until the next slot or ``("awake", ms)``."""
        self.trace, self.errors, self.reports = [], [], []
        self.readings, self.client, self.reboot = [], None, False
        self.safe, self.ntp_error, self.ntp_tried, self.link_error = False, None, False, None
        steps = {
            BOOT: self._boot,
            CLOCK: self._clock,
            SAMPLE: self._sample,
            ENQUEUE: self._enqueue,
            CONNECT: self._connect,
            DRAIN: self._drain,
            NOTICES: self._notices,
        }
        fallback = {
            BOOT: SAMPLE,
            CLOCK: SAMPLE,
            SAMPLE: ENQUEUE,
            ENQUEUE: CONNECT,
            CONNECT: SLEEP,
            DRAIN: SLEEP,
            NOTICES: SLEEP,
        }
        state = BOOT
        while state != SLEEP:
            self.trace.append(state)
            try:
                state = steps[state]()
            except (OSError, DriverError, ValueError) as exc:  # each is a named, expected failure
                self.errors.append((state, repr(exc)))
                state = fallback[state]
                continue
            if self.watchdog is not None:
                self.watchdog.feed()
        self.trace.append(SLEEP)
        return self._sleep()

    def _boot(self):
        self.boots += 1  # RTC state was loaded when the node was built at this boot
        self._save_rtc()  # before anything can crash: a reset from here on is counted
        self.safe = self.boots > SAFE_MODE_BOOTS
        if self.updater is not None:
            state = self.updater.boot()
            if state == "rolled_back":
                self.reports.append(("ota_rolled_back", "", self.updater.state.get("failed")))
        if self.safe:
            self.reports.append(("safe_mode", "", True))
            self.reports.append(("boots", "", self.boots))
            return ENQUEUE
        return SAMPLE if self.synced_at else CLOCK

    def _clock(self):
        """Never synced: link up and NTP before anything is stamped; a failure is noted, the wake goes on."""
        try:
            self.net.up(CONNECT_TIMEOUT_MS)
        except OSError as exc:
            self.link_error = exc  # CONNECT gives up at once: no second wait for the same link
            self.ntp_error = repr(exc)
            return SAMPLE
        self._sync_clock()
        return SAMPLE

    def _sync_clock(self):
        self.ntp_tried = True  # once a wake: each try may wait for the time server's timeout
        try:
            self.net.ntp_sync()
            self.synced_at = self.board.time_ms()
        except OSError as exc:  # no time server today: messages say how old the sync is
            self.ntp_error = repr(exc)

    def _sample(self):
        settings = self.config.settings
        calibration = settings["calibration"]
        rail = self.rail
        if rail is not None:
            rail.on()  # waits the rail's settle time
        try:
            for metric, unit, read, samples, needs_calibration, flags in self.sensors:
                raw, _failures = sampling.sample_median(read, samples or settings["samples"])
                value, quality = sampling.calibrate(metric, raw, calibration, needs_calibration)
                if flags is not None:
                    quality |= flags()
                self.readings.append((metric, unit, value, 0, quality))
        finally:
            if rail is not None:
                rail.off()  # also when a sensor crashed the wake
        return ENQUEUE

    def _enqueue(self):
        now_ms = self.board.time_ms()
        now_s = now_ms // 1000
        due = [r for r in self.readings if self.reporter.due(r[0], r[2], now_s)]
        extra = [(name, unit, value, 0, 0) for name, unit, value in self.reports]
        if self.rssi_at and (due or extra):  # the last link's RSSI rides along, never a frame of its own
            extra.append(("rssi", "dBm", self.rssi, self.rssi_at - now_ms, 0))
            self.rssi_at = 0  # sent once: a frame built now is kept until it is acknowledged
        self._enqueue_frame(due + extra, now_ms)
        self.reports = []
        for name, _unit, value, _t, _q in due:
            self.reporter.sent(name, value, now_s)
        return CONNECT

    def _enqueue_frame(self, readings, now_ms=None):
        if not readings:
            return
        if now_ms is None:
            now_ms = self.board.time_ms()
        frame = message.build_frame(
            self.key,
            self.id,
            self.ep,
            self.seq.next(),
            now_ms,
            readings,
            self.fw,
            message.sync_age_s(now_ms, self.synced_at),
        )
        self.outbox.append(frame)

    def _presence(self, kind):
        body = telemetry.encode_body(
            {
                "v": 1,
                "k": kind,
                "dev": self.id,
                "at": self.board.time_ms(),
                "sw": self.fw,
                "config_version": self.config.version,
                "build": version.BUILD,
            }
        )
        return telemetry.sign(self.key, body)

    def _connect(self):
        if self.link_error is not None:
            raise self.link_error  # the link failed in this wake's clock step already
        self.net.up(CONNECT_TIMEOUT_MS)
        self._note_rssi()
        sock = self.net.tcp_connect(self.broker[0], self.broker[1], CONNECT_TIMEOUT_MS)
        self.client = MqttClient(sock, self.board.ticks_ms)
        self.client.connect(self.id, 60, will=(self.topics["state"], self._presence(telemetry.KIND_WILL), True))
        self.client.publish(self.topics["state"], self._presence(telemetry.KIND_BIRTH), qos=1, retain=True)
        self.client.subscribe([self.topics["config"], self.topics["ota"], self.topics["awake"]])
        if not self.ntp_tried and (not self.synced_at or self.board.time_ms() - self.synced_at >= RESYNC_MS):
            self._sync_clock()
        return DRAIN

    def _note_rssi(self):
        """Keep the link's RSSI for the next frame (RTC memory is saved at sleep)."""
        read = getattr(self.net, "rssi", None)
        dbm = read() if read is not None else None
        if dbm is not None:
            self.rssi, self.rssi_at = max(-128, min(127, int(dbm))), self.board.time_ms()

    def _connected(self):
        client = self.client
        if client is None:  # a state run out of order: a named failure, not an AttributeError
            raise OSError(107, "not connected")
        return client

    def _drain(self):
        client = self._connected()
        while True:
            item = self.outbox.oldest()
            if item is None:
                return NOTICES
            ref, frame = item
            client.publish(self.topics["up"], frame, qos=1)
            self.outbox.ack(ref)  # only now: a frame without PUBACK stays for the next wake
            self.published += 1

    def _notices(self):
        client = self._connected()
        client.poll(NOTICE_WAIT_MS)
        for topic, payload, _retained in client.inbox:
            if topic == self.topics["awake"]:
                self.awake = payload.strip() == b"1"
            elif topic == self.topics["config"] and payload:
                if not self.config.offer(payload) and self.config.last_refusal is not None:
                    self.reports.append(("config_refused", "", self.config.last_refusal))
                    self.config.last_refusal = None
            elif topic == self.topics["ota"] and payload:
                self._take_ota(payload)
        client.inbox = []
        if self.reports:  # refusals are reported now, while connected
            self._enqueue_frame([(name, unit, value, 0, 0) for name, unit, value in self.reports])
            self.reports = []
            self._drain()
        if not self.safe and self.errors == [] and self.updater is not None:
            self.updater.mark_good()  # a healthy wake on the trial version: keep it
        client.disconnect()
        self.client = None
        return SLEEP

    def _take_ota(self, frame):
        if self.updater is None:
            return
        try:
            manifest = ota.verify_manifest(frame, self.key, self.id, self.updater.floor)
            self.updater.stage(manifest, self.net.fetch)
        except ota.OtaRefused as exc:
            if exc.reason != "stale_version":
                self.reports.append(("ota_refused", "", exc.reason))
            return
        self.updater.switch(manifest)
        self.reboot = True

    def _sleep(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        self.boots = 0  # reached the end of the wake: not a crash
        self._save_rtc()
        if self.reboot:
            return "deep", 1000  # wake into the new files
        interval_ms = self.config.settings["interval_s"] * 1000
        if self.awake:
            return "awake", AWAKE_POLL_MS
        now = self.board.time_ms()
        sleep_ms = interval_ms - now % interval_ms
        if sleep_ms < MIN_SLEEP_MS:
            sleep_ms += interval_ms
        return "deep", sleep_ms
