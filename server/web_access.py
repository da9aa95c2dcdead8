"""Who may use the browser viewer: ``Host``/``Origin`` checks and the WebSocket credential.

Every HTTP request and WebSocket upgrade of the bridge goes through
:meth:`AccessPolicy.check` before anything is served:

- ``Host`` must appear exactly once (else 400) and name the bridge: the bind address
  with the bridge's port; also ``localhost``, ``127.0.0.1`` and ``[::1]`` when bound
  to loopback; any IP literal and this machine's host name when bound to every
  interface (``0.0.0.0``); or a name of the ``--allow-host`` list.  Anything else is
  403: a DNS-rebinding page always sends its own domain name as ``Host``, and an IP
  literal cannot be rebound.
- ``Origin``, when present, must appear once (else 400) and be the page's own origin,
  ``http://`` + the request's ``Host``, or be listed in ``--allow-origin``; else 403.

With CurveZMQ on, a WebSocket must then present the viewer token (see
:func:`server.security.viewer_token`) as its first message ``{"auth": TOKEN}`` within
:data:`AUTH_TIMEOUT_S`; until then it receives nothing, and a missing, wrong or late
token closes it with code :data:`CLOSE_UNAUTHORIZED`.  See ``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from server.security import viewer_token_matches
from slam.errors import ConfigError

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
"""Seconds a WebSocket has to send its credential before it is closed."""
CLOSE_UNAUTHORIZED = 4401
"""WebSocket close code for a missing, wrong or late credential (private range 4000-4999)."""
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = {"http": 80, "https": 443}

Authority = tuple[str, int | None]
"""(lower-case host, IPv6 in brackets; port or None when absent) of a ``Host`` value."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and a one-line body."""

    status: HTTPStatus
    reason: str


