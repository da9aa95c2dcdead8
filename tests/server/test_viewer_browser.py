"""End to end: headless Chromium renders the viewer page fed by the bridge.

Chromium is driven through the DevTools protocol over a WebSocket; the test reads
``window.viewerState`` and checks a screenshot for drawn content.  Skipped when
Chromium is absent, except in CI (``CI=true``) where that is a failure.
Set ``SLAM_VIEWER_SCREENSHOT=path.png`` to keep the screenshot.

Access (docs/security.md): with CurveZMQ on, the page needs the viewer token in its
URL fragment or typed in; a page of another origin, or one reached through a
rebound DNS name (Chromium maps ``evil.example`` to 127.0.0.1 here), gets 403.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from server.security import (
    CurveClientKeys,
    CurveServerKeys,
    generate_keys,
    load_viewer_token,
    viewer_token,
)
from server.web_bridge import BridgeHandle, start_bridge
from tests.server.fake_service import FakeService, SyntheticRun, publish_run

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1280, 800)
BACKGROUND_BGR = np.array([0x1A, 0x16, 0x14])  # #14161a, the scene's clear colour
REBOUND_NAME = "evil.example"  # resolved to 127.0.0.1 by the browser: a DNS rebinding


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    message = f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true: install it with `apt-get install -y chromium`")
    pytest.skip(message)


class DevTools:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()  # websockets wants connect() as a context
        self.ws: ClientConnection = self._stack.enter_context(connect(ws_url, max_size=None))
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg["result"])
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors and error log entries seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"].get("text", "")[:500])
        return out

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium with one page, driven over the DevTools protocol."""
    profile = tmp_path / "profile"
    log_path = tmp_path / "chromium.log"
    args = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    # Chromium's singleton sockets go under TMPDIR: a folder of this test's, removed after,
    # and short (a Unix socket's path has at most 107 bytes; tmp_path under xdist is longer).
    sockets = Path(tempfile.mkdtemp(prefix="cr-"))
    with log_path.open("wb") as log:
        env = {**os.environ, "TMPDIR": str(sockets)}
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        port = _devtools_port(profile / "DevToolsActivePort", proc, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                   deviceScaleFactor=1, mobile=False)
        yield tools
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(sockets, ignore_errors=True)


def _devtools_port(active_port: Path, proc: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited: {log_path.read_text(errors='replace')[-2000:]}")
        if active_port.is_file() and active_port.read_text().strip():
            return int(active_port.read_text().split()[0])
        time.sleep(0.05)  # a file Chromium writes: nothing to wait on but the file itself
    raise TimeoutError("chromium did not open its DevTools port")


def next_frames(tools: DevTools, n: int = 1) -> None:
    """Wait until the page has drawn ``n`` more animation frames (the page's own clock,
    no sleep here); a page navigating meanwhile ends the wait early."""
    script = (f"new Promise(r => {{ let k = {n}; const f = () => --k > 0 ? "
              "requestAnimationFrame(f) : r(0); requestAnimationFrame(f); })")
    with contextlib.suppress(RuntimeError):  # the execution context went with a navigation
        tools.call("Runtime.evaluate", expression=script, awaitPromise=True)


def wait_for(tools: DevTools, condition: Callable[[dict[str, Any]], bool],
             timeout: float = 15.0) -> dict[str, Any]:
    """Read ``window.viewerState`` after each drawn frame until ``condition`` holds;
    returns the last state."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        raw = tools.evaluate("JSON.stringify(window.viewerState ?? null)")
        state = json.loads(raw) if raw else {}
        if state and condition(state):
            return state
        next_frames(tools)
    raise AssertionError(f"viewer state never got there: {state}; errors: {tools.errors()}")


def screenshot(tools: DevTools, tmp_path: Path) -> np.ndarray:
    """The page as a BGR image (also written to $SLAM_VIEWER_SCREENSHOT when set)."""
    png = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
    for path in (tmp_path / "viewer.png", os.environ.get("SLAM_VIEWER_SCREENSHOT")):
        if path:
            Path(path).write_bytes(png)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (VIEWPORT[1], VIEWPORT[0])
    return image


def element_box(tools: DevTools, selector: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) CSS pixels of an element."""
    rect = tools.evaluate(f"JSON.stringify(document.querySelector('{selector}')"
                          ".getBoundingClientRect())")
    r = json.loads(rect)
    return (round(r["left"]), round(r["top"]), round(r["right"]), round(r["bottom"]))


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1].astype(np.int16)


