"""``fieldtrust sim``: hardware simulators."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from device_specs.registry import SpecError, get_spec
from device_specs.schema import DeviceSpec, Parity
from hardware.faults import FAULT_SYNTAX
from hardware.line_sensor import LineSensorSimulator
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator
from hardware.virtual_board import BENCH_WIRING, REFERENCE_WIRING, SENSORS, BoardUnavailable, VirtualBoard

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _usage_error(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


@app.command()
def modbus(
    spec: list[str] = typer.Option(..., "--spec", help="Sensor model (id, model@version or YAML file); repeat."),
    tcp: int | None = typer.Option(None, "--tcp", min=0, max=65535, help="Serve Modbus TCP on this port (0: any)."),
    rtu: bool = typer.Option(False, "--rtu", help="Serve an RTU line on a new pty (its path is printed)."),
    unit: list[int] = typer.Option([], "--unit", min=1, max=247, help="Unit id per --spec (default 1, 2, 3...)."),
    baud: int | None = typer.Option(None, "--baud", min=300, max=4_000_000,
                                    help="RTU baud rate (default: the first spec's)."),
    parity: str | None = typer.Option(None, "--parity", help="RTU parity N, E or O (default: the first spec's)."),
    stop_bits: int | None = typer.Option(None, "--stop-bits", min=1, max=2, help="RTU stop bits."),
    turnaround_ms: float = typer.Option(0.0, "--turnaround-ms", min=0, help="Device think time before answering."),
    fault: list[str] = typer.Option([], "--fault", help=f"[UNIT=]FAULT, FAULT one of: {FAULT_SYNTAX}; repeat."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weather, noise and fault dice."),
    host: str = typer.Option("127.0.0.1", "--host", help="TCP address to listen on."),
    status_every: float = typer.Option(5.0, "--status-every", min=0.1, help="Seconds between status lines."),
) -> None:
    """Simulate Modbus devices from their specs until SIGINT/SIGTERM.

    The first line on stdout says where it listens, e.g. ``listening rtu /dev/pts/7 9600 8E1 units 1,2``
    or ``listening tcp 127.0.0.1:5020 units 1``; status lines go to stderr.
    """
    if (tcp is None) == (not rtu):
        raise _usage_error("give exactly one of --tcp PORT or --rtu")
    specs = _load_specs(spec)
    units = unit or list(range(1, len(specs) + 1))
    if len(units) != len(specs):
        raise _usage_error(f"{len(units)} --unit for {len(specs)} --spec; give one per spec or none")
    if len(set(units)) != len(units):
        raise _usage_error(f"unit ids must differ; got {units}")
    devices = [SimulatedDevice(s, unit_id=u, seed=seed) for s, u in zip(specs, units, strict=True)]
    _apply_faults(devices, fault)
    units_text = ",".join(str(u) for u in units)
    sim: RtuBusSimulator | TcpSimulator
    if rtu:
        line = next((s.serial for s in specs if s.serial is not None), None)
        try:
            sim = RtuBusSimulator(devices, baud=baud if baud is not None else (line.baud if line else 9600),
                                  parity=_parity(parity, line.parity.value if line else "N"),
                                  stop_bits=stop_bits if stop_bits is not None else (line.stop_bits if line else 1),
                                  turnaround_ms=turnaround_ms)
        except ValueError as exc:
            raise _usage_error(str(exc)) from None
        defaults = {f"{s.serial.baud} 8{s.serial.parity.value}{s.serial.stop_bits}" for s in specs if s.serial}
        if len(defaults) > 1:
            err.print(f"[yellow]warning:[/yellow] the specs' line defaults differ ({', '.join(sorted(defaults))}); "
                      f"every device answers at {sim.line}")
        sim.start()
        where = f"rtu {sim.port} {sim.line}"
    else:
        try:
            sim = TcpSimulator(devices, host=host, port=tcp or 0).start()
        except OSError as exc:
            raise _usage_error(f"cannot listen on {host}:{tcp}: {exc}") from None
        where = f"tcp {host}:{sim.port}"
    print(f"listening {where} units {units_text}", flush=True)
    _run_until_signalled(sim, devices, status_every)


def _load_specs(names: list[str]) -> list[DeviceSpec]:
    specs = []
    for name in names:
        try:
            s = get_spec(name)
        except SpecError as exc:
            raise _usage_error(str(exc)) from None
        if not s.interface.is_modbus:
            raise _usage_error(f"{s.key} is a {s.interface.value} device, not Modbus")
        specs.append(s)
    return specs


def _parity(given: str | None, default: str) -> str:
    text = (given or default).strip().upper()[:1]
    if text not in {p.value for p in Parity}:
        raise _usage_error(f"--parity must be N, E or O; got {given!r}")
    return text


def _apply_faults(devices: list[SimulatedDevice], faults: list[str]) -> None:
    by_unit = {d.unit_id: d for d in devices}
    for text in faults:
        target, _, fault = text.rpartition("=")
        chosen = devices
        if target:
            if not target.isdigit() or int(target) not in by_unit:
                raise _usage_error(f"--fault {text!r}: no device at unit {target!r}")
            chosen = [by_unit[int(target)]]
        for d in chosen:
            try:
                d.faults.apply(fault)
            except ValueError as exc:
                raise _usage_error(f"--fault: {exc}") from None


def _run_until_signalled(sim: RtuBusSimulator | TcpSimulator | LineSensorSimulator,
                         devices: list[SimulatedDevice], every: float) -> None:
    """Serve until SIGINT/SIGTERM, a status line every ``every`` seconds (of the line sensor when no devices)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(every):
            _status(sim, devices)
    finally:
        sim.stop()
    _status(sim, devices)
    sys.stdout.flush()


