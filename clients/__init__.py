"""Clients of the SLAM service: the :class:`SlamClient` library, ``slam-client`` and examples.

They need only ZeroMQ, numpy and the wire protocol, :mod:`slam_protocol` (never the
``server`` package; ``slam-client push`` also needs the ``slam`` package, to read local
frame sources, and OpenCV compresses pushed frames).
"""

from clients.client import (
    ClientError,
    ClientTimeoutError,
    PushSummary,
    ServerError,
    SlamClient,
    Snapshot,
)

__all__ = [
    "ClientError",
    "ClientTimeoutError",
    "PushSummary",
    "ServerError",
    "SlamClient",
    "Snapshot",
]
