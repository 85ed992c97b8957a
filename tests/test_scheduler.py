"""BusScheduler on simulated lines: decoded samples, stamping, a dead device, recovery, stop, writes."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from contract.models import Telemetry
from contract.telemetry import Q_CLOCK_UNSYNCED, Q_COMM_ERROR, Q_OUT_OF_RANGE, Q_STALE, telemetry
from device_specs.registry import MODELS_DIR, get_spec, parse_spec
from edge_agent import clock
from edge_agent.bus.breaker import Breaker
from edge_agent.bus.scheduler import BusScheduler
from edge_agent.config import BusConfig
from edge_agent.sample import Sample
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

SETPOINT_SPEC = """
schema: fieldtrust.device-spec/1
model: test-setpoint
version: 1.0.0
manufacturer: FieldTrust tests
name: a controller with a writable setpoint
category: greenhouse
source: {document: test fixture, revision: "1"}
interface: modbus-rtu
serial: {baud: 9600}
points:
  - {metric: air_temperature, unit: Cel, table: input, address: 0, type: int16, scale: 0.1}
  - {metric: setpoint, unit: Cel, table: holding, address: 10, type: int16, scale: 0.1, writable: true}
  - {metric: band, unit: Cel, table: holding, address: 11, type: float32, writable: true}