def check_drawn(tools: DevTools, image: np.ndarray) -> None:
    """Points, trajectory and the camera image with its feature overlay are on screen."""
    scene = crop(image, element_box(tools, "#scene canvas"))
    drawn = np.abs(scene - BACKGROUND_BGR).sum(axis=2) > 40
    assert drawn.mean() > 0.005, f"3-D view nearly empty ({drawn.mean():.4f} drawn)"
    b, g, r = scene[..., 0], scene[..., 1], scene[..., 2]
    orange = (r > 200) & (g > 120) & (g < 200) & (b < 110)  # the trajectory, #ffa640
    assert orange.sum() > 30, f"trajectory not visible ({orange.sum()} orange pixels)"
    panel = crop(image, element_box(tools, "#image"))
    assert panel.size and panel.mean() > 30, "camera image panel is dark"
    b, g, r = panel[..., 0], panel[..., 1], panel[..., 2]
    green = (g > 170) & (r < 120) & (b < 170)  # feature circles, #3ee07a
    assert green.sum() > 100, f"no feature overlay ({green.sum()} green pixels)"


@pytest.fixture
def fake_bridge() -> Iterator[tuple[FakeService, BridgeHandle, SyntheticRun]]:
    run = SyntheticRun.make(n_frames=60)
    service = FakeService(run.snapshot(n_poses=30, n_points=600))
    bridge = start_bridge(0, service.pub_endpoint, service.cmd_endpoint)
    service.wait_subscribed()
    yield service, bridge, run
    bridge.stop()
    service.close()


def test_viewer_draws_the_fake_service(browser: DevTools, fake_bridge: Any,
                                       tmp_path: Path) -> None:
    service, bridge, run = fake_bridge
    browser.call("Page.navigate", url=bridge.url)
    wait_for(browser, lambda s: s["snapshots"] >= 1 and s["points"] == 600 and s["poses"] == 30)
    publish_run(service, run, 0, 60, rate_hz=100.0)  # 0..29 are already in the snapshot
    n_points = len(run.xyz)
    state = wait_for(browser, lambda s: s["poses"] == 60 and s["points"] == n_points
                     and s["frames"] >= 1 and s["status"] >= 1)
    assert state["keyframes"] == 6 and state["lastState"] == "tracking"
    service.snapshot = run.snapshot(n_poses=60, n_points=n_points, loops=((5, 0),))
    service.publish("loop", run.loop(5, 0))
    state = wait_for(browser, lambda s: s["snapshots"] >= 2 and s["loops"] == 1)
    assert state["poses"] == 60 and state["points"] == n_points and state["errors"] == 0
    next_frames(browser, 5)  # the scene as drawn after that state
    check_drawn(browser, screenshot(browser, tmp_path))
    assert browser.errors() == []


