"""Where the service listens by default: loopback, one port per socket."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
"""The service binds to loopback unless told otherwise (``slam serve --bind``)."""
PUB_PORT = 5555
"""PUB socket: poses, keyframes, map updates, loops, status, images."""
CMD_PORT = 5556
"""Command ROUTER: one request, one reply."""
INGEST_PORT = 5557
"""Ingestion ROUTER: frames pushed by clients, one reply each."""
DEFAULT_PORTS: dict[str, int] = {"pub": PUB_PORT, "cmd": CMD_PORT, "ingest": INGEST_PORT}
"""Socket name -> default port (the keys of ``SlamService.endpoints``)."""


def tcp_endpoint(port: int, host: str = DEFAULT_HOST) -> str:
    """``tcp://HOST:PORT``."""
    return f"tcp://{host}:{port}"


DEFAULT_PUB_ENDPOINT = tcp_endpoint(PUB_PORT)
DEFAULT_CMD_ENDPOINT = tcp_endpoint(CMD_PORT)
DEFAULT_INGEST_ENDPOINT = tcp_endpoint(INGEST_PORT)