"""


class Collector:
    """on_sample target: keeps samples per device, with the monotonic time each arrived."""

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = defaultdict(list)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._cond = threading.Condition()

    def __call__(self, sample: Sample) -> None:
        with self._cond:
            self.samples[sample.device_id].append(sample)
            self.arrivals[sample.device_id].append(time.monotonic())
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), f"timed out; got {dict(self.samples)}"


def rtu_bus(port: str, devices: list[dict], **kw: object) -> BusConfig:
    return BusConfig.model_validate({"id": "rs485-1", "kind": "rtu", "port": port, "baud": 9600, "parity": "E",
                                     "devices": devices, **kw})


@contextmanager
def running(bus: BusConfig, collector: Collector, **kw: object) -> Iterator[BusScheduler]:
    sched = BusScheduler(bus, collector, **kw)  # type: ignore[arg-type]
    sched.start()
    try:
        yield sched
    finally:
        sched.stop()


def values(sample: Sample) -> dict[str, float | None]:
    return {r["n"]: r.get("v", r.get("vb", r.get("vs"))) for r in sample.records}


def test_several_specs_on_one_rtu_line_arrive_decoded_and_stamped() -> None:
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=5)
    soil2 = SimulatedDevice(get_spec("cwt-soil-7in1"), unit_id=2, seed=5)
    meter = SimulatedDevice(get_spec("eastron-sdm120-modbus"), unit_id=3, seed=5)
    soil.pin("soil_moisture", 27.3)
    soil.pin("soil_ph", 11.0)  # outside the spec's 3..9: kept and flagged
    soil2.pin("soil_temperature", -4.2)
    meter.pin("voltage", 231.5)
    got = Collector()
    with RtuBusSimulator([soil, soil2, meter], baud=9600, parity="E") as sim:
        bus = rtu_bus(sim.port, [
            {"id": "soil-a", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 0.6},
            {"id": "soil-b", "spec": "cwt-soil-7in1", "unit": 2, "poll_interval_s": 0.6},
            {"id": "meter", "spec": "eastron-sdm120-modbus", "unit": 3, "poll_interval_s": 0.6},
        ])
        with running(bus, got, clock_synced=lambda: False) as sched:
            got.wait_for(lambda: all(len(got.samples[d]) >= 2 for d in ("soil-a", "soil-b", "meter")))
            stats, health = sched.stats(), sched.device_health()
    a, b, m = got.samples["soil-a"][-1], got.samples["soil-b"][-1], got.samples["meter"][-1]
    assert values(a)["soil_moisture"] == 27.3 and values(b)["soil_temperature"] == -4.2
    assert values(m)["voltage"] == 231.5
    ph = next(r for r in a.records if r["n"] == "soil_ph")
    assert ph["v"] == 11.0 and ph["q"] == Q_OUT_OF_RANGE
    for sample in (a, b, m):
        assert sample.quality == Q_CLOCK_UNSYNCED
        assert {r["n"] for r in sample.records} == {p.metric for p in get_spec(
            {"soil-a": "jxct-soil-7in1", "soil-b": "cwt-soil-7in1", "meter": "eastron-sdm120-modbus"}[
                sample.device_id]).points}
        assert not any(r["q"] & Q_COMM_ERROR for r in sample.records)
        # stamped when read: bt is the first response's wall time, later reads carry an offset
        arrival = got.arrivals[sample.device_id][got.samples[sample.device_id].index(sample)]
        assert abs(sample.bt_ms / 1000 - (time.time() - (time.monotonic() - arrival))) < 0.2
        assert all(0 <= r["t"] < 200 for r in sample.records)
        Telemetry.model_validate(telemetry(sample.device_id, 1, 1, sample.bt_ms, sample.records, "t/1"))
    # the three devices do not fire together: phases are staggered across the interval
    firsts = sorted(got.samples[d][0].bt_ms for d in ("soil-a", "soil-b", "meter"))
    assert firsts[1] - firsts[0] > 100 and firsts[2] - firsts[1] > 100
    # one merged read per cycle per device: the meter's two reads, one each for the soil probes
    assert stats["transactions"] <= 4 * stats["cycles"]
    assert stats["samples"] >= 6 and stats["timeouts"] == 0
    assert {h.state for h in health.values()} == {"ok"} and all(h.last_good_ms for h in health.values())


def test_a_dead_device_does_not_starve_the_others(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.bus.scheduler")
    devices = [SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=u, seed=1) for u in (1, 2, 3)]
    devices[1].faults.no_answer = True
    got = Collector()
    interval = 0.4
    with RtuBusSimulator(devices, baud=9600, parity="E") as sim:
        bus = rtu_bus(
            sim.port,
            [{"id": f"probe-{u}", "spec": "jxct-soil-7in1", "unit": u, "poll_interval_s": interval} for u in (1, 2, 3)],
            timeout_ms=150, retries=1, breaker_failures=2, breaker_max_backoff_s=2,
        )
        with running(bus, got) as sched:
            time.sleep(4.0)
            stats, health = sched.stats(), sched.device_health()
    for dev_id in ("probe-1", "probe-3"):
        gaps = [b - a for a, b in zip(got.arrivals[dev_id], got.arrivals[dev_id][1:], strict=False)]
        assert len(got.samples[dev_id]) >= round(4.0 / interval) - 1  # every slot of the 4 s run polled
        # a poll can wait behind one attempt at the dead unit (~2 x 160 ms) and a read of the other good
        # device (~45 ms), never longer; on average it keeps its interval
        assert max(gaps) < interval + 0.45, gaps
        assert all(not r["q"] for s in got.samples[dev_id] for r in s.records)
    dead = got.samples["probe-2"]
    assert dead and all(r["q"] & Q_COMM_ERROR and "v" not in r for s in dead for r in s.records)
    assert len(dead) <= 5  # breaker: two failures, then probes after 1 s and 2 s (instead of ~10 polls)
    assert health["probe-2"].state == "down" and health["probe-2"].last_good_ms is None
    assert health["probe-1"].state == "ok"
    assert stats["overruns"] == 0 and stats["skipped"] >= 2
    assert stats["timeouts"] == len(dead) + 1  # only the first failure was retried
    downs = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(downs) == 1 and "probe-2" in downs[0].getMessage()


def test_device_that_goes_away_comes_back_and_the_breaker_closes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.bus.scheduler")
    dev = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=4, seed=2)
    got = Collector()
    with RtuBusSimulator([dev], baud=9600, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "probe", "spec": "jxct-soil-7in1", "unit": 4, "poll_interval_s": 0.2}],
                      timeout_ms=100, retries=0, breaker_failures=2, breaker_max_backoff_s=1)
        with running(bus, got) as sched:
            got.wait_for(lambda: len(got.samples["probe"]) >= 2)
            dev.faults.no_answer = True
            deadline = time.monotonic() + 3
            while sched.device_health()["probe"].state != "down" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sched.device_health()["probe"].state == "down"
            dev.faults.no_answer = False
            deadline = time.monotonic() + 3
            while sched.device_health()["probe"].state != "ok" and time.monotonic() < deadline:
                time.sleep(0.05)
            health = sched.device_health()["probe"]
    assert health.state == "ok" and health.errors >= 2
    last = got.samples["probe"][-1]
    assert not any(r["q"] for r in last.records)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert sum(1 for lvl, _ in messages if lvl == logging.ERROR) == 1
    assert any(lvl == logging.INFO and "answers again" in msg for lvl, msg in messages)


def test_stop_is_prompt_even_while_waiting_for_a_slow_answer() -> None:
    dev = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=0)
    dev.faults.no_answer = True
    with RtuBusSimulator([dev], baud=9600, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "probe", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 1}],
                      timeout_ms=5000, retries=3)
        sched = BusScheduler(bus, Collector())
        sched.start()
        time.sleep(0.3)  # the first read is now waiting for its 5 s timeout
        t0 = time.monotonic()
        sched.stop()
        took = time.monotonic() - t0
    assert took < 0.3
    assert not any(t.name == "bus-rs485-1" for t in threading.enumerate())
    assert sched.stats()["cancelled"] == 1 and sched.device_health()["probe"].errors == 0


def test_a_failing_consumer_does_not_stop_the_bus() -> None:
    dev = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=0)
    calls = []

    def explode(sample: Sample) -> None:
        calls.append(sample)
        raise RuntimeError("consumer bug")

    with RtuBusSimulator([dev], baud=19200, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "probe", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 0.1}],
                      baud=19200)
        sched = BusScheduler(bus, explode)
        sched.start()
        try:
            deadline = time.monotonic() + 3
            while len(calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sched.stop()
    assert len(calls) >= 3 and sched.stats()["callback_errors"] == len(calls)


def test_writes_are_serialised_with_polls_on_the_same_line(tmp_path) -> None:  # noqa: ANN001
    spec_file = tmp_path / "test-setpoint.yaml"
    spec_file.write_text(SETPOINT_SPEC)
    dev = SimulatedDevice(parse_spec(SETPOINT_SPEC), unit_id=9, seed=0)
    got = Collector()
    with RtuBusSimulator([dev], baud=19200, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "ctl", "spec": str(spec_file), "unit": 9, "poll_interval_s": 0.2}],
                      baud=19200)
        with running(bus, got) as sched:
            sched.write("ctl", "setpoint", 22.5).result(timeout=2)
            sched.write("ctl", "band", 1.25).result(timeout=2)
            n = len(got.samples["ctl"])
            got.wait_for(lambda: len(got.samples["ctl"]) >= n + 2)
            with pytest.raises(ValueError):
                sched.write("ctl", "air_temperature", 1.0)
            stats = sched.stats()
    last = values(got.samples["ctl"][-1])
    assert last["setpoint"] == 22.5 and last["band"] == 1.25
    assert stats["writes"] == 2 and stats["write_errors"] == 0


def test_samples_over_modbus_tcp() -> None:
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=8)
    meter = SimulatedDevice(get_spec("eastron-sdm120-modbus"), unit_id=2, seed=8)
    soil.pin("soil_ec", 1234)
    meter.pin("voltage", 229.0)
    got = Collector()
    with TcpSimulator([soil, meter]) as sim:
        bus = BusConfig.model_validate({
            "id": "tcp-gw", "kind": "tcp", "host": "127.0.0.1", "tcp_port": sim.port,
            "devices": [{"id": "soil", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 0.2},
                        {"id": "meter", "spec": "eastron-sdm120-modbus", "unit": 2, "poll_interval_s": 0.2}],
        })
        with running(bus, got) as sched:
            got.wait_for(lambda: len(got.samples["soil"]) >= 3 and len(got.samples["meter"]) >= 3)
            stats = sched.stats()
    assert values(got.samples["soil"][-1])["soil_ec"] == 1234
    assert values(got.samples["meter"][-1])["voltage"] == 229.0
    assert all(s.quality == 0 for s in got.samples["soil"])
    assert stats["timeouts"] == stats["link_errors"] == 0


def test_breaker_backs_off_exponentially_and_closes_on_success() -> None:
    b = Breaker(failures=3, base_s=1.0, max_s=5.0)
    assert not b.failure(0.0) and not b.failure(1.0) and b.allows(1.0)
    assert b.failure(2.0) and b.is_open  # the third consecutive failure opens it
    assert not b.allows(2.5) and b.allows(3.0)
    backoffs = []
    for now in (3.0, 10.0, 20.0, 30.0):  # failed probes: 2, 4, then capped at 5
        b.failure(now)
        backoffs.append(b.open_until - now)  # type: ignore[operator]
    assert backoffs == [2.0, 4.0, 5.0, 5.0]
    assert b.success() and not b.is_open and b.consecutive == 0
    assert not b.success()  # already closed: not a recovery


def test_clock_synced_follows_the_override_and_reads_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.ENV_OVERRIDE, "1")
    assert clock.clock_synced() is True
    monkeypatch.setenv(clock.ENV_OVERRIDE, "0")
    assert clock.clock_synced() is False
    monkeypatch.delenv(clock.ENV_OVERRIDE)
    state = clock.kernel_clock_state()
    if state is None:
        pytest.skip("adjtimex is not available here")
    ret, status, maxerror = state
    expected = ret != clock.TIME_ERROR and not status & clock.STA_UNSYNC and maxerror < clock.MAX_ERROR_US
    assert clock.clock_synced() is expected


STRICT_DEVICE = SETPOINT_SPEC.replace("model: test-setpoint", "model: test-strict") + """
timing: {max_registers_per_read: 2}
"""
LOOSER_SPEC = SETPOINT_SPEC.replace("model: test-setpoint", "model: test-looser") + """
  - {metric: dew_point, unit: Cel, table: holding, address: 40, type: int16, scale: 0.1}
