"""Browser viewer bridge: the static page of ``server/web/`` plus a WebSocket at ``/ws``.

The bridge is one more ZeroMQ client of the SLAM service: a SUB socket on the PUB
endpoint and a DEALER on the command endpoint.  It runs an asyncio loop in a thread.

Wire format to the browser (see ``docs/viewer.md``): one *binary* WebSocket message
per service message, ``[n][topic: n ASCII bytes][msgpack map]``, where the msgpack map
is forwarded byte for byte as the service published it (packed arrays stay ``bin``
values and are viewed as typed arrays in the browser).  On connect a client first gets
topic ``snapshot`` (the reply of the ``snapshot`` command), then the live topics.

Back-pressure: each browser has its own bounded queue and writer task.  ``image`` and
``status`` keep only their newest pending message; when the queue overflows it is
emptied and the client gets a fresh snapshot instead (topic ``bridge`` says so), so a
slow browser never blocks the ZeroMQ side or the other browsers.

Access (``server.web_access``, ``docs/security.md``): every request passes the
``Host``/``Origin`` checks first; with a viewer token (CurveZMQ on) a WebSocket gets
nothing until its first message ``{"auth": TOKEN}`` matches.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import slam_protocol as protocol
from server.web_access import WILDCARD_BINDS, AccessPolicy, authenticate
from slam.errors import ConfigError
from slam_protocol.curve import CurveClientKeys

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().with_name("web")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'"
)
BROWSER_COMMANDS = frozenset({"pause", "resume", "snapshot"})
COALESCED_TOPICS = frozenset({protocol.TOPIC_IMAGE, protocol.TOPIC_STATUS})
MAX_QUEUE_MESSAGES = 512
MAX_QUEUE_BYTES = 16 << 20
MAX_BROWSER_MESSAGE_BYTES = 4096
COMMAND_TIMEOUT_S = 5.0


def load_static_files(root: Path = WEB_ROOT) -> dict[str, tuple[str, bytes]]:
    """URL path -> (content type, body) for every servable file under ``root``.

    Only regular files with a known extension and no hidden path part are listed, so
    any other path (``..`` included) is simply not found.  ``/`` maps to ``index.html``.
    """
    files: dict[str, tuple[str, bytes]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        ctype = CONTENT_TYPES.get(path.suffix.lower())
        if ctype is None or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        files["/" + rel.as_posix()] = (ctype, path.read_bytes())
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def frame_message(topic: str, payload: bytes) -> bytes:
    """One browser message: ``[len(topic)][topic ASCII][payload]`` (topic < 256 bytes)."""
    name = topic.encode("ascii")
    return bytes([len(name)]) + name + payload


class ClientQueue:
    """Bounded per-browser queue of ``(topic, msgpack bytes)``; never blocks the producer.

    ``image``/``status`` keep only the newest pending message.  On overflow the queue is
    emptied and ``needs_snapshot`` set: the writer sends a snapshot before anything else.
    """

    def __init__(self, max_messages: int | None = None, max_bytes: int | None = None) -> None:
        self._items: collections.deque[tuple[str, bytes]] = collections.deque()
        self._bytes = 0
        self.max_messages = MAX_QUEUE_MESSAGES if max_messages is None else max_messages
        self.max_bytes = MAX_QUEUE_BYTES if max_bytes is None else max_bytes
        self.needs_snapshot = True
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, topic: str, payload: bytes) -> None:
        """Queue a message, coalescing ``image``/``status`` and resyncing on overflow."""
        if topic in COALESCED_TOPICS:
            for i, (old_topic, old_payload) in enumerate(self._items):
                if old_topic == topic:
                    del self._items[i]
                    self._bytes -= len(old_payload)
                    self.dropped += 1
                    break
        self._items.append((topic, payload))
        self._bytes += len(payload)
        if len(self._items) > self.max_messages or self._bytes > self.max_bytes:
            self.dropped += len(self._items)
            self._clear()
            self.needs_snapshot = True

    def pop(self) -> tuple[str, bytes] | None:
        """The oldest queued message, or None when empty."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= len(item[1])
        return item

    def take_snapshot_request(self) -> bool:
        """True (once) when a snapshot is due; empties the queue, which it supersedes."""
        if not self.needs_snapshot:
            return False
        self.needs_snapshot = False
        self._clear()
        return True

    def _clear(self) -> None:
        self._items.clear()
        self._bytes = 0


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    queue: ClientQueue = field(default_factory=ClientQueue)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reported_drops: int = 0


def _apply_curve(sock: zmq.Socket[Any], curve: CurveClientKeys | None) -> None:
    """Make ``sock`` a CURVE client when keys are given (before connect)."""
    if curve is not None:
        curve.apply(sock)


