"""Serial line-protocol sensors: the line codec, the simulator on a real pty, the scheduler, config and the agent.

The two shipped line sensors stand for the two kinds: a MaxBotix range finder that talks unasked
(free-running) and a Gill WindSonic that answers a poll, with a checksum on every line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from contract.models import Telemetry
from contract.telemetry import Q_COMM_ERROR, Q_OUT_OF_RANGE, Q_STALE, telemetry
from device_specs.line_codec import LineCodec
from device_specs.registry import MODELS_DIR, SpecError, get_spec, parse_spec
from edge_agent.agent import Agent
from edge_agent.bus.line import LineTransport
from edge_agent.bus.scheduler import BusScheduler
from edge_agent.config import BusConfig, ConfigError, parse_config
from edge_agent.sample import Sample
from fieldtrust import processes
from hardware.cloud_peer import CloudPeer
from hardware.line_sensor import LineSensorSimulator

SONAR, ANEMOMETER = "maxbotix-hrxl-maxsonar-wr", "gill-windsonic-polled"
KEY_HEX = "11" * 32


class Collector:
    """on_sample target that keeps every sample; ``wait_for`` polls a predicate over them."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def __call__(self, sample: Sample) -> None:
        self.samples.append(sample)

    def wait_for(self, predicate: Callable[[list[Sample]], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.samples):
            assert time.monotonic() < deadline, f"timed out; got {self.samples[-3:]}"
            time.sleep(0.02)


def serial_bus(port: str, spec: str, interval: float = 0.15, **kw: object) -> BusConfig:
    return BusConfig.model_validate({"id": "serial-1", "kind": "serial", "port": port, "timeout_ms": 300,
                                     "devices": [{"id": "sensor", "spec": spec, "poll_interval_s": interval}], **kw})


@contextmanager
def scheduled(bus: BusConfig, got: Collector) -> Iterator[BusScheduler]:
    sched = BusScheduler(bus, got)
    sched.start()
    try:
        yield sched
    finally:
        sched.stop()


def values(sample: Sample) -> dict[str, object]:
    return {r["n"]: r.get("v") for r in sample.records}


def quality(sample: Sample) -> dict[str, int]:
    return {r["n"]: r["q"] for r in sample.records}


def fast_clock(factor: float) -> Callable[[], float]:
    """Simulated time running ``factor`` times faster than real time, so noisy signals move between polls."""
    t0, m0 = time.time(), time.monotonic()
    return lambda: t0 + (time.monotonic() - m0) * factor


# -- the codec and the spec checks ----------------------------------------------------------------


def test_the_windsonic_manual_example_reads_and_its_checksum_is_checked() -> None:
    codec = LineCodec(get_spec(ANEMOMETER))
    example = b"\x02Q,229,002.74,M,00,\x0316"  # WindSonic manual, section 9.1
    assert codec.values(example) == {"wind_direction": 229, "wind_speed": 2.74, "sensor_status": 0}
    assert codec.values(example[:-1] + b"7") is None  # one bit off in the checksum
    assert codec.values(b"\x02Q,229,002.75,M,00,\x0316") is None  # one digit off in the data
    assert codec.values(b"\xff\x13" + example) is not None  # noise in front costs nothing
    assert codec.render({"wind_direction": 229, "wind_speed": 2.74, "sensor_status": 0}) == example + b"\r\n"
    assert codec.request == b"?Q" and codec.terminator == b"\r\n"
    padded = b"\x02Q,999,999.99,M,04,\x03" + b"%02X" % 0x0B  # both axes failed: data padded with 9s
    assert codec.fields(padded) is None  # wrong checksum for that line ...
    good = codec.render({"wind_direction": 999, "wind_speed": 999.99, "sensor_status": 4}).removesuffix(b"\r\n")
    assert codec.values(good) == {"wind_direction": 999, "wind_speed": 999.99, "sensor_status": 4}  # ... this one


def test_the_sonar_line_reads_in_metres() -> None:
    codec = LineCodec(get_spec(SONAR))
    assert codec.values(b"R1234") == {"distance_to_water": 1.234}
    assert codec.values(b"R0300") == {"distance_to_water": 0.3}
    assert codec.values(b"R12a4") is None and codec.values(b"R123") is None and codec.values(b"") is None
    assert codec.request is None and codec.terminator == b"\r"
    assert codec.render({"distance_to_water": 2.5}) == b"R2500\r"


LINE_SPEC = """
schema: fieldtrust.device-spec/1
model: test-line
version: 1.0.0
manufacturer: FieldTrust tests
name: a polled line sensor
category: weather
source: {document: test fixture, revision: "1"}
interface: serial-line
line: {request: 'SEND\\r\\n', pattern: 'T=\\s*(?P<t>-?\\d+\\.\\d)', terminator: '\\r\\n', format: 'T={t:5.1f}'}
points:
  - {metric: air_temperature, unit: Cel, field: t, type: float32, range: [-40, 60], stuck_after: 3}
"""


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("format: 'T={t:5.1f}'", "format: 'X={t:5.1f}'"), "line.format: writes"),
        (("format: 'T={t:5.1f}'", "format: 'T={temp:5.1f}'"), "line.format: temp: not a named group"),
        (("stuck_after: 3", "stuck_after: 1"), "points[0] (air_temperature).stuck_after"),
        (("terminator: '\\r\\n',", "terminator: '\\xZZ',"), "line.terminator: not bytes"),
        (("terminator: '\\r\\n',", "terminator: '\\r\\n', checksum: xor8-hex,"), "line.pattern: xor8-hex needs"),
        (("type: float32", "type: bits"), "points[0] (air_temperature).stuck_after: only for numbers"),
    ],
)
def test_line_spec_errors_name_the_key(change: tuple[str, str], where: str) -> None:
    parse_spec(LINE_SPEC)  # the fixture itself is valid
    assert LINE_SPEC.count(change[0]) == 1
    with pytest.raises(SpecError) as err:
        parse_spec(LINE_SPEC.replace(*change), "x.yaml")
    assert f"x.yaml: {where}" in str(err.value)


