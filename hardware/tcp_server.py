"""Modbus TCP: simulated devices behind one port, as a TCP-to-RTU gateway presents them.

Why not pymodbus's server: its datastores answer from stored register blocks inside its own
asyncio loop, with no per-answer hook to delay, drop or garble one device's response, while
these devices compute registers from their spec and a clock at the instant of each request.
MBAP framing is a 7-byte header, so a small threaded server is simpler than bending pymodbus.

One thread accepts, one thread serves each connection; :meth:`TcpSimulator.stop` wakes the
acceptor through a pipe and shuts every connection down, so no thread outlives it.  A request
for a unit nobody has gets exception 0x0B (gateway target device failed to respond), as a
gateway answers; unit 0 is a broadcast (writes applied, no answer).  Faults act as on the RTU
line, except CRC errors: MBAP has no CRC (TCP checksums the bytes), so ``crc_error_rate`` has
no effect here.  Garbage replaces or precedes the answer with random bytes, which breaks the
MBAP framing as a misbehaving gateway does.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading

from hardware.modbus_pdu import GATEWAY_TARGET_FAILED, answer, broadcast, exception_pdu
from hardware.sim_device import SimulatedDevice
from hardware.sim_stats import SimStats
from hardware.sim_thread import SimulatorThread

log = logging.getLogger(__name__)
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit + PDU), unit


class TcpSimulator(SimulatorThread):
    """Serve ``devices`` (distinct unit ids) on ``host:port``; ``port=0`` picks a free one (see :attr:`port`)."""

    kind = "TCP simulator"

    def __init__(self, devices: list[SimulatedDevice], host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        units = [d.unit_id for d in devices]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must differ on one server; got {units}")
        self.devices = {d.unit_id: d for d in devices}
        self.host = host
        self.port = port
        self.stats = SimStats()
        self._listener: socket.socket | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    def _open(self) -> None:
        self._listener = socket.create_server((self.host, self.port))
        self.port = self._listener.getsockname()[1]

    def _thread_name(self) -> str:
        return f"modbus-tcp :{self.port}"

    def _close(self) -> None:
        """Shut every connection down (its thread ends at once), then stop listening."""
        assert self._listener is not None
        with self._lock:
            open_connections = list(self._connections.items())
        for conn, thread in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            thread.join(5.0)
        self._listener.close()
        self._listener = None

    def _run(self) -> None:
        """Accept connections, each served on its own thread, until stop()."""
        assert self._listener is not None
        wake = self._wake_fd
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._listener, wake], [], [])
            if wake in ready:
                return
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                log.warning("modbus tcp :%s: accept failed: %s", self.port, exc)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.stats.count("connections")
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"modbus-tcp conn :{self.port}",
                                      daemon=True)
            with self._lock:
                self._connections[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                header = _recv_exact(conn, _MBAP.size)
                if header is None:
                    return
                tid, protocol, length, unit = _MBAP.unpack(header)
                if protocol != 0 or not 2 <= length <= 254:
                    self.stats.count("ignored")  # not Modbus: drop the connection, as servers do
                    return
                pdu = _recv_exact(conn, length - 1)
                if pdu is None:
                    return
                response = self._respond(tid, unit, pdu)
                if response is not None:
                    conn.sendall(response)
        except OSError:
            pass  # the client went away, or stop() shut the socket
        except Exception:  # a simulator bug must not leave the client hanging silently
            log.exception("modbus tcp :%s: connection failed", self.port)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _respond(self, tid: int, unit: int, pdu: bytes) -> bytes | None:
        """The bytes to send back for request ``tid`` to ``unit``, None for no answer."""
        count = self.stats.count
        count("requests")
        if unit == 0:
            count("broadcasts")
            broadcast(list(self.devices.values()), pdu)
            return None
        device = self.devices.get(unit)
        if device is None:
            count("answered")
            count("exceptions")
            return _frame(tid, unit, exception_pdu(pdu[0] if pdu else 0, GATEWAY_TARGET_FAILED))
        faults = device.faults
        if faults.no_answer or not faults.online():
            count("silenced")
            return None
        response = answer(device, pdu)
        count("answered")
        if response[0] & 0x80:
            count("exceptions")
        if faults.late_ms and self._stopping.wait(faults.late_ms / 1000.0):
            return None
        if faults.roll(faults.garbage_rate):
            count("garbage_sent")
            return faults.noise(_frame(tid, unit, response))
        return _frame(tid, unit, response)


def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
