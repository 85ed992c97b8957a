"""Node cases that run unchanged under CPython (collected by pytest) and real MicroPython.

MQTT client, signed remote config, OTA manifest / staging / rollback and the wake cycle's state
machine, on the simulated board with a fake broker transport: the MicroPython build has no
sockets, so ``FakeBrokerSocket`` answers the client's packets with the bytes a broker sends.
tests/test_firmware_node.py runs every ``test_*`` here on MicroPython and the same code against
the real Mosquitto under CPython.
"""

import binascii
import gc
import hashlib
import os
import struct
import time

from contract import telemetry
from firmware import config, cycle, mqtt, ota, sampling, version
from firmware.drivers import battery, sht3x
from firmware.drivers.errors import DriverError
from firmware.flash import PowerLoss, RamFlash, Region
from firmware.hal_sim import SimBoard, SimSht3x

KEY = bytes(range(32))
NODE = "node-7"
T0 = 1764480000000


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{fn} did not raise {exc_type}")


# -- a broker behind a fake socket ----------------------------------------------------------------


def _heap():
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0  # CPython has no mem_alloc


class FakeBrokerSocket:
    """Answers MQTT packets as a broker would: CONNACK, PUBACK, SUBACK (+ retained), PINGRESP."""

    def __init__(self, retained=None, drop_pubacks=0, connack_code=0, silent=False):
        self.retained = retained or {}  # topic -> payload, delivered after a matching SUBSCRIBE
        self.drop_pubacks = drop_pubacks
        self.connack_code = connack_code
        self.silent = silent  # never answers anything: the client must time out
        self.published = []  # (topic, payload, qos, retain, dup, pid)
        self.will = None
        self.closed = False
        self._in = bytearray()
        self._out = bytearray()
        self._pos = 0  # read position in _out: no copy of the rest at every read
        self.heap = 0  # bytes the fake broker itself allocated (MicroPython): not the firmware's cost

    def settimeout(self, seconds):
        self.timeout = seconds

    def send(self, data):
        if self.closed:
            raise OSError(9, "closed")
        before = _heap()
        self._in.extend(bytes(data))
        self._parse()
        self.heap += _heap() - before
        return len(data)

    def recv(self, n):
        if self.closed:
            return b""
        if self._pos >= len(self._out):
            raise OSError(mqtt.ETIMEDOUT, "timed out")
        data = bytes(self._out[self._pos : self._pos + n])
        self._pos += len(data)
        return data

    def close(self):
        self.closed = True

    def _answer(self, data):
        if not self.silent:
            self._out.extend(data)

    def _parse(self):
        while len(self._in) >= 2:
            length, shift, i = 0, 0, 1
            while True:
                byte = self._in[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            if len(self._in) < i + length:
                return
            head, body = self._in[0], bytes(self._in[i : i + length])
            self._in = self._in[i + length :]
            self._packet(head, body)

    def _packet(self, head, body):
        kind = head & 0xF0
        if kind == mqtt.CONNECT:
            flags = body[7]
            if flags & 0x04:
                pos = 10 + 2 + struct.unpack(">H", body[10:12])[0]
                tlen = struct.unpack(">H", body[pos : pos + 2])[0]
                topic = body[pos + 2 : pos + 2 + tlen].decode()
                plen = struct.unpack(">H", body[pos + 2 + tlen : pos + 4 + tlen])[0]
                self.will = (topic, body[pos + 4 + tlen : pos + 4 + tlen + plen], bool(flags & 0x20))
            self._answer(bytes([mqtt.CONNACK, 2, 0, self.connack_code]))
        elif kind == mqtt.PUBLISH:
            qos = (head >> 1) & 3
            tlen = struct.unpack(">H", body[:2])[0]
            pid = struct.unpack(">H", body[2 + tlen : 4 + tlen])[0] if qos else 0
            start = 2 + tlen + (2 if qos else 0)
            self.published.append((body[2 : 2 + tlen].decode(), body[start:], qos, bool(head & 1), bool(head & 8), pid))
            if qos and self.drop_pubacks:
                self.drop_pubacks -= 1
            elif qos:
                self._answer(bytes([mqtt.PUBACK, 2]) + body[2 + tlen : 4 + tlen])
        elif kind == 0x80:  # SUBSCRIBE
            pid, pos, granted, topics = body[:2], 2, b"", []
            while pos < len(body):
                tlen = struct.unpack(">H", body[pos : pos + 2])[0]
                topics.append(body[pos + 2 : pos + 2 + tlen].decode())
                pos += 3 + tlen
                granted += b"\x00"
            self._answer(bytes([mqtt.SUBACK, 2 + len(granted)]) + pid + granted)
            for topic in topics:
                if topic in self.retained:
                    self._answer(mqtt.publish_packet(topic, self.retained[topic], 0, True))
        elif kind == 0xC0:
            self._answer(b"\xd0\x00")
        elif kind == 0xE0:
            self.closed = True


class FakeNet:
    """The network hooks: link up, a broker per connection, NTP setting the board's clock, OTA files."""

    def __init__(self, board, **broker):
        self.board = board
        self.broker = broker
        self.link_up = True
        self.rssi_dbm = -67  # None: the radio gives no reading
        self.ntp_ok = True
        self.true_time_ms = None  # NTP answer; None: the board's clock is already right
        self.ntp_calls = 0
        self.files = {}
        self.sockets = []

    def up(self, timeout_ms):
        if not self.link_up:
            raise OSError(118, "no Wi-Fi")

    def tcp_connect(self, host, port, timeout_ms):
        sock = FakeBrokerSocket(**self.broker)
        self.sockets.append(sock)
        return sock

    def rssi(self):
        return self.rssi_dbm if self.link_up else None

    def ntp_sync(self):
        self.ntp_calls += 1
        if not self.ntp_ok:
            raise OSError(mqtt.ETIMEDOUT, "NTP timed out")
        if self.true_time_ms is not None:
            self.board._time_ms = self.true_time_ms

    def fetch(self, sha256, offset, n):
        return by_sha(self.files)[sha256][offset : offset + n]  # content-addressed, as the gateway serves

    def published(self):
        return [p for sock in self.sockets for p in sock.published]


class Watchdog:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


def sim_board():
    board = SimBoard(flash=RamFlash(16 * 4096), time_ms=T0)
    board.adc_uv[35] = [1850000]
    board.i2c[0x44] = SimSht3x(21.3, 64.0)
    return board


def sensors(board):
    return [
        sampling.sensor("air_temperature", "Cel", lambda: sht3x.measure(board)[0], 1),
        sampling.sensor("battery", "mV", lambda: battery.read_mv(board, 35), 3),
    ]


def make_node(board, net, updater=None):
    return cycle.Node(board, net, {"id": NODE, "key": KEY, "fw": "fw/0.2.0"}, sensors(board), Watchdog(), updater)


def signed_config(ver, cfg, key=KEY, target=NODE):
    return telemetry.sign(key, config.config_body(target, ver, T0, cfg))


def bodies(frames):
    return [telemetry.parse_body(telemetry.verify(f, KEY)) for f in frames]


# -- MQTT ------------------------------------------------------------------------------------------


def test_mqtt_packet_bytes():
    assert mqtt.connect_packet("n1", 60) == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02n1"
    will = mqtt.connect_packet("n1", 30, will=("t", b"x", True))
    assert will[9] == 0x02 | 0x04 | 0x08 | 0x20 and will.endswith(b"\x00\x01t\x00\x01x")
    assert mqtt.publish_packet("a/b", b"hi", 1, False, 7) == b"\x32\x09\x00\x03a/b\x00\x07hi"
    assert mqtt.publish_packet("a/b", b"hi", 1, True, 7, dup=True)[0] == 0x3B
    assert mqtt.subscribe_packet(2, ["x"]) == b"\x82\x06\x00\x02\x00\x01x\x00"
    assert [mqtt._encode_length(n) for n in (0, 127, 128, 16383, 16384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]


def _client(sock, ack_timeout_ms=100):
    board = SimBoard()
    clock = [0]

    def ticks():  # every read of the clock costs 10 ms: deadlines pass without real waiting
        clock[0] += 10
        return clock[0]

    return board, mqtt.MqttClient(sock, ticks, read_timeout_ms=200, ack_timeout_ms=ack_timeout_ms)


def test_mqtt_resends_with_dup_when_the_puback_is_lost():
    sock = FakeBrokerSocket(drop_pubacks=1)
    _board, client = _client(sock)
    client.connect("n1")
    client.publish("t/up", b"frame", qos=1)
    assert [(p[1], p[4], p[5]) for p in sock.published] == [(b"frame", False, 1), (b"frame", True, 1)]
    assert client.resends == 1


def test_mqtt_failures_are_oserrors_and_never_hang():
    _b, client = _client(FakeBrokerSocket(drop_pubacks=99))
    client.connect("n1")
    assert "no PUBACK" in str(raises(OSError, client.publish, "t", b"x"))  # 3 sends, then give up
    _b, client = _client(FakeBrokerSocket(connack_code=5))
    assert "refused" in str(raises(OSError, client.connect, "n1"))
    _b, client = _client(FakeBrokerSocket(silent=True))
    raises(OSError, client.connect, "n1")  # nothing comes back: the deadline ends the read
    sock = FakeBrokerSocket()
    _b, client = _client(sock)
    client.connect("n1")
    sock.closed = True
    raises(OSError, client.ping)
    sock = FakeBrokerSocket()
    _b, client = _client(sock)
    client.connect("n1")
    sock._out.extend(b"\x30\xff\xff\xff\x7f")  # a PUBLISH announcing 256 MB: refused, not read
    assert "packet of" in str(raises(OSError, client.poll, 1000))


def test_mqtt_retained_messages_arrive_in_the_inbox():
    sock = FakeBrokerSocket(retained={"n/awake": b"1"})
    _b, client = _client(sock)
    client.connect("n1", will=("n/state", b"gone", True))
    client.subscribe(["n/config", "n/awake"])
    client.poll(50)
    client.ping()
    assert client.inbox == [("n/awake", b"1", True)]
    assert sock.will == ("n/state", b"gone", True)


# -- remote config ---------------------------------------------------------------------------------


def _store(flash=None):
    flash = flash or RamFlash(4 * 4096)
    return flash, config.ConfigStore(Region(flash, 0, 2 * 4096), KEY, NODE)


def test_config_signed_and_bounded_is_applied_and_kept_on_flash():
    flash, store = _store()
    assert (store.version, store.settings["interval_s"]) == (0, 900)
    cfg = {
        "interval_s": 300,
        "calibration": {"soil_moisture": {"scale": -0.0787, "offset": 200}},
        "deltas": {"air_temperature": 0.5},
    }
    assert store.offer(signed_config(3, cfg)) is True
    assert store.settings["interval_s"] == 300 and store.settings["deltas"] == {"air_temperature": 0.5}
    _f, again = _store(flash)  # after a reboot the last good config is read back (and verified again)
    assert again.version == 3 and again.settings == store.settings
    assert again.offer(signed_config(3, cfg)) is False and again.refused == 0  # the retained copy: no refusal


def test_config_refuses_unsigned_forged_stale_and_out_of_bounds():
    _f, store = _store()
    store.offer(signed_config(5, {"interval_s": 600}))
    plain = config.config_body(NODE, 6, T0, {"interval_s": 60})
    cases = [
        (plain, "bad_frame"),
        (signed_config(6, {"interval_s": 60}, key=bytes(32)), "bad_signature"),
        (signed_config(4, {"interval_s": 60}), "stale_version"),
        (signed_config(6, {"interval_s": 60}, target="node-8"), "wrong_target"),
        (signed_config(6, {"interval_s": 5}), "out_of_bounds"),
        (signed_config(6, {"samples": 0}), "out_of_bounds"),
        (signed_config(6, {"calibration": {"soil_moisture": {"scale": 0}}}), "bad_calibration"),
        (signed_config(6, {"calibration": {"soil_moisture": {"scale": 1e9}}}), "bad_calibration"),
        (signed_config(6, {"calibration": {"Bad-Name": {"scale": 1}}}), "bad_calibration"),
        (signed_config(6, {"deltas": {"battery": -1}}), "bad_delta"),
        (signed_config(6, {"deltas": {"battery": "1"}}), "bad_delta"),
        (signed_config(6, {"wifi": "x"}), "unknown_field"),
        (telemetry.sign(KEY, b'{"v":1,"k":"tel","dev":"node-7"}'), "not_config"),
    ]
    for frame, reason in cases:
        assert store.offer(frame) is False
        assert store.last_refusal == reason, (reason, store.last_refusal)
    assert store.refused == len(cases) and store.version == 5 and store.settings["interval_s"] == 600


def test_config_power_cut_while_saving_keeps_a_good_one():
    outcomes = []
    for cut in range(0, 4096 + 400, 211):  # through the erase of the other block and the record write
        flash, store = _store()
        store.offer(signed_config(1, {"interval_s": 120}))
        flash.cut_power_after(cut)
        try:  # noqa: SIM105 - MicroPython has no contextlib
            store.offer(signed_config(2, {"interval_s": 180}))
        except PowerLoss:
            pass
        flash.cut_power_after(-1)
        _f, after = _store(flash)
        assert after.settings["interval_s"] == {1: 120, 2: 180}[after.version]
        outcomes.append(after.version)
    assert outcomes[0] == 1 and outcomes[-1] == 2 and set(outcomes) == {1, 2}


# -- OTA -------------------------------------------------------------------------------------------


def _root():
    root = f"/tmp/ft_ota_{time.time_ns()}"
    ota.remove_tree(root)
    os.mkdir(root)
    return root


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def by_sha(files):
    """The files (path -> bytes) by SHA-256, as the gateway's OTA server has them."""
    return dict((_sha(d), d) for d in files.values())


def manifest_frame(version, files, key=KEY, target=NODE):
    entries = [{"path": p, "sha256": _sha(d), "size": len(d)} for p, d in files.items()]
    body = telemetry.encode_body({"v": 1, "k": "ota", "target": target, "version": version, "files": entries})
    return telemetry.sign(key, body)


def test_ota_manifest_refusals():
    files = {"firmware/cycle.py": b"new"}
    assert ota.verify_manifest(manifest_frame(2, files), KEY, NODE, 1)["version"] == 2
    cases = [
        (manifest_frame(2, files, key=bytes(32)), "bad_signature"),
        (manifest_frame(2, files, target="node-8"), "wrong_target"),
        (manifest_frame(1, files), "stale_version"),
        (manifest_frame(2, {"../boot.py": b"x"}), "bad_path"),
        (manifest_frame(2, {"/main.py": b"x"}), "bad_path"),
        (manifest_frame(2, {".ota/state.json": b"x"}), "bad_path"),
        (manifest_frame(2, {}), "bad_files"),
        (config.config_body(NODE, 2, T0, {}), "bad_frame"),
    ]
    for frame, reason in cases:
        assert raises(ota.OtaRefused, ota.verify_manifest, frame, KEY, NODE, 1).reason == reason, reason


def test_ota_stage_switch_and_mark_good():
    root = _root()
    try:
        os.mkdir(root + "/app")
        _write(root + "/app/a.py", b"old a")
        files = {"app/a.py": b"new a" * 500, "app/lib/b.py": b"new b"}
        updater = ota.Updater(root)
        manifest = ota.verify_manifest(manifest_frame(2, files), KEY, NODE, updater.floor)
        blobs = by_sha(files)
        updater.stage(manifest, lambda sha, offset, n: blobs[sha][offset : offset + n])
        assert _read(root + "/app/a.py") == b"old a"  # staging changes nothing live
        updater.switch(manifest)
        assert _read(root + "/app/a.py") == files["app/a.py"] and _read(root + "/app/lib/b.py") == b"new b"
        updater = ota.Updater(root)  # reboot into the new files
        assert updater.boot() == "trial"
        updater.mark_good()
        assert (updater.version, updater.boot()) == (2, "ok") and not ota._exists(root + "/.ota/prev")
    finally:
        ota.remove_tree(root)


def test_ota_bad_download_is_discarded():
    root = _root()
    try:
        files = {"a.py": b"good"}
        updater = ota.Updater(root)
        manifest = ota.verify_manifest(manifest_frame(2, files), KEY, NODE, 0)
        tampered = raises(ota.OtaRefused, updater.stage, manifest, lambda p, o, n: b"evil"[o : o + n])
        short = raises(ota.OtaRefused, updater.stage, manifest, lambda p, o, n: b"go"[o : o + n])
        assert (tampered.reason, short.reason) == ("bad_sha256", "bad_size")
        assert not ota._exists(root + "/a.py") and not ota._exists(root + "/.ota/stage")
    finally:
        ota.remove_tree(root)


def test_ota_rolls_back_a_trial_that_never_becomes_healthy_even_after_a_cut_mid_switch():
    root = _root()
    try:
        _write(root + "/a.py", b"old a")
        _write(root + "/b.py", b"old b")
        files = {"a.py": b"new a", "b.py": b"new b", "c.py": b"new c"}
        updater = ota.Updater(root)
        manifest = ota.verify_manifest(manifest_frame(2, files), KEY, NODE, 0)
        blobs = by_sha(files)
        updater.stage(manifest, lambda sha, o, n: blobs[sha][o : o + n])
        updater.switch(manifest)
        os.remove(root + "/b.py")  # as if the cut came after b's old copy moved, before its new one did:
        os.remove(root + "/c.py")  # b.py missing, c.py not yet there
        for expected in ("trial", "trial", "rolled_back"):
            assert ota.Updater(root).boot() == expected
        assert _read(root + "/a.py") == b"old a" and _read(root + "/b.py") == b"old b"
        assert not ota._exists(root + "/c.py")
        updater = ota.Updater(root)
        assert (updater.version, updater.floor) == (0, 2)  # the failed build is not installed again
    finally:
        ota.remove_tree(root)


# -- the wake cycle --------------------------------------------------------------------------------

UP = "ft/v1/node/node-7/up"
STATE = "ft/v1/node/node-7/state"
FULL_TRACE = ["boot", "sample", "enqueue", "connect", "drain", "notices", "sleep"]
POWER_ON_TRACE = ["boot", "clock"] + FULL_TRACE[1:]  # a clock never synced is set before sampling


def up_bodies(net):
    return bodies([p[1] for p in net.published() if p[0] == UP])


def wake(board, net, updater=None):
    """Deep sleep ends in a fresh boot: a new Node on the same board (flash and RTC memory kept)."""
    node = make_node(board, net, updater)
    return node, node.run()


def test_cycle_wakes_samples_sends_and_sleeps_aligned_to_the_schedule():
    board = sim_board()
    net = FakeNet(board)
    node, (mode, ms) = wake(board, net)
    assert node.trace == POWER_ON_TRACE and node.errors == [] and node.watchdog.fed == 7
    assert mode == "deep" and (board.time_ms() + ms) % 900000 == 0 and ms >= cycle.MIN_SLEEP_MS
    state = [p for p in net.published() if p[0] == STATE]
    assert [(p[2], p[3]) for p in state] == [(1, True)]  # birth: QoS 1, retained
    assert bodies([state[0][1]])[0]["k"] == "birth" and bodies([net.sockets[0].will[1]])[0]["k"] == "will"
    assert net.sockets[0].will[2] is True
    first = up_bodies(net)
    assert len(first) == 1 and len(node.outbox) == 0
    assert first[0]["sync"] == 0 and first[0]["q"] == 0  # the first wake set the clock before sampling
    assert [r["n"] for r in first[0]["r"]] == ["air_temperature", "battery"]
    board.deep_sleep(ms)
    board.i2c[0x44].temperature_c = 25.0
    node, _ = wake(board, net)
    second = up_bodies(net)[1]
    assert second["seq"] == 1 and abs(second["sync"] - ms / 1000) <= 1 and second["q"] == 0
    # battery unchanged, heartbeat not due; the first wake's link RSSI rides along, stamped when it was read
    assert [r["n"] for r in second["r"]] == ["air_temperature", "rssi"]
    rssi = second["r"][1]
    assert (rssi["u"], rssi["v"], rssi["q"]) == ("dBm", -67, 0) and -ms - 5000 < rssi["t"] < -ms + 5000


def test_cycle_keeps_frames_while_the_network_is_down_and_resends_on_a_lost_puback():
    board = sim_board()
    net = FakeNet(board)
    net.link_up = False
    node, (mode, ms) = wake(board, net)
    assert node.trace == ["boot", "clock", "sample", "enqueue", "connect", "sleep"] and node.errors[0][0] == "connect"
    assert node.watchdog.fed == 4 and len(node.outbox) == 1 and mode == "deep"  # not fed for the failed step
    board.deep_sleep(ms)
    net.link_up, net.broker = True, {"drop_pubacks": 99}  # the broker takes frames but never acknowledges
    board.i2c[0x44].temperature_c = 30.0
    node, _ = wake(board, net)
    assert node.errors[0][0] == "connect" and len(node.outbox) == 2  # the birth got no PUBACK either
    board.deep_sleep(ms)
    net.broker = {"drop_pubacks": 1}
    node, _ = wake(board, net)
    assert node.errors == [] and len(node.outbox) == 0 and node.client is None
    pubs = [p for p in net.sockets[-1].published if p[0] in (UP, STATE)]
    assert pubs[0][4] is False and pubs[1][4] is True and pubs[0][1] == pubs[1][1]  # birth resent with DUP
    sent = [b["seq"] for b in up_bodies(net)]
    assert sent == [0, 1]


def test_cycle_applies_a_signed_config_and_reports_a_forged_one():
    board = sim_board()
    net = FakeNet(board, retained={"ft/v1/node/node-7/config": signed_config(2, {"interval_s": 300})})
    node, (mode, ms) = wake(board, net)
    assert node.config.version == 2 and (board.time_ms() + ms) % 300000 == 0
    board.deep_sleep(ms)
    net.broker = {"retained": {"ft/v1/node/node-7/config": signed_config(3, {"interval_s": 60}, key=bytes(32))}}
    node, (mode, ms) = wake(board, net)
    assert node.config.version == 2 and (board.time_ms() + ms) % 300000 == 0
    report = up_bodies(net)[-1]
    assert [(r["n"], r.get("vs")) for r in report["r"]] == [("config_refused", "bad_signature")]


def test_cycle_stays_awake_while_the_retained_flag_is_set():
    board = sim_board()
    net = FakeNet(board, retained={"ft/v1/node/node-7/awake": b"1"})
    node, (mode, ms) = wake(board, net)
    assert (mode, ms) == ("awake", cycle.AWAKE_POLL_MS)
    board.sleep_ms(ms)
    net.broker = {"retained": {"ft/v1/node/node-7/awake": b"0"}}
    node, (mode, ms) = wake(board, net)
    assert mode == "deep"


def test_cycle_safe_mode_after_repeated_crashes():
    board = sim_board()
    net = FakeNet(board)

    def crash():
        raise RuntimeError("a bug in a driver")

    def boot():
        node = cycle.Node(board, net, {"id": NODE, "key": KEY}, [sampling.sensor("x", "", crash, 1)], Watchdog())
        return node, node.run

    for _ in range(cycle.SAFE_MODE_BOOTS):
        node, run = boot()
        raises(RuntimeError, run)
        board.deep_sleep(0)  # the crash resets the chip (as the watchdog would): RTC memory is kept
    node, run = boot()
    mode, _ms = run()
    assert node.trace == ["boot", "enqueue", "connect", "drain", "notices", "sleep"] and mode == "deep"
    report = up_bodies(net)[-1]["r"]
    assert [(r["n"], r.get("vb"), r.get("v")) for r in report] == [("safe_mode", True, None), ("boots", None, 4)]
    node, run = boot()
    raises(RuntimeError, run)  # the safe wake ended cleanly: the next one is a normal one again
    board.power_cycle()
    node, run = boot()
    assert node.boots == 0  # a power cycle clears RTC memory: only resets that keep it count as crashes


def test_cycle_clock_sync_daily_and_unsynced_flag():
    board = sim_board()
    net = FakeNet(board)
    net.ntp_ok = False
    node, (mode, ms) = wake(board, net)
    assert node.synced_at == 0 and node.ntp_error is not None and node.errors == []
    net.ntp_ok, net.true_time_ms = True, board.time_ms() + ms + 2000  # the board's clock was 2 s slow
    board.deep_sleep(ms)
    node, (mode, ms) = wake(board, net)
    assert node.synced_at == net.true_time_ms
    assert up_bodies(net)[-1]["sync"] == -1
    board.deep_sleep(ms)
    board.i2c[0x44].temperature_c = 10.0
    node, (mode, ms) = wake(board, net)
    assert up_bodies(net)[-1]["sync"] == (board.time_ms() - node.synced_at) // 1000 < 900


def test_cycle_installs_a_signed_ota_and_keeps_it_after_a_healthy_wake():
    root = _root()
    try:
        board = sim_board()
        files = {"app/cycle.py": b"# new cycle\n" * 200}
        net = FakeNet(board, retained={"ft/v1/node/node-7/ota": manifest_frame(4, files)})
        net.files = files
        node, (mode, ms) = wake(board, net, ota.Updater(root))
        assert (mode, ms) == ("deep", 1000) and _read(root + "/app/cycle.py") == files["app/cycle.py"]
        board.deep_sleep(ms)
        updater = ota.Updater(root)
        node, (mode, ms) = wake(board, net, updater)  # the manifest is still retained: not installed twice
        assert mode == "deep" and node.errors == [] and updater.version == 4 and "trial" not in updater.state
        assert [r["n"] for b in up_bodies(net) for r in b["r"] if r["n"].startswith("ota")] == []
        net.broker = {"retained": {"ft/v1/node/node-7/ota": manifest_frame(5, {"app/x.py": b"x"}, key=bytes(32))}}
        board.deep_sleep(ms)
        wake(board, net, ota.Updater(root))
        report = up_bodies(net)[-1]["r"]
        assert [(r["n"], r.get("vs")) for r in report] == [("ota_refused", "bad_signature")]
    finally:
        ota.remove_tree(root)


def test_main_wires_the_sensors_named_in_the_settings():
    from firmware import main

    board = sim_board()
    board.adc_uv[34] = [1905000]
    settings = {
        "id": NODE,
        "key": binascii.hexlify(KEY).decode(),
        "host": "127.0.0.1",
        "sensors": {"sht3x": True, "battery_pin": 35, "soil_pin": 34},
    }
    node = main.node_from_settings(settings, board, FakeNet(board), Watchdog(), None)
    assert [s[0] for s in node.sensors] == ["soil_moisture", "air_temperature", "battery"]
    mode, _ms = node.run()
    sent = up_bodies(node.net)[0]
    assert mode == "deep" and sent["fw"] == main.FW and [r["n"] for r in sent["r"]] == [s[0] for s in node.sensors]
    # no calibration in the default config: only the soil probe's millivolts need one
    missing = [r["q"] & telemetry.Q_CALIBRATION_MISSING for r in sent["r"]]
    assert missing == [telemetry.Q_CALIBRATION_MISSING, 0, 0] and sent["r"][0]["v"] == 1905


def test_a_sensor_says_whether_it_needs_calibrating_and_carries_its_drivers_flags():
    board = sim_board()
    net = FakeNet(board, retained={"ft/v1/node/node-7/config": signed_config(
        2, {"calibration": {"air_temperature": {"offset": -0.5}, "probe": {"scale": 0.1}}})})
    wake(board, net)  # takes the config
    flags = [telemetry.Q_OUT_OF_RANGE]

    def failing():
        raise DriverError("no_reply", "silent")

    found = [
        sampling.sensor("air_temperature", "Cel", lambda: 20.0, 1),  # physical units: an entry corrects it
        sampling.sensor("probe", "mV", lambda: 1500, 1, True),  # raw: calibrated by the config's entry
        sampling.sensor("raw_adc", "mV", lambda: 1200, 1, True),  # raw, no entry: flagged
        sampling.sensor("leaf", "%", lambda: 104.0, 1, False, lambda: flags[0]),  # the driver's flags
        sampling.sensor("flow", "m3/h", failing, 1, False, lambda: telemetry.Q_COMM_ERROR),
    ]
    board.deep_sleep(3600 * 1000)
    cycle.Node(board, net, {"id": NODE, "key": KEY}, found, Watchdog()).run()
    records = dict((r["n"], (r.get("v"), r["q"])) for r in up_bodies(net)[-1]["r"])
    assert records["air_temperature"] == (19.5, 0) and records["probe"] == (150.0, 0)
    assert records["raw_adc"] == (1200, telemetry.Q_CALIBRATION_MISSING)
    assert records["leaf"] == (104.0, telemetry.Q_OUT_OF_RANGE) and records["flow"] == (None, telemetry.Q_COMM_ERROR)
    assert sampling.sensor("x", "", failing) == ("x", "", failing, None, False, None)


def test_main_signs_with_the_key_epoch_of_the_settings():
    from firmware import main

    def first_frame(extra):
        board = sim_board()
        settings = {"id": NODE, "key": binascii.hexlify(KEY).decode(), "host": "127.0.0.1",
                    "sensors": {"battery_pin": 35}}
        settings.update(extra)
        node = main.node_from_settings(settings, board, FakeNet(board), Watchdog(), None)
        node.run()
        return up_bodies(node.net)[0]

    assert first_frame({"ep": 3})["ep"] == 3
    assert first_frame({})["ep"] == main.FIRST_KEY_EPOCH == 1  # the cloud's first epoch of a node's key
    for bad in (-1, "2", True, 1.5):
        assert "ep must be" in str(raises(ValueError, first_frame, {"ep": bad}))


def test_version_and_build_come_from_the_version_module_and_set_the_ota_floor():
    from firmware import main

    assert main.FW == "fw/" + version.VERSION and isinstance(version.BUILD, int) and version.BUILD >= 1
    root = _root()
    try:
        board = sim_board()
        files = {"app/x.py": b"x"}
        net = FakeNet(board, retained={"ft/v1/node/node-7/ota": manifest_frame(5, files)})
        net.files = files
        node = cycle.Node(board, net, {"id": NODE, "key": KEY}, sensors(board), Watchdog(), ota.Updater(root, None, 5))
        assert node.fw == main.FW and node.run() != ("deep", 1000)  # build 5 runs already: not installed
        assert not ota._exists(root + "/app/x.py") and bodies([net.published()[0][1]])[0]["sw"] == main.FW
        board.deep_sleep(900000)
        net.broker = {"retained": {"ft/v1/node/node-7/ota": manifest_frame(6, files)}}
        node = cycle.Node(board, net, {"id": NODE, "key": KEY}, sensors(board), Watchdog(), ota.Updater(root, None, 5))
        assert node.run() == ("deep", 1000) and ota._exists(root + "/app/x.py")
    finally:
        ota.remove_tree(root)


def test_the_link_rssi_rides_once_in_the_next_frame_that_goes_anyway():
    board = sim_board()
    net = FakeNet(board)
    net.rssi_dbm = -71
    node, (mode, ms) = wake(board, net)
    assert [r["n"] for r in up_bodies(net)[0]["r"]] == ["air_temperature", "battery"]  # read after the frame
    board.deep_sleep(ms)
    net.rssi_dbm = -58
    node, (mode, ms) = wake(board, net)  # nothing moved: no frame, the RSSI waits (now this wake's)
    assert len(up_bodies(net)) == 1
    board.deep_sleep(ms)
    board.i2c[0x44].temperature_c = 30.0
    net.link_up = False  # offline: the frame is stored with the last RSSI, none newer is read
    node, (mode, ms) = wake(board, net)
    board.deep_sleep(ms)
    net.link_up, net.rssi_dbm = True, None  # a radio without a reading
    board.i2c[0x44].temperature_c = 31.0
    wake(board, net)
    sent = up_bodies(net)[1:]
    assert [[r["n"] for r in b["r"]] for b in sent] == [["air_temperature", "rssi"], ["air_temperature"]]
    rssi = sent[0]["r"][1]
    assert rssi["v"] == -58 and -2 * ms - 5000 < rssi["t"] < 0
    net.rssi_dbm = -80
    board.deep_sleep(ms)
    node, (mode, ms) = wake(board, net)  # nothing to send: -80 waits in RTC memory...
    assert len(up_bodies(net)) == 3 and node.rssi_at > 0
    board.power_cycle()  # ...which a power loss clears: the next frame has none
    board.i2c[0x44].temperature_c = 32.0
    wake(board, net)
    assert [r["n"] for r in up_bodies(net)[-1]["r"]] == ["air_temperature", "battery"]


def test_esp32_network_reads_the_rssi_of_the_joined_network():
    import sys

    from firmware.hal import Esp32Network

    class Wlan:
        joined = -63  # None: not joined, the driver raises OSError

        def __init__(self, interface):
            self.interface = interface

        def status(self, param):
            assert (self.interface, param) == (0, "rssi")
            if Wlan.joined is None:
                raise OSError(-1)
            return Wlan.joined

    class Network:
        STA_IF = 0
        WLAN = Wlan

    before = sys.modules.get("network")
    sys.modules["network"] = Network
    try:
        net = Esp32Network("farm", "secret")
        assert net.rssi() == -63
        Wlan.joined = None
        assert net.rssi() is None
    finally:
        if before is None:
            del sys.modules["network"]
        else:
            sys.modules["network"] = before


def warm_node(wakes=1):
    """A node after ``wakes`` wakes that each sent a frame (imports, tables, first NTP done).

    With 90 wakes every outbox segment has been used and the ring has wrapped round: the steady
    state of a node in the field, where the boot-time outbox scan costs the most.
    """
    board = sim_board()
    net = FakeNet(board)
    for i in range(wakes):
        board.i2c[0x44].temperature_c = 10.0 + i % 20
        board.deep_sleep(900000)
        wake(board, net)
    return board, net


def one_wake(board, net):
    """One full wake with a due heartbeat; returns the trace, sleep mode, board time spent, and heap
    ``(allocated building the node at boot, allocated by Node.run, allocated by the fake broker)``
    (MicroPython, collector disabled by the caller; zeros under CPython)."""
    board.deep_sleep(3600 * 1000)
    sockets = len(net.sockets)
    start = _heap()
    node = make_node(board, net)
    built = _heap()
    mode, _ms = node.run()
    fake_broker = sum(sock.heap for sock in net.sockets[sockets:])
    return node.trace, mode, board.ticks_ms(), (built - start, _heap() - built - fake_broker, fake_broker)