def _normal_host(host: str) -> str:
    """Lower-case, no trailing dot; IP literals in canonical form, IPv6 in brackets."""
    name = host.strip().lower().rstrip(".")
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if not name or any(c in name for c in "[]/@ ") or ":" in name:
            raise ValueError(f"not a host name: {host!r}") from None
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def parse_authority(text: str) -> Authority:
    """``host[:port]`` (IPv6 as ``[addr][:port]``) of a ``Host`` header or an allow-list entry.

    :raises ValueError: for anything else (empty, bad port, user info, spaces).
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[:end + 1], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"bad authority {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if sep else None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {text!r}")
        port = int(port_text)
    return _normal_host(host), port


def parse_origin(text: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an ``Origin`` value such as ``http://127.0.0.1:8080``.

    :raises ValueError: for ``null`` or anything that is not ``scheme://host[:port]``.
    """
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS or not rest or "/" in rest:
        raise ValueError(f"bad origin {text!r}")
    host, port = parse_authority(rest)
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AccessPolicy:
    """The ``Host``/``Origin`` rules and the credential of one bridge (see the module doc).

    ``hosts``: normalised host names accepted with ``port``; ``any_ip``: every IP literal
    is accepted too (wildcard bind); ``extra``: allow-listed ``(host, port)`` pairs (port
    None: the bridge's port);
    ``origins``: allow-listed ``(scheme, host, port)``; ``token``: the viewer token, or
    None when no credential is required (CurveZMQ off).
    """

    port: int
    hosts: frozenset[str]
    any_ip: bool = False
    extra: frozenset[tuple[str, int | None]] = frozenset()
    origins: frozenset[tuple[str, str, int]] = frozenset()
    token: str | None = None

    @classmethod
    def build(cls, bind: str, port: int, allow_hosts: Iterable[str] = (),
              allow_origins: Iterable[str] = (), token: str | None = None) -> AccessPolicy:
        """The policy of a bridge bound to ``bind``:``port``.

        :param allow_hosts: ``NAME`` or ``NAME:PORT`` (without a port: the bridge's).
        :param allow_origins: ``http(s)://NAME[:PORT]`` origins of pages allowed to connect.
        :raises ConfigError: for a malformed allow-list entry or bind address.
        """
        wildcard = bind.strip() in WILDCARD_BINDS
        try:
            hosts = set() if wildcard else {_normal_host(bind)}
            if wildcard:
                hosts.add(_normal_host(socket.gethostname()))
            if wildcard or all(_is_loopback(h) for h in hosts):
                hosts.update(LOOPBACK_NAMES)
        except ValueError as exc:
            raise ConfigError(f"viewer: bad bind address {bind!r}") from exc
        extra: set[tuple[str, int | None]] = set()
        for entry in allow_hosts:
            try:
                host, entry_port = parse_authority(entry)
            except ValueError as exc:
                raise ConfigError(f"--allow-host {entry!r}: expected NAME or NAME:PORT") from exc
            extra.add((host, entry_port))
        origins = set()
        for entry in allow_origins:
            try:
                origins.add(parse_origin(entry))
            except ValueError as exc:
                raise ConfigError(f"--allow-origin {entry!r}: expected http(s)://NAME[:PORT]"
                                  ) from exc
        return cls(port, frozenset(hosts), wildcard, frozenset(extra), frozenset(origins), token)

    @property
    def loopback_only(self) -> bool:
        """Whether the bridge listens on loopback only (reachable from this machine only)."""
        return not self.any_ip and all(_is_loopback(h) for h in self.hosts)

    def host_allowed(self, host: str, port: int | None) -> bool:
        """Whether a ``Host`` of ``host`` (normalised) and ``port`` names this bridge."""
        port = DEFAULT_PORTS["http"] if port is None else port
        if (host, port) in self.extra:
            return True
        return port == self.port and ((host, None) in self.extra or host in self.hosts
                                      or (self.any_ip and _is_ip_literal(host)))

    def check(self, headers: Headers) -> Refusal | None:
        """None when a request with these headers may be served, else why not."""
        host_values = headers.get_all("Host")
        if len(host_values) != 1:
            return Refusal(HTTPStatus.BAD_REQUEST, "exactly one Host header required")
        try:
            host, port = parse_authority(host_values[0])
        except ValueError:
            return Refusal(HTTPStatus.BAD_REQUEST, "malformed Host header")
        if not self.host_allowed(host, port):
            return Refusal(HTTPStatus.FORBIDDEN, "Host not allowed")
        origin_values = headers.get_all("Origin")
        if len(origin_values) > 1:
            return Refusal(HTTPStatus.BAD_REQUEST, "more than one Origin header")
        if origin_values and not self._origin_allowed(origin_values[0], host, port):
            return Refusal(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        return None

    def _origin_allowed(self, origin: str, host: str, port: int | None) -> bool:
        try:
            parsed = parse_origin(origin)
        except ValueError:
            return False  # 'null' (sandboxed frames, file://) and junk
        same = ("http", host, DEFAULT_PORTS["http"] if port is None else port)
        return parsed == same or parsed in self.origins


def auth_value(message: str | bytes) -> str | None:
    """The token of a ``{"auth": TOKEN}`` message, else None."""
    try:
        value = json.loads(message)["auth"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


async def authenticate(ws: ServerConnection, token: str | None,
                       timeout: float | None = None) -> bool:
    """Wait for ``ws``'s credential; True when none is needed or it matches ``token``.

    On False the connection has been closed with :data:`CLOSE_UNAUTHORIZED` (or was
    closed by the peer); nothing was sent to it.
    """
    if token is None:
        return True
    try:
        message = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S if timeout is None
                                         else timeout)
    except TimeoutError:
        reason = "no credential in time"
    except ConnectionClosed:
        return False
    else:
        given = auth_value(message)
        if given is not None and viewer_token_matches(token, given):
            return True
        reason = "credential required" if not given else "credential refused"
    _refused[0] += 1
    if _refused[0] & (_refused[0] - 1) == 0:  # 1, 2, 4, 8, ...: a flood cannot fill the log
        log.warning("viewer WebSocket from %s refused: %s (%d refused so far)",
                    ws.remote_address, reason, _refused[0])
    await ws.close(CLOSE_UNAUTHORIZED, reason)
    return False


_refused = [0]