class _CommandClient:
    """One request at a time over a DEALER (REQ-style empty delimiter), with a timeout."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str,
                 curve: CurveClientKeys | None) -> None:
        self._ctx, self._endpoint, self._curve = ctx, endpoint, curve
        self._lock = asyncio.Lock()
        self._sock = self._connect()

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        _apply_curve(sock, self._curve)
        sock.connect(self._endpoint)
        return sock

    async def request(self, cmd: dict[str, Any]) -> bytes:
        """Send ``cmd`` (``v`` added) and return the raw msgpack reply; raises TimeoutError."""
        async with self._lock:
            try:
                return await asyncio.wait_for(self._exchange(cmd), COMMAND_TIMEOUT_S)
            except TimeoutError:
                self._sock.close(linger=0)  # a late reply must not answer the next request
                self._sock = self._connect()
                raise

    async def _exchange(self, cmd: dict[str, Any]) -> bytes:
        # send waits too while no connection is up (e.g. a CURVE handshake refused)
        await self._sock.send_multipart([b"", protocol.encode(cmd)])
        frames = await self._sock.recv_multipart()
        return bytes(frames[-1])

    def close(self) -> None:
        self._sock.close(linger=0)


class _Bridge:
    """The asyncio side: HTTP/WebSocket server, SUB relay and per-browser writers."""

    def __init__(self, pub_endpoint: str, cmd_endpoint: str,
                 curve: CurveClientKeys | None) -> None:
        self.files = load_static_files()
        self.clients: set[_Client] = set()
        self.ctx = zmq.asyncio.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 10_000)
        _apply_curve(self.sub, curve)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(pub_endpoint)
        self.commands = _CommandClient(self.ctx, cmd_endpoint, curve)
        self._snapshot: tuple[float, bytes] | None = None
        self._snapshot_lock = asyncio.Lock()
        self._bad_messages = 0
        self.policy: AccessPolicy | None = None  # set once the port is known

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Host/Origin checks, then static files for any path but ``/ws`` (the WebSocket)."""
        if self.policy is None:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "starting\n")
        refusal = self.policy.check(request.headers)
        if refusal is not None:
            return connection.respond(refusal.status, refusal.reason + "\n")
        path = urlsplit(request.path).path
        if path == "/ws":
            return None
        entry = self.files.get(path)
        if entry is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        ctype, body = entry
        response = connection.respond(HTTPStatus.OK, "")
        for name, value in (
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ):
            if name in response.headers:
                del response.headers[name]
            response.headers[name] = value
        response.body = body
        return response

    async def handle(self, ws: ServerConnection) -> None:
        """One browser: check its credential, then register it, run its writer and relay
        its (whitelisted) commands."""
        if self.policy is None or not await authenticate(ws, self.policy.token):
            return
        client = _Client(ws)
        self.clients.add(client)
        writer = asyncio.create_task(self._writer(client))
        log.info("viewer connected from %s (%d open)", ws.remote_address, len(self.clients))
        try:
            async for message in ws:
                await self._on_browser_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            writer.cancel()
            log.info("viewer disconnected (%d open)", len(self.clients))

    async def _on_browser_message(self, client: _Client, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            if isinstance(request, dict) and set(request) == {"auth"}:
                return  # a credential the bridge does not need (again): nothing to answer
            cmd = request["cmd"]
        except (ValueError, KeyError, TypeError):
            cmd = None
        if cmd not in BROWSER_COMMANDS:
            reply = protocol.encode({"ok": False, "error": f"command not allowed: {cmd}"})
        elif cmd == "snapshot":
            client.queue.needs_snapshot = True
            client.wake.set()
            return
        else:
            try:
                reply = await self.commands.request({"cmd": cmd})
            except TimeoutError:
                reply = protocol.encode({"ok": False, "error": "service did not answer"})
        await client.ws.send(frame_message("reply", reply))

    async def _writer(self, client: _Client) -> None:
        try:
            while True:
                if client.queue.take_snapshot_request():
                    await self._send_snapshot(client)
                    continue
                item = client.queue.pop()
                if item is None:
                    client.wake.clear()
                    await client.wake.wait()
                    continue
                await client.ws.send(frame_message(*item))
        except ConnectionClosed:
            pass

    async def _send_snapshot(self, client: _Client) -> None:
        drops = client.queue.dropped
        if drops > client.reported_drops:
            note: dict[str, Any] = {"resync": True, "dropped": drops}
            await client.ws.send(frame_message("bridge", protocol.encode(note)))
            client.reported_drops = drops
        try:
            snapshot = await self._fetch_snapshot()
        except (TimeoutError, protocol.ProtocolError) as exc:
            log.warning("snapshot for the viewer failed: %s", exc or "timeout")
            note = {"error": f"snapshot failed: {exc or 'service did not answer'}"}
            await client.ws.send(frame_message("bridge", protocol.encode(note)))
            return
        await client.ws.send(frame_message("snapshot", snapshot))

    async def _fetch_snapshot(self) -> bytes:
        """A snapshot no older than this call (browsers asking together share one request)."""
        asked = time.monotonic()
        async with self._snapshot_lock:
            if self._snapshot is not None and self._snapshot[0] >= asked:
                return self._snapshot[1]
            started = time.monotonic()
            reply = await self.commands.request({"cmd": "snapshot"})
            protocol.decode(reply)
            self._snapshot = (started, reply)
            return reply

    async def relay(self) -> None:
        """Forward every valid PUB message to every browser queue (never awaits a browser)."""
        while True:
            frames = await self.sub.recv_multipart()
            if len(frames) != 2 or not self._valid(frames[0], frames[1]):
                continue
            topic, payload = frames[0].decode("ascii"), bytes(frames[1])
            for client in self.clients:
                client.queue.offer(topic, payload)
                client.wake.set()

    def _valid(self, topic: bytes, payload: bytes) -> bool:
        try:
            if topic.decode("ascii") not in protocol.TOPICS:
                raise protocol.ProtocolError(f"unknown topic {topic!r}")
            protocol.decode(payload)
        except (UnicodeDecodeError, protocol.ProtocolError) as exc:
            self._bad_messages += 1
            if self._bad_messages & (self._bad_messages - 1) == 0:  # 1, 2, 4, 8, ...
                log.warning("viewer bridge skipped a bad PUB message (%d so far): %s",
                            self._bad_messages, exc)
            return False
        return True

    def close(self) -> None:
        self.commands.close()
        self.sub.close(linger=0)
        self.ctx.destroy(linger=0)  # term() would block for ever on a socket left open


@dataclass
class BridgeHandle:
    """A running bridge: ``url`` is its address, ``page_url`` the page to open (with the
    token in its fragment when one is needed); ``stop()`` ends it (idempotent)."""

    port: int
    url: str
    _thread: threading.Thread
    _loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event
    token: str | None = None

    @property
    def page_url(self) -> str:
        """``url`` plus ``#token=...`` when the WebSocket needs the viewer token."""
        return self.url if self.token is None else f"{self.url}#token={self.token}"

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)


