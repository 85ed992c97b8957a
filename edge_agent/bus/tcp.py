"""Modbus TCP: the MBAP header (transaction id, protocol 0, length, unit) around each PDU.

One connection per endpoint, opened on the first transaction and reopened after it breaks.  A
response carrying an older transaction id (a late answer to a request that timed out) is read
and dropped, so it can never be taken for the answer to the current request.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from edge_agent.bus.transport import ABORT_CHECK_S, Cancelled, FrameError, LinkError, Reply, Timeout

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length (unit + pdu), unit id
_MAX_PDU = 253


class TcpTransport:
    """One Modbus TCP endpoint.  Not thread-safe: one owner thread."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.description = f"tcp {host}:{port}"
        self.discarded_frames = 0
        self._sock: socket.socket | None = None
        self._tid = 0
        self._aborted = threading.Event()

    def abort(self) -> None:
        self._aborted.set()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                raise LinkError(f"{self.host}:{self.port}: cannot connect: {exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _recv_exact(self, sock: socket.socket, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._aborted.is_set():
                raise Cancelled(f"{self.host}:{self.port}: aborted")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"{self.host}:{self.port}: no complete answer in time")
            sock.settimeout(min(left, ABORT_CHECK_S))
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                raise LinkError(f"{self.host}:{self.port}: connection closed by the peer")
            buf += chunk
        return bytes(buf)

    def transact(self, unit: int, pdu: bytes, reply_len: int | None, timeout_s: float) -> Reply:
        try:
            return self._transact(unit, pdu, timeout_s)
        except LinkError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise LinkError(f"{self.host}:{self.port}: {exc}") from None

    def _transact(self, unit: int, pdu: bytes, timeout_s: float) -> Reply:
        if self._aborted.is_set():
            raise Cancelled(f"{self.host}:{self.port}: aborted")
        sock = self._connect()
        self._tid = self._tid % 0xFFFF + 1
        tid = self._tid
        t0 = time.monotonic()
        sock.sendall(_MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)
        deadline = t0 + timeout_s
        while True:
            rtid, proto, length, runit = _MBAP.unpack(self._recv_exact(sock, _MBAP.size, deadline))
            if proto != 0 or not 2 <= length <= _MAX_PDU + 1:
                self.close()  # the stream has lost its framing: start a fresh connection
                raise FrameError(f"{self.host}:{self.port}: bad MBAP header (protocol {proto}, length {length})")
            body = self._recv_exact(sock, length - 1, deadline)
            if rtid != tid:
                self.discarded_frames += 1  # a late answer to an earlier request
                continue
            if runit != unit:
                raise FrameError(f"{self.host}:{self.port}: answer from unit {runit}, asked {unit}")
            if not body or body[0] not in (pdu[0], pdu[0] | 0x80):
                raise FrameError(f"{self.host}:{self.port}: answer {body[:1].hex()} to function 0x{pdu[0]:02X}")
            return Reply(body, time.monotonic() - t0)