@pytest.fixture
def slam_serve(tmp_path: Path) -> Iterator[str]:
    """``slam serve`` (paused, full speed, CurveZMQ on) on ``synthetic:sideways?n=60``;
    yields the viewer URL it printed (with the token)."""
    log_path = tmp_path / "serve.log"
    any_port = "tcp://127.0.0.1:*"
    keys = generate_keys(tmp_path / "keys")
    cmd = [sys.executable, "-m", "server.cli", "serve", "--source", "synthetic:sideways?n=60",
           "--sensor", "rgbd", "--rate", "max", "--paused", "--http", "0",
           "--pub", any_port, "--cmd", any_port, "--ingest", any_port,
           "--curve-server-key", str(keys.server_secret),
           "--curve-clients", str(keys.authorized_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    try:
        yield _viewer_url(proc, log_path)
    finally:
        proc.terminate()  # SIGTERM: a clean shutdown
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _viewer_url(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = re.search(r"viewer on (http://\S+)", text)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"slam serve exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)  # a log another process writes: nothing to wait on but the file
    raise TimeoutError(f"slam serve printed no viewer URL:\n{log_path.read_text()[-3000:]}")


def test_viewer_draws_slam_serve(browser: DevTools, slam_serve: str, tmp_path: Path) -> None:
    assert slam_serve.endswith("#token=" + load_viewer_token(tmp_path / "keys/server.key_secret"))
    browser.call("Page.navigate", url=slam_serve)
    state = wait_for(browser, lambda s: s["snapshots"] >= 1 and s["status"] >= 1, timeout=20)
    assert browser.evaluate("location.hash") == ""  # the token left the address bar
    assert state["lastStatus"]["paused"] is True and state["poses"] == 0
    browser.evaluate("document.getElementById('pause').click()")  # the page says 'resume'
    wait_for(browser, lambda s: s["replies"] >= 1 and s["lastStatus"]["paused"] is False)
    state = wait_for(browser, lambda s: bool(s["lastStatus"]["finished"]) and s["frames"] >= 1,
                     timeout=60)
    status = state["lastStatus"]
    assert status["frames"] >= 30 and state["errors"] == 0
    assert state["poses"] >= 0.8 * status["tracked_frames"] and state["poses"] >= 20
    assert state["points"] >= 100 and state["keyframes"] >= 2
    assert state["lastState"] == "tracking"
    next_frames(browser, 5)  # the scene as drawn after that state
    check_drawn(browser, screenshot(browser, tmp_path))
    assert browser.errors() == []


# --- access ---------------------------------------------------------------------------
@pytest.fixture
def curve_fake_bridge() -> Iterator[tuple[FakeService, BridgeHandle, SyntheticRun]]:
    """An encrypted fake service; its bridge wants the viewer token."""
    import zmq

    run = SyntheticRun.make(n_frames=20)
    server_public, server_secret = zmq.curve_keypair()
    client = CurveClientKeys.ephemeral(server_public)
    keys = CurveServerKeys(server_public, server_secret, frozenset({client.public}))
    service = FakeService(run.snapshot(n_poses=10, n_points=200), curve=keys)
    bridge = start_bridge(0, service.pub_endpoint, service.cmd_endpoint, curve=client,
                          token=viewer_token(server_secret))
    try:
        service.wait_subscribed()
        yield service, bridge, run
    finally:
        bridge.stop()
        service.close()


def test_viewer_without_the_token_gets_nothing_until_it_is_typed(
        browser: DevTools, curve_fake_bridge: Any) -> None:
    service, bridge, run = curve_fake_bridge
    assert bridge.token and bridge.page_url.endswith(bridge.token)
    browser.call("Page.navigate", url=bridge.url)  # no #token=...
    state = wait_for(browser, lambda s: s["authRequired"])
    service.publish("pose", run.pose(10))
    assert state["authReason"] == "credential required" and not state["authSent"]
    assert browser.evaluate("document.getElementById('auth').hidden") is False
    browser.evaluate("document.getElementById('token').value = '0'.repeat(64);"
                     "document.getElementById('auth').requestSubmit()")
    state = wait_for(browser, lambda s: s["authReason"] == "credential refused")
    assert state["messages"] == 0 and state["snapshots"] == 0 and state["poses"] == 0
    assert service.commands == []  # the bridge asked the service nothing for this page
    browser.evaluate(f"document.getElementById('token').value = '{bridge.token}';"
                     "document.getElementById('auth').requestSubmit()")
    state = wait_for(browser, lambda s: s["snapshots"] >= 1 and s["points"] == 200)
    sent = service.publish("pose", run.pose(11))
    assert sent and wait_for(browser, lambda s: s["poses"] == 11)["errors"] == 0
    assert browser.evaluate("document.getElementById('auth').hidden") is True
    assert browser.errors() == []


FOREIGN_PAGE = """<!doctype html><meta charset="utf-8"><title>elsewhere</title><script>
window.result = { events: [] };
const ws = new WebSocket("ws://127.0.0.1:%d/ws");
ws.onopen = () => { result.events.push("open"); ws.send('{"cmd": "pause"}'); };
ws.onmessage = () => result.events.push("message");
ws.onerror = () => result.events.push("error");
ws.onclose = (e) => result.events.push("close " + e.code);
</script>"""


@pytest.fixture
def foreign_site(fake_bridge: Any) -> Iterator[str]:
    """A page on another port (another origin) that opens a WebSocket to the bridge."""
    page = (FOREIGN_PAGE % fake_bridge[1].port).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _handshake_statuses(tools: DevTools) -> list[int]:
    return [int(e["params"]["response"]["status"]) for e in tools.events
            if e.get("method") == "Network.webSocketHandshakeResponseReceived"]


def test_page_of_another_origin_is_refused(browser: DevTools, fake_bridge: Any,
                                           foreign_site: str) -> None:
    service = fake_bridge[0]
    browser.call("Network.enable")
    browser.call("Page.navigate", url=foreign_site)
    deadline = time.monotonic() + 15
    events: list[str] = []
    while not any(e.startswith("close") for e in events) and time.monotonic() < deadline:
        events = browser.evaluate("window.result ? window.result.events : []") or []
        next_frames(browser)
    assert "open" not in events and "message" not in events and "close 1006" in events, events
    log_text = " ".join(browser.errors())
    assert 403 in _handshake_statuses(browser) or "403" in log_text, (events, log_text)
    assert service.commands == []


def test_dns_rebinding_gets_403(browser: DevTools, fake_bridge: Any) -> None:
    service, bridge, _ = fake_bridge
    browser.call("Network.enable")
    browser.call("Page.navigate", url=f"http://{REBOUND_NAME}:{bridge.port}/")
    deadline = time.monotonic() + 15
    statuses: list[int] = []
    while not statuses and time.monotonic() < deadline:
        browser.evaluate("1")  # collects the events that arrived meanwhile
        statuses = [int(e["params"]["response"]["status"]) for e in browser.events
                    if e.get("method") == "Network.responseReceived"
                    and e["params"].get("type") == "Document"]
        next_frames(browser)
    assert statuses == [403]
    assert "Host not allowed" in browser.evaluate("document.body.innerText")
    assert browser.evaluate("typeof window.viewerState") == "undefined"
    assert service.commands == []
