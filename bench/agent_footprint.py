"""Agent footprint: resident memory with 50 simulated devices, and CPU seconds per 1,000 readings.

``python -m bench.agent_footprint [--devices 50] [--interval 1.0] [--seconds 20]``

Everything runs as separate processes so that only the agent is measured: the Modbus TCP
simulator (``fieldtrust sim modbus --tcp``), a private Mosquitto (the gateway's local broker and
the cloud broker at once), and the agent itself (``fieldtrust edge run``).  A cloud peer in this
process receipts the batches, so the outbox runs in its steady state (captured, sent, deleted).
A *reading* is one device's sample: one telemetry body of 7 values (jxct-soil-7in1).  Devices
are polled every ``--interval`` seconds, far more often than in a field (minutes), to load the
agent.  The baseline, measured in the same run, is the same agent with no devices: what the
agent costs before it reads anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from bench import Figure
from fieldtrust import processes
from fieldtrust.services.mosquitto import PrivateMosquitto
from hardware.cloud_peer import CloudPeer

REPO = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
SPEC = "jxct-soil-7in1"
WARMUP_S = 5.0


def start_simulator(devices: int) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "fieldtrust.cli.main", "sim", "modbus", "--tcp", "0", "--status-every", "3600"]
    for unit in range(1, devices + 1):
        cmd += ["--spec", SPEC, "--unit", str(unit)]
    proc = processes.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    line = proc.stdout.readline()  # "listening tcp 127.0.0.1:PORT units 1,2,..."
    if not line.startswith("listening tcp"):
        processes.stop(proc)
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, int(line.split()[2].rsplit(":", 1)[1])


def agent_config(workdir: Path, broker: PrivateMosquitto, sim_port: int | None, devices: int, interval: float) -> Path:
    broker_cfg = {"host": broker.host, "port": broker.port}
    cfg: dict = {
        "gateway": {"id": "gw-bench", "tenant": "bench", "key_hex": KEY.hex(), "data_dir": str(workdir)},
        "intake": {"broker": broker_cfg},
        "uplink": {"broker": broker_cfg, "batch_max_wait_s": 1.0},
        "health": {"interval_s": 10},
        "logging": {"level": "WARNING"},
    }
    if sim_port is not None:
        cfg["buses"] = [{
            "id": "tcp", "kind": "tcp", "host": "127.0.0.1", "tcp_port": sim_port,
            "devices": [{"id": f"soil-{u:02d}", "spec": SPEC, "unit": u, "poll_interval_s": interval}
                        for u in range(1, devices + 1)],
        }]
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure_agent(config: Path, peer: CloudPeer, seconds: float) -> dict[str, float]:
    """Start the agent, let it warm up, then measure RSS, CPU and readings stored by the cloud over ``seconds``."""
    env = {**os.environ, "FIELDTRUST_ASSUME_CLOCK_SYNCED": "1"}
    agent = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "edge", "run", "--config", str(config)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = psutil.Process(agent.pid)
        time.sleep(WARMUP_S)
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}")
        cpu0, stored0, t0 = sum(proc.cpu_times()[:2]), peer.counts["stored"], time.monotonic()
        peak = 0
        while time.monotonic() - t0 < seconds:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.5)
        cpu1, stored1, t1 = sum(proc.cpu_times()[:2]), peer.counts["stored"], time.monotonic()
        rss = proc.memory_info().rss
        uss = proc.memory_full_info().uss
    finally:
        processes.stop(agent)
    readings = stored1 - stored0
    return {
        "rss_mb": rss / 2**20,
        "peak_rss_mb": max(peak, rss) / 2**20,
        "uss_mb": uss / 2**20,
        "cpu_s": cpu1 - cpu0,
        "readings": readings,
        "readings_per_s": readings / (t1 - t0),
        "cpu_s_per_1000": (cpu1 - cpu0) / readings * 1000 if readings else float("nan"),
        "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
    }


def measure(devices: int = 50, interval: float = 1.0, seconds: float = 20.0) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the gateway broker's settings, with a cloud broker's packet limit (batches reach 256 KiB)
        with PrivateMosquitto(work / "broker", overrides={"max_packet_size": str(2**20 + 4096)}) as broker:
            peer = CloudPeer(broker.host, broker.port, "bench", "gw-bench", KEY).start()
            sim, port = start_simulator(devices)
            try:
                (work / "loaded").mkdir()
                loaded = measure_agent(agent_config(work / "loaded", broker, port, devices, interval), peer, seconds)
                (work / "idle").mkdir()
                idle = measure_agent(agent_config(work / "idle", broker, None, 0, interval), peer, seconds / 2)
            finally:
                processes.stop(sim)
                peer.stop()
    return {"loaded": loaded, "idle": idle}


def run(quick: bool) -> list[Figure]:
    """The result protocol (bench/__init__.py): the loaded agent against the same agent with no devices."""
    r = measure(50, 1.0, 4.0 if quick else 20.0)
    loaded, idle = r["loaded"], r["idle"]
    base = "same agent, no devices"
    return [
        Figure("agent_rss_50_devices", round(loaded["rss_mb"], 1), "MB", base, round(idle["rss_mb"], 1), target=60.0,
               higher_is_better=False),
        Figure("agent_uss_50_devices", round(loaded["uss_mb"], 1), "MB", base, round(idle["uss_mb"], 1),
               higher_is_better=False),
        Figure("agent_cpu_50_devices_1s_polls", round(loaded["cpu_pct"], 2), "% of a core", base,
               round(idle["cpu_pct"], 2), higher_is_better=False),
        Figure("agent_readings_stored", round(loaded["readings_per_s"], 1), "readings/s",
               note=f"CPU {loaded['cpu_s_per_1000']:.2f} s per 1,000 readings"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval per device, seconds")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window after a 5 s warm-up")
    args = parser.parse_args()
    r = measure(args.devices, args.interval, args.seconds)
    loaded, idle = r["loaded"], r["idle"]
    print(f"agent with {args.devices} simulated Modbus TCP devices polled every {args.interval:g} s "
          f"({SPEC}, 7 values per reading), {args.seconds:g} s window")
    print(f"  resident memory (RSS)        {loaded['rss_mb']:7.1f} MB  (peak {loaded['peak_rss_mb']:.1f} MB, "
          f"unique {loaded['uss_mb']:.1f} MB; target <= 60 MB)")
    print(f"  readings stored by the cloud {loaded['readings']:7.0f}     ({loaded['readings_per_s']:.1f}/s)")
    print(f"  CPU                          {loaded['cpu_s']:7.2f} s   ({loaded['cpu_pct']:.1f} % of one core)")
    print(f"  CPU seconds per 1,000 readings {loaded['cpu_s_per_1000']:5.2f} s")
    print("baseline: the same agent with no devices (intake, uplink, health only)")
    print(f"  resident memory (RSS)        {idle['rss_mb']:7.1f} MB  (unique {idle['uss_mb']:.1f} MB)")
    print(f"  CPU                          {idle['cpu_pct']:7.2f} % of one core")


if __name__ == "__main__":
    main()
