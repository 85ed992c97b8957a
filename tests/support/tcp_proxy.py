"""A TCP proxy a test can cut: the network between a gateway and the cloud, failing on command.

``cut()`` is a link gone dead the way a rural uplink goes: every open connection is dropped and new
ones are refused (the listening socket is closed, so a connect gets ECONNREFUSED) until
``restore()``, which listens again on the same port.  Bytes are copied as they come, one thread per
direction; the proxy counts the connections it accepted and refused, so a test can see the cut
was real.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from fieldtrust.processes import free_port


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` (host, port); :meth:`cut` and :meth:`restore` the link."""

    def __init__(self, upstream: tuple[str, int], port: int | None = None) -> None:
        self.upstream = upstream
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.accepted = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def start(self) -> TcpProxy:
        """Listen (again) on the proxy's port."""
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
            self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True)
        self._acceptor.start()
        return self

    restore = start

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
            self.cuts += 1
        if listener is not None:
            _close(listener)
        for conn in conns:
            _close(conn)
        if self._acceptor is not None:
            self._acceptor.join(5)

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by cut()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(server)
                    continue
                self._conns.update((client, server))
                self.accepted += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side gone: the connection is over in both directions
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cut()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
