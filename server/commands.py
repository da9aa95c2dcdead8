"""The command socket: decode, validate, dispatch and always reply.

Requests are ``{v, cmd, ...}`` maps (``docs/protocol.md``); replies ``{v, ok, error?,
...}``. A handler raising a :class:`~slam.errors.SlamError` or a
:class:`~slam_protocol.ProtocolError` becomes ``ok: false`` with its message;
any other exception is logged with its traceback and answered the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

import slam_protocol as proto
from server.routing import RouterServer
from slam.errors import SlamError

log = logging.getLogger(__name__)

Handler = Callable[[proto.Command], dict[str, Any]]


def error_body(message: str) -> bytes:
    """Encoded ``{v, ok: false, error}``."""
    return proto.encode(proto.Reply(False, message).to_dict())


def serve_request(body: bytes, handlers: dict[str, Handler], max_bytes: int
                  ) -> tuple[bytes, str | None]:
    """The encoded reply to one encoded request, and the command's name when it
    succeeded (None when refused or failed). Never raises for bad input."""
    try:
        command = proto.Command.from_dict(proto.decode(body, max_bytes))
    except proto.ProtocolError as exc:
        return error_body(str(exc)), None
    handler = handlers.get(command.cmd)
    if handler is None:
        return error_body(f"command {command.cmd!r} is not available on this server"), None
    try:
        fields = handler(command)
    except (SlamError, proto.ProtocolError, OSError) as exc:
        log.warning("command %s failed: %s", command.cmd, exc)
        return error_body(f"{command.cmd} failed: {' '.join(str(exc).split())}"), None
    except Exception as exc:
        log.exception("command %s failed", command.cmd)
        return error_body(f"{command.cmd} failed: internal error "
                          f"({type(exc).__name__}: {exc})"), None
    return proto.encode(proto.Reply(True, fields=fields).to_dict()), command.cmd


class CommandServer(RouterServer):
    """The ROUTER command socket; ``handlers`` maps a command name to a function of the
    :class:`~slam_protocol.Command` returning the reply's fields. ``after_reply``
    (optional) runs once a reply has been sent, with the command name (``shutdown``
    uses it to stop the service only after its reply is on its way)."""

    name = "commands"
    close_linger_ms = 200  # let the last reply (shutdown's) leave before closing

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, handlers: dict[str, Handler],
                 max_bytes: int = proto.MAX_MESSAGE_BYTES, setup: Any = None,
                 after_reply: Callable[[str], None] | None = None) -> None:
        super().__init__(ctx, endpoint, max_bytes, setup)
        self.handlers = handlers
        self.after_reply = after_reply

    def handle(self, envelope: list[bytes], body: bytes) -> bytes | None:
        reply, done = serve_request(body, self.handlers, self.max_bytes)
        self.send(envelope, reply)
        if self.after_reply is not None and done is not None:
            self.after_reply(done)
        return None

    def error_reply(self, message: str) -> bytes:
        return error_body(message)