def _status(sim: RtuBusSimulator | TcpSimulator | LineSensorSimulator, devices: list[SimulatedDevice]) -> None:
    counters = " ".join(f"{k} {v}" for k, v in sim.stats.as_dict().items() if v or k in ("requests", "answered"))
    units = "  ".join(f"[bold]{d.unit_id}[/bold] {d.spec.model} faults {d.faults.describe()}" for d in devices)
    if isinstance(sim, LineSensorSimulator):
        units = f"{sim.spec.model} faults {sim.faults.describe()}, lines dropped unread {sim.lines_dropped}"
    err.print(f"{time.strftime('%H:%M:%S')}  {counters}  |  {units}")


@app.command()
def line(
    spec: str = typer.Option(..., "--spec", help="A serial-line sensor model (id, model@version or YAML file)."),
    baud: int | None = typer.Option(None, "--baud", min=300, max=4_000_000, help="Baud rate (default: the spec's)."),
    parity: str | None = typer.Option(None, "--parity", help="Parity N, E or O (default: the spec's)."),
    stop_bits: int | None = typer.Option(None, "--stop-bits", min=1, max=2, help="Stop bits (default: the spec's)."),
    data_bits: int | None = typer.Option(None, "--data-bits", min=7, max=8, help="Data bits (default: the spec's)."),
    rate_hz: float | None = typer.Option(None, "--rate-hz", min=0.001, help="Lines per second of a free-running "
                                         "sensor (default: from the spec's timing.max_response_ms)."),
    turnaround_ms: float = typer.Option(5.0, "--turnaround-ms", min=0, help="Think time before a polled answer."),
    fault: list[str] = typer.Option([], "--fault", help=f"FAULT, one of: {FAULT_SYNTAX}; repeat."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weather, noise and fault dice."),
    status_every: float = typer.Option(5.0, "--status-every", min=0.1, help="Seconds between status lines."),
) -> None:
    """Simulate a serial line-protocol sensor from its spec on a new pty until SIGINT/SIGTERM.

    The first line on stdout says where it listens, e.g.
    ``listening line /dev/pts/7 9600 8N1 maxbotix-hrxl-maxsonar-wr free-running at 6.67 lines/s``;
    status lines go to stderr.
    """
    try:
        s = get_spec(spec)
        sim = LineSensorSimulator(s, seed, baud=baud, parity=None if parity is None else _parity(parity, "N"),
                                  stop_bits=stop_bits, data_bits=data_bits, rate_hz=rate_hz,
                                  turnaround_ms=turnaround_ms)
    except (SpecError, ValueError) as exc:
        raise _usage_error(str(exc)) from None
    for text in fault:
        try:
            sim.faults.apply(text)
        except ValueError as exc:
            raise _usage_error(f"--fault: {exc}") from None
    sim.start()
    print(f"listening line {sim.port} {sim.line} {s.model} {sim.describe()}", flush=True)
    _run_until_signalled(sim, [], status_every)


@app.command()
def board(
    fs: Path | None = typer.Option(None, "--fs", file_okay=False, help="Host folder holding the board's flash "
                                   "(kept across runs, with the board's id; default: a temporary one)."),
    sensors: str = typer.Option("", "--sensors", help=f"Sensors wired as the reference build, comma-separated: "
                                f"{','.join(SENSORS)} (default: none); they follow the farm's signal model."),
    wifi: str | None = typer.Option(None, "--wifi", help="SSID of the Wi-Fi network in range (default: none, "
                                    "the board never joins)."),
    wifi_password: str | None = typer.Option(None, "--wifi-password", help="Its password (default: any)."),
    board_id: str | None = typer.Option(None, "--board-id", help="machine.unique_id() as 12 hex digits (default: "
                                        "the one kept in --fs, else a new one)."),
    host: list[str] = typer.Option([], "--host", help="NAME=ADDRESS the board may resolve and reach, besides "
                                   "the host's loopback; repeat."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weather and sensor noise."),
    rs485: str | None = typer.Option(None, "--rs485", help="Serial device on the board's RS485 UART (pins 17/16), "
                                     "e.g. the pty `fieldtrust sim modbus --rtu` prints."),
    rail: bool = typer.Option(True, "--rail/--no-rail", help="Sensors on the reference build's switched rail "
                              "(GPIO26 low = on, as the firmware drives it) or, --no-rail, always powered."),
) -> None:
    """Run a virtual ESP32 (real MicroPython behind its REPL) on a new pty until SIGINT/SIGTERM.

    The first line on stdout is the port to give ``mpremote connect``, e.g. ``/dev/pts/7``; the second
    is the board's id (``machine.unique_id()`` in hex).
    """
    chosen = [name.strip() for name in sensors.split(",") if name.strip()]
    hosts = {}
    for text in host:
        name, sep, address = text.partition("=")
        if not sep or not name or not address:
            raise _usage_error(f"--host wants NAME=ADDRESS, got {text!r}")
        hosts[name] = address
    try:
        sim = VirtualBoard(fs, board_id=board_id, sensors=chosen, wifi=wifi, wifi_password=wifi_password,
                           hosts=hosts, seed=seed, rs485=rs485, wiring=REFERENCE_WIRING if rail else BENCH_WIRING)
        sim.start()
    except (BoardUnavailable, ValueError) as exc:
        raise _usage_error(str(exc)) from None
    print(sim.port, flush=True)
    print(sim.board_id.hex(), flush=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stop.wait()
    finally:
        sim.stop()
