"""Ingestion: image headers, decoding against OpenCV, drop-oldest queueing and reply routing."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

import slam_protocol as proto
from server.frames import FrameQueue
from server.ingest import (
    FrameError,
    IngestServer,
    jpeg_size,
    png_size,
    reply_body,
    to_sensor_frame,
)
from slam.camera import Calibration, PinholeCamera
from tests.server.service_helpers import ANY_PORT, png

W, H = 64, 48
CALIB = Calibration(PinholeCamera(50.0, 50.0, 31.5, 23.5, W, H), fps=30.0, bf=5.0)


def _image(seed: int = 0, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (H, W) if channels == 1 else (H, W, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _msg(image: bytes, encoding: str = "png", **kw: Any) -> proto.IngestFrame:
    return proto.IngestFrame(kw.pop("seq", 0), proto.Stamp(10, 500_000_000), encoding, image, **kw)


def _fake_png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(("w", "h"), [(64, 48), (1, 1), (641, 479), (4000, 3)])
def test_header_sizes_agree_with_opencv(w: int, h: int) -> None:
    img = np.zeros((h, w, 3), np.uint8)
    assert png_size(png(img)) == (w, h)
    assert jpeg_size(_jpeg(img)) == (w, h)
    assert png_size(_jpeg(img)) is None and jpeg_size(png(img)) is None
    assert png_size(b"") is None and jpeg_size(b"\xff\xd8\xff") is None


def test_grey_png_colour_jpeg_and_raw_images_decode_like_opencv() -> None:
    grey, bgr = _image(1), _image(2, 3)
    sf = to_sensor_frame(_msg(png(grey)), CALIB, "mono", 5)
    assert np.array_equal(sf.image, grey) and sf.color is None
    assert (sf.index, sf.timestamp) == (5, 10.5)
    jpg = _jpeg(bgr)
    sf = to_sensor_frame(_msg(jpg, "jpeg"), CALIB, "mono", 0)
    expected = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert expected is not None and sf.color is not None
    assert np.array_equal(sf.color, expected)
    assert np.array_equal(sf.image, cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY))
    sf = to_sensor_frame(_msg(bgr.tobytes(), "raw", shape=(H, W, 3)), CALIB, "mono", 0)
    assert sf.color is not None and np.array_equal(sf.color, bgr)
    sf = to_sensor_frame(_msg(grey.tobytes(), "raw", shape=(H, W)), CALIB, "mono", 0)
    assert np.array_equal(sf.image, grey)


def test_depth_png_is_scaled_to_metres_and_raw_depth_is_float32_metres() -> None:
    units = np.arange(W * H, dtype=np.uint16).reshape(H, W) * 10
    sf = to_sensor_frame(_msg(png(_image()), depth=png(units)), CALIB, "rgbd", 0)
    assert sf.depth_m is not None and sf.depth_m.dtype == np.float32
    assert np.allclose(sf.depth_m, units / 5000.0, rtol=1e-6)
    sf = to_sensor_frame(_msg(png(_image()), depth=png(units), depth_scale=1000.0),
                         CALIB, "rgbd", 0)
    assert np.allclose(sf.depth_m, units / 1000.0, rtol=1e-6)  # type: ignore[arg-type]
    metres = np.full((H, W), 1.25, np.float32)
    metres[0, 0] = np.nan
    sf = to_sensor_frame(_msg(_image().tobytes(), "raw", shape=(H, W),
                              depth=metres.astype("<f4").tobytes()), CALIB, "rgbd", 0)
    assert sf.depth_m is not None and sf.depth_m[0, 0] == 0.0 and sf.depth_m[1, 1] == 1.25


def test_stereo_takes_the_right_image() -> None:
    left, right = _image(1), _image(2)
    sf = to_sensor_frame(_msg(png(left), right=png(right)), CALIB, "stereo", 0)
    assert sf.right is not None and np.array_equal(sf.right, right)


@pytest.mark.parametrize(("msg", "sensor", "match"), [
    (_msg(png(np.zeros((H + 1, W), np.uint8))), "mono", r"64x49, the camera is 64x48"),
    (_msg(_fake_png_header(60000, 60000) + b"\0" * 100), "mono", "60000x60000"),
    (_msg(png(_image())[:60]), "mono", "corrupt PNG"),
    (_msg(b"GIF89a" + bytes(50)), "mono", "not a PNG"),
    (_msg(png(_image()), "jpeg"), "mono", "not a JPEG"),
    (_msg(png(np.zeros((H, W), np.uint16))), "mono", "8-bit"),
    (_msg(bytes(10), "raw", shape=(H, W)), "mono", "10 bytes for shape"),
    (_msg(bytes(W * H), "raw", shape=(W, H)), "mono", "48x64, the camera"),
    (_msg(png(_image())), "rgbd", "needs the 'depth'"),
    (_msg(png(_image()), depth=png(_image())), "rgbd", "16-bit"),
    (_msg(png(_image()), depth=b"\0" * 12), "rgbd", "16-bit PNG"),
    (_msg(png(_image())), "stereo", "needs the 'right'"),
])
def test_unusable_frames_are_refused_with_a_reason(msg: proto.IngestFrame, sensor: str,
                                                    match: str) -> None:
    with pytest.raises(FrameError, match=match):
        to_sensor_frame(msg, CALIB, sensor, 0)


@pytest.fixture
def ingest() -> Iterator[tuple[IngestServer, FrameQueue, zmq.Context[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    queue = FrameQueue(2, drop_oldest=True)
    srv = IngestServer(ctx, ANY_PORT, queue, CALIB, "mono", max_bytes=1 << 20)
    srv.start()
    yield srv, queue, ctx
    srv.stop()
    ctx.destroy(linger=0)


def _dealer(ctx: zmq.Context[Any], endpoint: str, name: bytes) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, name)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _recv(sock: zmq.Socket[Any], timeout_ms: int = 5000) -> dict[str, Any]:
    assert sock.poll(timeout_ms), "no reply"
    return proto.decode(sock.recv())


def test_full_queue_drops_the_oldest_and_tells_its_sender(
        ingest: tuple[IngestServer, FrameQueue, zmq.Context[Any]]) -> None:
    srv, queue, ctx = ingest
    a, b = _dealer(ctx, srv.endpoint, b"A"), _dealer(ctx, srv.endpoint, b"B")
    for n, (sock, seq) in enumerate(((b, 1), (a, 0)), start=1):  # B's frame is the oldest
        sock.send(proto.encode(_msg(png(_image()), seq=seq).to_dict()))
        while len(queue) < n:
            a.poll(10)
    a.send(proto.encode(_msg(png(_image()), seq=2).to_dict()))  # pushes out B's frame 1
    assert _recv(b) == {"v": 1, "seq": 1, "ok": False, "dropped": True,
                        "error": "dropped: frames arrive faster than they are tracked"}
    for seq in (3, 4):
        a.send(proto.encode(_msg(png(_image()), seq=seq).to_dict()))  # frames 0 and 2 go
    assert [_recv(a)["seq"] for _ in range(2)] == [0, 2]
    assert queue.drops == 3 and len(queue) == 2
    assert not b.poll(200)
    assert [queue.get(0.1).client_seq for _ in range(2)] == [3, 4]  # type: ignore[union-attr]
    a.close()
    b.close()


def test_replies_from_the_tracking_thread_reach_the_right_client(
        ingest: tuple[IngestServer, FrameQueue, zmq.Context[Any]]) -> None:
    srv, queue, ctx = ingest
    a, b = _dealer(ctx, srv.endpoint, b"A"), _dealer(ctx, srv.endpoint, b"B")
    a.send(proto.encode(_msg(png(_image()), seq=10).to_dict()))
    b.send(proto.encode(_msg(png(_image()), seq=20).to_dict()))
    channel = srv.reply_channel()
    got = 0
    while got < 2:
        job = queue.get(5.0)
        assert job is not None and job.sender in (b"A", b"B")
        assert job.sensor_frame().image.shape == (H, W)
        channel.send_multipart([*job.envelope, reply_body(job.client_seq or 0, True)])
        got += 1
    assert _recv(a)["seq"] == 10 and _recv(b)["seq"] == 20
    channel.close()
    a.close()
    b.close()


def test_malformed_frames_get_an_error_with_their_seq(
        ingest: tuple[IngestServer, FrameQueue, zmq.Context[Any]]) -> None:
    srv, queue, ctx = ingest
    a = _dealer(ctx, srv.endpoint, b"A")
    a.send(proto.encode(_msg(b"garbage", seq=42).to_dict()))
    assert _recv(a) == {"v": 1, "seq": 42, "ok": False, "error": "image is not a PNG image"}
    a.send(b"\x92\x01\x02")
    bad = _recv(a)
    assert bad["seq"] == proto.NO_SEQ and bad["ok"] is False and "msgpack map" in bad["error"]
    a.send(proto.encode({"v": 1, "seq": 1, "pad": b"x" * (2 << 20)}))
    assert "exceeds the limit" in _recv(a)["error"]
    assert len(queue) == 0 and srv.rejected == 3
    a.close()


def test_a_replaying_server_refuses_pushed_frames() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    srv = IngestServer(ctx, ANY_PORT, None, CALIB, "mono", refusal="this server replays x")
    srv.start()
    try:
        a = _dealer(ctx, srv.endpoint, b"A")
        a.send(proto.encode(_msg(png(_image()), seq=3).to_dict()))
        assert _recv(a) == {"v": 1, "seq": 3, "ok": False, "error": "this server replays x"}
        a.close()
    finally:
        srv.stop()
        ctx.destroy(linger=0)
