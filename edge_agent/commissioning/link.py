"""The bus a technician points a commissioning tool at: a serial port or a Modbus TCP endpoint."""

from __future__ import annotations

from edge_agent.bus.rtu import RtuTransport
from edge_agent.bus.tcp import TcpTransport
from edge_agent.bus.transport import Transport


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) -> (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port in 1..65535; got {text!r}")
    return host, int(port)


def open_link(port: str | None = None, tcp: str | None = None, baud: int = 9600, parity: str = "N",
              stop_bits: int = 1) -> Transport:
    """A transport for exactly one of ``port`` (RTU) or ``tcp`` (``HOST:PORT``)."""
    if (port is None) == (tcp is None):
        raise ValueError("give exactly one of a serial port or a TCP endpoint")
    if tcp is not None:
        return TcpTransport(*parse_endpoint(tcp))
    assert port is not None
    return RtuTransport(port, baud, parity.upper(), stop_bits)