def _sockets_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


def start_bridge(
    http_port: int,
    pub_endpoint: str,
    cmd_endpoint: str,
    host: str = "127.0.0.1",
    curve: CurveClientKeys | None = None,
    token: str | None = None,
    allow_hosts: Sequence[str] = (),
    allow_origins: Sequence[str] = (),
) -> BridgeHandle:
    """Serve the viewer on ``http://host:http_port/`` (0 picks a free port) in a thread.

    :param pub_endpoint: the service's PUB endpoint, e.g. ``tcp://127.0.0.1:5555``.
    :param cmd_endpoint: the service's command (ROUTER) endpoint.
    :param curve: CURVE client keys when the service encrypts (``--curve-server-key``).
    :param token: the viewer token WebSockets must present
        (:func:`server.security.viewer_token`); required with ``curve``.
    :param allow_hosts: extra ``Host`` names (``NAME`` or ``NAME:PORT``) to accept.
    :param allow_origins: extra page origins (``http(s)://NAME[:PORT]``) to accept.
    :raises ConfigError: when the HTTP port cannot be opened, ``curve`` comes without
        ``token``, or an allow-list entry is malformed.
    """
    if curve is not None and token is None:
        raise ConfigError("viewer: an encrypted service (CurveZMQ) needs a viewer token")
    policy = AccessPolicy.build(host, http_port, allow_hosts, allow_origins, token)
    if token is None and not policy.loopback_only:
        log.warning("the viewer on %s needs no credential: anyone who can reach it sees "
                    "the map and can pause the service (turn on CurveZMQ)", host or "*")
    ready = threading.Event()
    result: dict[str, Any] = {}

    async def main() -> None:
        try:
            bridge = _Bridge(pub_endpoint, cmd_endpoint, curve)
        except zmq.ZMQError as exc:
            result["error"] = f"bad endpoint {pub_endpoint} / {cmd_endpoint}: {exc}"
            ready.set()
            return
        stop = asyncio.Event()
        try:
            server = await serve(
                bridge.handle, host, http_port, process_request=bridge.process_request,
                max_size=MAX_BROWSER_MESSAGE_BYTES, compression=None,
            )
        except OSError as exc:
            bridge.close()
            result["error"] = f"cannot listen on {host}:{http_port}: {exc}"
            ready.set()
            return
        bridge.policy = replace(policy, port=_sockets_port(server))
        result.update(port=_sockets_port(server), loop=asyncio.get_running_loop(), stop=stop)
        ready.set()
        relay = asyncio.create_task(bridge.relay())
        await stop.wait()
        relay.cancel()
        server.close()
        await server.wait_closed()
        bridge.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="web-bridge", daemon=True)
    thread.start()
    ready.wait()
    if "error" in result:
        raise ConfigError(f"viewer: {result['error']}")
    shown = "127.0.0.1" if host in WILDCARD_BINDS else host
    shown = f"[{shown}]" if ":" in shown else shown
    handle = BridgeHandle(result["port"], f"http://{shown}:{result['port']}/", thread,
                          result["loop"], result["stop"], token)
    log.info("viewer at %s (service %s, %s)", handle.url, pub_endpoint, cmd_endpoint)
    return handle
