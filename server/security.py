"""CurveZMQ for the service: key generation, the server's keys and the allow-list of
client public keys.

``slam keys generate --out DIR`` writes ``DIR/server.key`` (public, give it to the
clients), ``DIR/server.key_secret`` (the server's secret), ``DIR/<client>.key`` and
``DIR/<client>.key_secret`` (a client's pair) and a copy of each client public key in
``DIR/authorized_clients/``. The server runs with
``--curve-server-key DIR/server.key_secret --curve-clients DIR/authorized_clients``:
every socket then encrypts, and a ZAP handler admits only the listed client keys; a
client without an admitted key never completes the handshake and receives nothing.
The browser viewer's credential, :func:`viewer_token`, is derived from the server's
secret key (``slam keys viewer-token``). Threat model: ``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from slam.errors import ConfigError
from slam_protocol import curve as client_curve

log = logging.getLogger(__name__)

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"
ZAP_DOMAIN = b"slam"
"""ZAP domain of the server's sockets without CURVE: libzmq then refuses unversioned
(ZMTP/1.0) peers, which is what an HTTP request from a web page looks like."""
VIEWER_TOKEN_LABEL = b"slam viewer websocket token v1"
"""HMAC message of :func:`viewer_token`; changing it changes every viewer token."""


@dataclass(frozen=True)
class GeneratedKeys:
    """Paths written by :func:`generate_keys`."""

    server_public: Path
    server_secret: Path
    client_secrets: tuple[Path, ...]
    authorized_dir: Path


def generate_keys(out_dir: str | Path, clients: tuple[str, ...] = ("client",),
                  force: bool = False) -> GeneratedKeys:
    """Write a server key pair and one key pair per client name into ``out_dir``.

    Existing key files are kept unless ``force`` (new server keys lock out every
    client). Raises :class:`ConfigError` for a bad name or an existing file.
    """
    out = Path(out_dir)
    names = (SERVER_NAME, *clients)
    for name in clients:
        if not name or name == SERVER_NAME or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"invalid client key name {name!r} (letters, digits, - and _; "
                              f"not {SERVER_NAME!r})")
    if len(set(names)) != len(names):
        raise ConfigError("client key names must differ")
    targets = [out / f"{n}.key{s}" for n in names for s in ("", "_secret")]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} exists; pass --force to replace the keys")
    authorized = out / AUTHORIZED_DIR
    try:
        authorized.mkdir(parents=True, exist_ok=True)
        for name in names:
            zmq.auth.create_certificates(out, name)
            (out / f"{name}.key_secret").chmod(0o600)
        for name in clients:
            shutil.copyfile(out / f"{name}.key", authorized / f"{name}.key")
    except OSError as exc:
        raise ConfigError(f"cannot write keys to {out}: {exc.strerror or exc}") from exc
    return GeneratedKeys(out / f"{SERVER_NAME}.key", out / f"{SERVER_NAME}.key_secret",
                         tuple(out / f"{n}.key_secret" for n in clients), authorized)


def _load(path: str | Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        return client_curve.load_certificate(path, need_secret)
    except client_curve.KeyFileError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class CurveServerKeys:
    """The server's key pair (z85 bytes) and the client public keys it admits."""

    public: bytes
    secret: bytes
    allowed_clients: frozenset[bytes] = field(default_factory=frozenset)

    @classmethod
    def load(cls, secret_file: str | Path, clients_dir: str | Path) -> CurveServerKeys:
        """Keys from the server's ``.key_secret`` file and a folder of client ``.key`` files."""
        public, secret = _load(secret_file, need_secret=True)
        folder = Path(clients_dir)
        if not folder.is_dir():
            raise ConfigError(f"client key folder not found: {folder}")
        try:
            allowed = frozenset(zmq.auth.load_certificates(folder))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read client keys in {folder}: {exc}") from exc
        if not allowed:
            raise ConfigError(f"no client public keys (*.key) in {folder}")
        assert secret is not None
        return cls(public, secret, allowed)

    def with_client(self, public: bytes) -> CurveServerKeys:
        """These keys also admitting ``public`` (an in-process client such as the bridge)."""
        return CurveServerKeys(self.public, self.secret, self.allowed_clients | {public})

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server (call before ``bind``)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


class CurveClientKeys(client_curve.CurveClientKeys):
    """:class:`slam_protocol.curve.CurveClientKeys` whose :meth:`load` raises
    :class:`ConfigError`, as the server's other key files do."""

    @classmethod
    def load(cls, secret_file: str | Path, server_public_file: str | Path) -> Self:
        """Keys from the client's ``.key_secret`` file and the server's ``.key`` file."""
        try:
            return super().load(secret_file, server_public_file)
        except client_curve.KeyFileError as exc:
            raise ConfigError(str(exc)) from exc


def refuse_unversioned_peers(sock: zmq.Socket[Any]) -> None:
    """Make a server socket without CURVE refuse ZMTP/1.0 peers (call before ``bind``).

    libzmq still speaks the unversioned ZMTP/1.0 framing, in which the bytes of an
    HTTP request (``POST /...``) parse as frames: a web page in the operator's browser
    could POST a command to a loopback ROUTER (cross-protocol request). With a ZAP
    domain set, libzmq closes such connections at once; ZMTP/3 clients are unaffected
    (no ZAP handler runs for the NULL mechanism). See ``docs/security.md``.
    """
    sock.zap_domain = ZAP_DOMAIN


class _AllowList:
    """ZAP credentials provider: admit the listed z85 public keys only."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning("refused a CURVE client with an unknown public key")
        return ok


def start_authenticator(ctx: zmq.Context[Any], keys: CurveServerKeys) -> ThreadAuthenticator:
    """Start the ZAP handler of ``ctx`` admitting ``keys.allowed_clients`` (before binding)."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(
        keys.allowed_clients))
    return auth


# --- the browser viewer's credential ------------------------------------------------
def viewer_token(server_secret: bytes) -> str:
    """The viewer's WebSocket token: HMAC-SHA256 keyed by the server's CURVE secret key.

    :param server_secret: the server's secret key, z85 (40 bytes) as in ``.key_secret``.
    :returns: 64 lower-case hex digits (256 bits), the same on every restart with the
        same keys; whoever holds the server secret can recompute it
        (``slam keys viewer-token``) and nobody else can.
    """
    key = z85.decode(server_secret)
    return hmac.new(key, VIEWER_TOKEN_LABEL, hashlib.sha256).hexdigest()


def load_viewer_token(secret_file: str | Path) -> str:
    """:func:`viewer_token` of the server secret key file (``server.key_secret``)."""
    _, secret = _load(secret_file, need_secret=True)
    assert secret is not None
    return viewer_token(secret)


def viewer_token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    return hmac.compare_digest(expected.encode("utf-8", "replace"),
                               given.strip().lower().encode("utf-8", "replace"))