# -- both sensors through the scheduler ----------------------------------------------------------------


def test_both_line_sensors_arrive_decoded_and_stamped_through_the_scheduler() -> None:
    got_sonar, got_wind = Collector(), Collector()
    with LineSensorSimulator(get_spec(SONAR), seed=1, rate_hz=20) as sonar, \
            LineSensorSimulator(get_spec(ANEMOMETER), seed=1) as wind:
        sonar.pin("distance_to_water", 1.234)
        wind.pin("wind_speed", 3.21)
        wind.pin("wind_direction", 229)
        with scheduled(serial_bus(sonar.port, SONAR), got_sonar) as s1, \
                scheduled(serial_bus(wind.port, ANEMOMETER), got_wind) as s2:
            got_sonar.wait_for(lambda s: len(s) >= 4)
            got_wind.wait_for(lambda s: len(s) >= 4)
            stats, wind_stats, health = s1.stats(), s2.stats(), {**s1.device_health(), **s2.device_health()}
        requests = wind.stats.requests
    assert {values(s)["distance_to_water"] for s in got_sonar.samples} == {1.234}
    assert values(got_wind.samples[-1]) == {"wind_direction": 229, "wind_speed": 3.21, "sensor_status": 0}
    for sample in (*got_sonar.samples, *got_wind.samples):
        assert all(r["q"] == 0 and r["t"] == 0 for r in sample.records)
        Telemetry.model_validate(telemetry(sample.device_id, 1, 1, sample.bt_ms, sample.records, "t/1", 0))
        assert abs(sample.bt_ms / 1000 - time.time()) < 10
    assert health["sensor"].state == "ok" and health["sensor"].last_good_ms
    assert stats["lines"] == stats["samples"] >= 4 and stats["timeouts"] == stats["garbage_lines"] == 0
    # the sonar talks unasked at 20 Hz while the gateway reads ~7 times a second: older lines are dropped
    assert stats["discarded_lines"] > 0
    assert wind_stats["transactions"] == wind_stats["lines"] and requests >= wind_stats["transactions"]


