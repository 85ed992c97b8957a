"""Sockets the gateway listens on for its nodes (OTA files, time): what to do when one cannot be bound.

A port that is taken (an old process still closing) or privileged (123 for NTP without
``CAP_NET_BIND_SERVICE``) must not stop the gateway: capturing and forwarding readings matters
more than serving its nodes.  The service logs why, once, with the fix; counts it in the heartbeat
(``bind_failures``); and tries again every :data:`BIND_RETRY_S` until it is stopped.
"""

from __future__ import annotations

BIND_RETRY_S = 30.0


def bind_failure(service: str, setting: str, host: str, port: int, exc: OSError) -> str:
    """The log line for a failed bind: which setting, where, why, and the usual fix."""
    hint = ""
    if 0 < port < 1024:
        hint = ("; ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities= in "
                "deploy/systemd/fieldtrust-edge.service)")
    return (f"{service} cannot listen on {host}:{port} (nodes.{setting}): {exc.strerror or exc}{hint}; "
            f"retrying every {BIND_RETRY_S:g} s")