"""


def test_a_refused_merged_read_is_split_and_an_exception_is_no_outage(
    tmp_path, caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.bus.scheduler")
    spec_file = tmp_path / "test-looser.yaml"
    spec_file.write_text(LOOSER_SPEC)  # merges setpoint+band (3 registers); has a point the device lacks
    dev = SimulatedDevice(parse_spec(STRICT_DEVICE), unit_id=2, seed=0)  # accepts two registers per read
    dev.pin("setpoint", 18.5)
    dev.pin("band", 0.5)
    got = Collector()
    with RtuBusSimulator([dev], baud=19200, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "ctl", "spec": str(spec_file), "unit": 2, "poll_interval_s": 0.15}],
                      baud=19200, breaker_failures=1)
        with running(bus, got) as sched:
            got.wait_for(lambda: len(got.samples["ctl"]) >= 4)
            health, stats = sched.device_health()["ctl"], sched.stats()
    first, last = values(got.samples["ctl"][0]), values(got.samples["ctl"][-1])
    assert first["setpoint"] == last["setpoint"] == 18.5 and last["band"] == 0.5  # no gap, even in the first cycle
    assert last["dew_point"] is None
    assert health.state == "degraded" and health.errors >= 4  # dew_point refused each cycle ...
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)  # ... but the device is not "down"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "one by one" in warnings[0]
    assert stats["exceptions"] == 1 + len(got.samples["ctl"])  # the merged read once, then dew_point per cycle


def test_a_stuck_modbus_sensor_is_flagged_stale_until_it_moves(tmp_path) -> None:  # noqa: ANN001
    text = (MODELS_DIR / "keller-series30-level.yaml").read_text().replace("stuck_after: 12", "stuck_after: 3")
    text = text.replace("model: keller-series30-level", "model: test-keller-stuck")
    spec_file = tmp_path / "test-keller-stuck.yaml"
    spec_file.write_text(text)
    t0, m0 = time.time(), time.monotonic()

    def fast_clock() -> float:  # a minute of weather per second: every poll sees a new noise draw
        return t0 + (time.monotonic() - m0) * 60

    dev = SimulatedDevice(parse_spec(text), unit_id=1, seed=9, clock=fast_clock)
    got = Collector()
    with RtuBusSimulator([dev], baud=19200, parity="E") as sim:
        bus = rtu_bus(sim.port, [{"id": "well", "spec": str(spec_file), "unit": 1, "poll_interval_s": 0.1}],
                      baud=19200)
        with running(bus, got) as sched:
            got.wait_for(lambda: len(got.samples["well"]) >= 5)
            moving = len(got.samples["well"])
            dev.faults.stuck = True
            got.wait_for(lambda: len(got.samples["well"]) >= moving + 6)
            stuck = len(got.samples["well"])
            dev.faults.stuck = False
            got.wait_for(lambda: len(got.samples["well"]) >= stuck + 2)
            stats = sched.stats()
    samples = got.samples["well"]
    flags = [{r["n"]: r["q"] for r in s.records} for s in samples]
    assert not any(q & Q_STALE for f in flags[:moving] for q in f.values())
    frozen = samples[moving + 1 : stuck]  # the first poll after the fault may have read before it
    assert len({values(s)["water_level"] for s in frozen}) == 1 and len(frozen) >= 5
    for f in flags[moving + 3 : stuck]:  # from the third identical poll on, every point with stuck_after
        assert {n for n, q in f.items() if q & Q_STALE} == {"water_pressure", "water_temperature", "water_level"}
    assert all("v" in r for s in frozen for r in s.records)  # flagged, not dropped
    assert all(not q & Q_STALE for q in flags[-1].values())  # moving again: the flag clears
    assert stats["stale"] >= 3 * (len(frozen) - 2)