def test_a_free_running_sensor_is_never_read_from_stale_buffered_lines() -> None:
    got = Collector()
    with LineSensorSimulator(get_spec(SONAR), seed=2, rate_hz=50) as sonar:
        sonar.pin("distance_to_water", 0.75)
        with scheduled(serial_bus(sonar.port, SONAR, interval=0.6), got) as sched:
            got.wait_for(lambda s: len(s) >= 1)
            time.sleep(0.3)  # ~15 more lines wait in the port's buffer ...
            sonar.faults.no_answer = True  # ... and then the sensor dies
            got.wait_for(lambda s: len(s) >= 2)
            sonar.faults.no_answer = False
            got.wait_for(lambda s: len(s) >= 3)
            stats = sched.stats()
    first, dead, back = got.samples[:3]
    assert values(first)["distance_to_water"] == values(back)["distance_to_water"] == 0.75
    assert quality(dead)["distance_to_water"] & Q_COMM_ERROR and "v" not in dead.records[0]
    assert stats["discarded_lines"] >= 10 and stats["timeouts"] >= 1


def test_garbage_on_the_line_is_counted_skipped_and_recovered_from() -> None:
    got_sonar, got_wind = Collector(), Collector()
    with LineSensorSimulator(get_spec(SONAR), seed=3, rate_hz=40) as sonar, \
            LineSensorSimulator(get_spec(ANEMOMETER), seed=3) as wind:
        sonar.pin("distance_to_water", 2.5)
        wind.pin("wind_speed", 7.5)
        sonar.faults.garbage_rate = 1.0  # every line: noise in front of it, or noise instead of it
        wind.faults.garbage_rate = 1.0
        with scheduled(serial_bus(sonar.port, SONAR), got_sonar) as s1, \
                scheduled(serial_bus(wind.port, ANEMOMETER, breaker_failures=50), got_wind) as s2:
            got_sonar.wait_for(lambda s: len(s) >= 4 and s1.stats()["garbage_lines"] >= 2)
            got_wind.wait_for(lambda s: len(s) >= 2)
            noisy_wind = s2.stats()
            wind.faults.garbage_rate = 0.0
            wind.faults.crc_error_rate = 1.0  # every line now carries a wrong checksum
            time.sleep(0.5)
            wind.faults.clear()
            n = len(got_wind.samples)
            got_wind.wait_for(lambda s: len(s) >= n + 2)
            sonar_stats, wind_stats = s1.stats(), s2.stats()
    # noise before a reading costs nothing, noise instead of one is skipped: every sonar sample has its value
    assert {values(s)["distance_to_water"] for s in got_sonar.samples} == {2.5}
    assert sonar_stats["garbage_lines"] > 0 and sonar.stats.garbage_sent > 0
    # the anemometer answers each poll with noise (some of it in front of a good answer)
    assert noisy_wind["garbage_lines"] > 0 and noisy_wind["frame_errors"] > 0
    assert wind.stats.crc_errors_sent > 0 and wind_stats["garbage_lines"] > noisy_wind["garbage_lines"]
    assert values(got_wind.samples[-1])["wind_speed"] == 7.5 and not any(quality(got_wind.samples[-1]).values())
    assert wind_stats["internal_errors"] == sonar_stats["internal_errors"] == 0


