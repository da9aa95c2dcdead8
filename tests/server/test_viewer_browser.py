"""End to end: headless Chromium renders the viewer page fed by the bridge.

Chromium is driven through the DevTools protocol over a WebSocket; the test reads
``window.viewerState`` and checks a screenshot for drawn content.  Skipped when
Chromium is absent, except in CI (``CI=true``) where that is a failure.
Set ``SLAM_VIEWER_SCREENSHOT=path.png`` to keep the screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from server.web_bridge import BridgeHandle, start_bridge
from tests.server.fake_service import FakeService, SyntheticRun, publish_run

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1280, 800)
BACKGROUND_BGR = np.array([0x1A, 0x16, 0x14])  # #14161a, the scene's clear colour


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
        self.ws: ClientConnection = connect(ws_url, max_size=None)
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
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """A headless Chromium with one page, driven over the DevTools protocol."""
    profile = tmp_path / "profile"
    log_path = tmp_path / "chromium.log"
    args = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
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


def _devtools_port(active_port: Path, proc: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited: {log_path.read_text(errors='replace')[-2000:]}")
        if active_port.is_file() and active_port.read_text().strip():
            return int(active_port.read_text().split()[0])
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def wait_for(tools: DevTools, condition: Callable[[dict[str, Any]], bool],
             timeout: float = 15.0) -> dict[str, Any]:
    """Poll ``window.viewerState`` until ``condition`` holds; returns the last state."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        raw = tools.evaluate("JSON.stringify(window.viewerState ?? null)")
        state = json.loads(raw) if raw else {}
        if state and condition(state):
            return state
        time.sleep(0.1)
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
    time.sleep(0.3)  # a few animation frames
    check_drawn(browser, screenshot(browser, tmp_path))
    assert browser.errors() == []


@pytest.fixture
def slam_serve(tmp_path: Path) -> Iterator[str]:
    """``slam serve`` (paused, full speed) on ``synthetic:sideways?n=60``; yields the viewer URL."""
    log_path = tmp_path / "serve.log"
    any_port = "tcp://127.0.0.1:*"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--source", "synthetic:sideways?n=60",
           "--sensor", "rgbd", "--rate", "max", "--paused", "--http", "0",
           "--pub", any_port, "--cmd", any_port, "--ingest", any_port]
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
        time.sleep(0.1)
    raise TimeoutError(f"slam serve printed no viewer URL:\n{log_path.read_text()[-3000:]}")


def test_viewer_draws_slam_serve(browser: DevTools, slam_serve: str, tmp_path: Path) -> None:
    browser.call("Page.navigate", url=slam_serve)
    state = wait_for(browser, lambda s: s["snapshots"] >= 1 and s["status"] >= 1, timeout=20)
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
    time.sleep(0.3)
    check_drawn(browser, screenshot(browser, tmp_path))
    assert browser.errors() == []
