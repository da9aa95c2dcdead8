"""CurveZMQ for clients: loading a client's key pair and the server's public key, and
applying them to a socket. Used by ``clients`` and by the server's in-process viewer
bridge; the server's own keys and its allow-list live in ``server.security``.

Key files are those of ``slam keys generate`` (ZeroMQ certificates, z85 keys):
``<client>.key_secret`` holds a client's pair, ``server.key`` the server's public key.
This module imports ZeroMQ (the rest of the package does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file is missing, is not a ZeroMQ certificate or lacks the secret key."""


class CurveKeys(Protocol):
    """CURVE client keys (z85, bytes or str): the server's public key and our key pair."""

    @property
    def server_public(self) -> bytes | str: ...
    @property
    def public(self) -> bytes | str: ...
    @property
    def secret(self) -> bytes | str: ...


def load_certificate(path: str | Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret or None) z85 keys of certificate file ``path``.

    :raises KeyFileError: no such file, not a certificate, or no secret key although
        ``need_secret``.
    """
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"key file not found: {p}")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{p} is not a ZeroMQ certificate: {exc}") from exc
    if need_secret and not secret:
        raise KeyFileError(f"{p} holds no secret key (pass the .key_secret file)")
    return public, secret


def _as_bytes(key: bytes | str) -> bytes:
    return key.encode("ascii") if isinstance(key, str) else key


def apply_client_keys(sock: zmq.Socket[Any], keys: CurveKeys | None) -> None:
    """Make ``sock`` a CURVE client of the server named by ``keys`` (call before
    ``connect``); None leaves it a plain socket."""
    if keys is not None:
        sock.curve_serverkey = _as_bytes(keys.server_public)
        sock.curve_publickey = _as_bytes(keys.public)
        sock.curve_secretkey = _as_bytes(keys.secret)


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's key pair and the server's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, secret_file: str | Path, server_public_file: str | Path) -> Self:
        """Keys from the client's ``.key_secret`` file and the server's ``.key`` file.

        :raises KeyFileError: a file is missing or malformed.
        """
        public, secret = load_certificate(secret_file, need_secret=True)
        server_public, _ = load_certificate(server_public_file, need_secret=False)
        assert secret is not None
        return cls(public, secret, server_public)

    @classmethod
    def ephemeral(cls, server_public: bytes) -> Self:
        """A fresh key pair for a client of the server with public key ``server_public``
        (one living in the server's process, which admits it)."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret, server_public)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the server (call before ``connect``)."""
        apply_client_keys(sock, self)