def test_a_dead_sensor_opens_the_breaker_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.bus.scheduler")
    got = Collector()
    with LineSensorSimulator(get_spec(ANEMOMETER), seed=4) as wind:
        bus = serial_bus(wind.port, ANEMOMETER, interval=0.1, timeout_ms=100, retries=0, breaker_failures=2,
                         breaker_max_backoff_s=1)
        with scheduled(bus, got) as sched:
            got.wait_for(lambda s: len(s) >= 2)
            wind.faults.no_answer = True
            deadline = time.monotonic() + 3
            while sched.device_health()["sensor"].state != "down" and time.monotonic() < deadline:
                time.sleep(0.02)
            down = sched.device_health()["sensor"]
            time.sleep(0.6)
            polls_while_down = wind.stats.requests
            time.sleep(0.5)
            probes = wind.stats.requests - polls_while_down
            wind.faults.no_answer = False
            deadline = time.monotonic() + 3
            while sched.device_health()["sensor"].state != "ok" and time.monotonic() < deadline:
                time.sleep(0.02)
            up = sched.device_health()["sensor"]
    assert down.state == "down" and up.state == "ok" and up.errors >= 2
    assert probes <= 1  # open: a probe a second at most, instead of ten polls
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "sensor" in errors[0] and wind.port in errors[0]
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_stuck_line_sensor_is_flagged_stale_and_clears_when_it_moves(tmp_path: Path) -> None:
    text = (MODELS_DIR / f"{ANEMOMETER}.yaml").read_text()
    text = text.replace(f"model: {ANEMOMETER}", "model: test-windsonic-stuck")
    text = text.replace("range: [0, 60], poll_interval_s: 60,", "range: [0, 60], poll_interval_s: 60, stuck_after: 3,")
    spec_file = tmp_path / "test-windsonic-stuck.yaml"
    spec_file.write_text(text)
    got = Collector()
    # simulated time runs 100x: the wind's gusts (a new draw every 5 s) change between 0.1 s polls
    with LineSensorSimulator(parse_spec(text), seed=5, clock=fast_clock(100)) as wind, \
            scheduled(serial_bus(wind.port, str(spec_file), interval=0.1), got) as sched:
        got.wait_for(lambda s: len(s) >= 5)
        moving = len(got.samples)
        wind.faults.stuck = True
        got.wait_for(lambda s: len(s) >= moving + 5)
        stuck = len(got.samples)
        wind.faults.stuck = False
        got.wait_for(lambda s: len(s) >= stuck + 3)
        stats = sched.stats()
    speed_q = [quality(s)["wind_speed"] for s in got.samples]
    assert not any(q & Q_STALE for q in speed_q[:moving])
    frozen = got.samples[moving + 1: stuck]  # the first reading after the fault may predate it
    assert len({values(s)["wind_speed"] for s in frozen}) == 1
    assert all(quality(s)["wind_speed"] & Q_STALE for s in frozen[2:])  # from the third identical poll on
    assert all("v" in next(r for r in s.records if r["n"] == "wind_speed") for s in frozen)  # value kept
    assert not speed_q[-1] & Q_STALE  # it moves again
    assert not any(quality(s)["wind_direction"] & Q_STALE for s in got.samples)  # no stuck_after there
    assert stats["stale"] >= len(frozen) - 2


# -- configuration -------------------------------------------------------------------------------------


def config_text(*buses: dict) -> str:
    return yaml.safe_dump({"gateway": {"id": "gw", "tenant": "t", "key_hex": KEY_HEX}, "buses": list(buses)})


@pytest.mark.parametrize(
    ("bus", "message"),
    [
        ({"id": "s", "kind": "serial", "port": "/dev/x", "devices": [{"id": "d", "spec": "jxct-soil-7in1"}]},
         "buses[0].devices[0].spec: jxct-soil-7in1 is a modbus-rtu sensor and cannot sit on a serial-line bus"),
        ({"id": "r", "kind": "rtu", "port": "/dev/x", "devices": [{"id": "d", "spec": SONAR}]},
         f"buses[0].devices[0].spec: {SONAR} is a serial-line sensor and cannot sit on a modbus-rtu bus"),
        ({"id": "t", "kind": "tcp", "host": "h", "tcp_port": 502, "devices": [{"id": "d", "spec": ANEMOMETER}]},
         f"buses[0].devices[0].spec: {ANEMOMETER} is a serial-line sensor and cannot sit on a modbus-tcp bus"),
        ({"id": "s", "kind": "serial", "devices": [{"id": "d", "spec": SONAR}]}, "buses[0]: port: required"),
        ({"id": "s", "kind": "serial", "port": "/dev/x",
          "devices": [{"id": "a", "spec": SONAR}, {"id": "b", "spec": SONAR, "unit": 2}]},
         "buses[0]: devices: a serial bus carries one sensor"),
        ({"id": "r", "kind": "rtu", "port": "/dev/x", "data_bits": 7}, "buses[0]: data_bits: Modbus rtu uses 8"),
        ({"id": "s", "kind": "serial", "port": "/dev/x", "data_bits": 6}, "buses[0].data_bits"),
    ],
)
def test_a_sensor_on_the_wrong_kind_of_bus_is_refused_naming_the_field(bus: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config_text(bus), "gw.yaml")
    assert f"gw.yaml: {message}" in str(err.value)


