"""OTA files for the sensor nodes over HTTP/1.0: ``GET /ota/<sha256>``, with ``Range: bytes=a-b``.

A node downloads an update in small chunks (``firmware/ota.py``, one range request per 1 KiB, each
on a new connection: HTTP/1.0 closes after the answer, so a node's tiny socket code never parses
chunked encoding or keep-alive).  Files are named by their SHA-256 and served only from the OTA
cache (``edge_agent.ota_cache``); the only accepted path is ``/ota/`` and 64 lower-case hex
characters, so no name can reach anything else on the disk.

Answers: 206 with exactly the requested bytes, 200 with the whole file when no range is asked,
404 for an unknown name or any other path, 416 for a range the file cannot satisfy or that is not
one ``bytes=`` range, 501 for methods other than GET and HEAD.  The standard library's threaded
server is enough for a farm's nodes; a bound on connections served at once keeps a misbehaving
client from exhausting the gateway's threads.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge_agent.listeners import BIND_RETRY_S, bind_failure
from edge_agent.ota_cache import OtaCache

log = logging.getLogger(__name__)

PATH = re.compile(r"^/ota/([0-9a-f]{64})$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: connections served at once; more wait in the listen backlog or are closed
MAX_CONCURRENT = 16
#: a client that sends nothing for this long is dropped
CLIENT_TIMEOUT_S = 10.0
READ_BLOCK = 64 * 1024


class RangeError(ValueError):
    """The Range header cannot be satisfied for this file (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) asked for, None for the whole file; RangeError if bad.

    One range only (``bytes=a-b``, ``bytes=a-`` or the suffix ``bytes=-n``); ``b`` past the end is cut
    to the end, as RFC 9110 says; a start at or past the end is unsatisfiable.
    """
    if header is None:
        return None
    match = RANGE.match(header.strip())
    if match is None:
        raise RangeError(f"not one bytes range: {header[:60]!r}")
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text or int(last_text) == 0:
            raise RangeError("empty suffix range")
        return max(0, size - int(last_text)), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        raise RangeError(f"bytes {first}-{last_text} of a {size}-byte file")
    return first, min(last, size - 1)


class _Handler(BaseHTTPRequestHandler):
    server: OtaHttpServer
    protocol_version = "HTTP/1.0"
    timeout = CLIENT_TIMEOUT_S
    server_version = "fieldtrust-ota"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        counters = self.server.counters
        counters["requests"] += 1
        match = PATH.match(self.path)
        cache = self.server.cache
        if match is None or not cache.has(match.group(1)):
            counters["not_found"] += 1
            self._empty(404)
            return
        sha = match.group(1)
        try:
            with open(cache.path(sha), "rb") as f:
                size = f.seek(0, 2)
                try:
                    span = parse_range(self.headers.get("Range"), size)
                except RangeError:
                    counters["bad_range"] += 1
                    self._empty(416, {"Content-Range": f"bytes */{size}"})
                    return
                first, last = span if span is not None else (0, size - 1)
                self.send_response(200 if span is None else 206)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{sha}"')
                if span is not None:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.end_headers()
                if body:
                    f.seek(first)
                    left = last - first + 1
                    while left > 0:
                        block = f.read(min(READ_BLOCK, left))
                        if not block:
                            break
                        self.wfile.write(block)
                        left -= len(block)
                    counters["bytes_sent"] += last - first + 1 - left
        except FileNotFoundError:  # evicted between the check and the open
            counters["not_found"] += 1
            self._empty(404)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Unsupported methods and malformed requests: counted, answered without a body."""
        self.server.counters[f"status_{code}"] += 1
        self.close_connection = True
        self._empty(code)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the standard library's name)
        log.debug("OTA HTTP %s: " + format, self.client_address[0], *args)


class OtaHttpServer(ThreadingHTTPServer):
    """The server; :meth:`start` runs it on its own thread, :meth:`stop` ends it.  ``port`` is the bound port."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cache: OtaCache, host: str = "0.0.0.0", port: int = 8080) -> None:
        self.cache = cache
        self.counters: Counter[str] = Counter()
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._thread: threading.Thread | None = None
        self._bound = False
        self._serving = threading.Event()
        self._stopping = threading.Event()
        super().__init__((host, port), _Handler, bind_and_activate=False)
        self._wanted = (host, port)

    @property
    def port(self) -> int | None:
        """The bound TCP port; None while the port could not be bound."""
        return int(self.server_address[1]) if self._bound else None

    def all_counters(self) -> dict[str, int]:
        return dict(self.counters)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            self.counters["busy"] += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _bind(self) -> bool:
        try:
            self.server_bind()
            self.server_activate()
        except OSError as exc:
            self.socket.close()
            self.socket = socket.socket(self.address_family, self.socket_type)  # a fresh one for the next try
            if not self.counters["bind_failures"]:
                log.error("%s", bind_failure("the OTA file server", "ota_port", *self._wanted, exc))
            self.counters["bind_failures"] += 1
            return False
        self._bound = True
        return True

    def start(self) -> None:
        """Bind (now, so :attr:`port` is known on return; or keep trying on the thread) and serve."""
        if self._thread is not None:
            raise RuntimeError("OTA HTTP server already started")
        if self._bind():
            log.info("OTA files served at http://%s:%d/ota/<sha256>", self.server_address[0], self.port)
        self._thread = threading.Thread(target=self._run, name="ota-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._bound:
            if self._stopping.wait(BIND_RETRY_S):
                return
            if self._bind():
                log.info("OTA files served on port %d at last", self.port)
        self._serving.set()
        if not self._stopping.is_set():
            self.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self._stopping.set()
        if self._serving.is_set():
            self.shutdown()  # returns once serve_forever has
        if self._thread is not None:
            self._thread.join(5)
        self.server_close()
