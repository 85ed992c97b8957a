"""Gateway agent releases for the updater's tests: .tar.gz archives, served over HTTP as a release bucket would."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from contract.agent_update import AgentUpdate
from fieldtrust import processes


def archive(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class ReleaseServer:
    """Serves release archives over HTTP on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", processes.free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, version: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/edge-{version}.tar.gz"

    def publish(self, version: str, files: dict[str, str], gw: str = "gw-1") -> AgentUpdate:
        """Serve a release of ``files`` (plus VERSION); the update message that names it."""
        data = archive({**files, "VERSION": version})
        self.files[f"/edge-{version}.tar.gz"] = data
        return AgentUpdate(gw=gw, version=version, sha256=hashlib.sha256(data).hexdigest(), issued=1,
                           url=self.url(version))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