def test_a_serial_bus_with_one_line_sensor_and_a_7e1_line_is_valid() -> None:
    cfg = parse_config(config_text({"id": "s", "kind": "serial", "port": "/dev/x", "baud": 4800, "parity": "E",
                                    "data_bits": 7, "devices": [{"id": "d", "spec": ANEMOMETER},
                                                                {"id": "spare", "spec": SONAR, "enabled": False}]}))
    assert cfg.buses[0].bits_per_char == 10


# -- the agent, end to end --------------------------------------------------------------------------------


def test_readings_of_a_serial_sensor_reach_the_cloud(shared_broker: tuple[str, int], tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    key = os.urandom(32)
    with LineSensorSimulator(get_spec(ANEMOMETER), seed=6) as wind:
        wind.pin("wind_speed", 4.56)
        cfg = parse_config(yaml.safe_dump({
            "gateway": {"id": f"gw-{tag}", "tenant": f"t-{tag}", "key_hex": key.hex(), "data_dir": str(tmp_path)},
            "intake": {"enabled": False},
            "uplink": {"broker": {"host": shared_broker[0], "port": shared_broker[1]}, "batch_max_wait_s": 0.1,
                       "receipt_timeout_s": 2, "session_expiry_s": 60},
            "health": {"interval_s": 0.5},
            "buses": [{"id": "mast", "kind": "serial", "port": wind.port,
                       "devices": [{"id": "anemometer", "spec": ANEMOMETER, "poll_interval_s": 0.2}]}],
        }))
        agent = Agent(cfg, clock_synced=lambda: True)
        with CloudPeer(shared_broker[0], shared_broker[1], f"t-{tag}", f"gw-{tag}", key) as peer:
            agent.start()
            try:
                assert peer.wait_for(lambda p: len(p.values("anemometer", "wind_speed")) >= 3)
                assert peer.wait_for(lambda p: any("anemometer" in h.devices for h in p.health))
            finally:
                agent.stop()
    assert set(peer.values("anemometer", "wind_speed")) == {4.56}
    assert all(v is not None for v in peer.values("anemometer", "wind_direction"))
    health = next(h for h in reversed(peer.health) if "anemometer" in h.devices)
    assert health.devices["anemometer"].state == "ok" and health.counters["bus.mast.lines"] >= 3


# -- the command line -------------------------------------------------------------------------------------


def test_sim_line_prints_its_port_first_and_answers_the_gateway_transport() -> None:
    proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "sim", "line", "--spec", SONAR,
                            "--rate-hz", "20", "--fault", "late:5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("listening line /dev/") and "9600 8N1" in first and "free-running at 20" in first
        transport = LineTransport(first.split()[2])
        try:
            codec = LineCodec(get_spec(SONAR))
            reading, elapsed = transport.read_line(codec.request, codec.terminator, codec.values, 0.5)
        finally:
            transport.close()
    finally:
        rc = processes.stop(proc)
    assert 0.3 <= reading["distance_to_water"] <= 5.0 and elapsed < 0.5  # type: ignore[operator]
    assert rc == 0
    bad = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "sim", "line", "--spec", "jxct-soil-7in1"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = bad.communicate(timeout=30)
    finally:
        processes.stop(bad)
    assert bad.returncode == 2 and "not serial-line" in err


def test_out_of_range_values_are_kept_and_flagged() -> None:
    got = Collector()
    with LineSensorSimulator(get_spec(ANEMOMETER), seed=7) as wind:
        wind.pin("wind_speed", 999.99)  # what the sensor writes when both axes fail
        wind.pin("sensor_status", 4)
        with scheduled(serial_bus(wind.port, ANEMOMETER), got):
            got.wait_for(lambda s: len(s) >= 1)
    sample = got.samples[0]
    assert values(sample)["wind_speed"] == 999.99 and values(sample)["sensor_status"] == 4
    assert quality(sample)["wind_speed"] == quality(sample)["sensor_status"] == Q_OUT_OF_RANGE
