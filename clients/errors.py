"""The client library's errors (all :class:`ClientError`)."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of the client's errors."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The service did not answer within the client's timeout."""


class ServerError(ClientError):
    """The service answered ``ok: false``; ``error`` is its message, ``reply`` the whole map."""

    def __init__(self, error: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.reply = reply or {}
