"""The ingestion socket: clients push frames, the server tracks them and answers.

Each frame is checked (declared image size read from the PNG/JPEG header before
anything is decoded, so a forged header cannot make the server allocate a huge
image) and put, still encoded, in a bounded drop-oldest queue; the tracking thread
decodes (``cv2.imdecode``) only the frames it takes. The sender of a dropped frame is
told at once (``dropped: true``), the sender of a tracked frame gets its pose.
Replies travel back to the sender's identity. The socket's receive high-water mark
is small (:data:`INGEST_RCVHWM`): a client pushing faster than frames are parsed is
held back by TCP instead of queueing seconds of frames inside ZeroMQ.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import cv2
import numpy as np
import zmq
from numpy.typing import NDArray

import slam_protocol as proto
from server.frames import FrameQueue, Job
from server.routing import RouterServer
from slam.camera import Calibration
from slam.io.image_header import PNG_MAGIC, jpeg_size, png_size
from slam.io.types import SensorFrame

log = logging.getLogger(__name__)

DEFAULT_DEPTH_SCALE = 5000.0  # depth PNG units per metre, as TUM
_ingest_ids = itertools.count()
INGEST_RCVHWM = 16  # messages ZeroMQ buffers per client before pushing back on TCP


class FrameError(ValueError):
    """A pushed frame cannot be used (the message says why)."""


# --- decoding ---------------------------------------------------------------------
def _decode_compressed(data: bytes, encoding: str, size: tuple[int, int], what: str
                       ) -> NDArray[Any]:
    declared = png_size(data) if encoding == "png" else jpeg_size(data)
    if declared is None:
        raise FrameError(f"{what} is not a {encoding.upper()} image")
    if declared != size:
        raise FrameError(f"{what} is {declared[0]}x{declared[1]}, the camera is "
                         f"{size[0]}x{size[1]}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise FrameError(f"{what}: corrupt {encoding.upper()} data")
    if (img.shape[1], img.shape[0]) != size:
        raise FrameError(f"{what} decoded to {img.shape[1]}x{img.shape[0]}, expected "
                         f"{size[0]}x{size[1]}")
    return np.asarray(img)


def _grey_and_color(img: NDArray[Any], what: str
                    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    if img.dtype != np.uint8:
        raise FrameError(f"{what} must be 8-bit, got {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(img), None
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return np.asarray(grey, np.uint8), np.ascontiguousarray(img)
    raise FrameError(f"{what} must be grey or BGR, got shape {img.shape}")


def decode_image(msg: proto.IngestFrame, data: bytes, size: tuple[int, int], what: str
                 ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    """(grey (H, W), BGR (H, W, 3) or None) of an image field; ``size`` = (width, height)."""
    if msg.encoding != "raw":
        return _grey_and_color(_decode_compressed(data, msg.encoding, size, what), what)
    assert msg.shape is not None
    h, w = msg.shape[:2]
    if (w, h) != size:
        raise FrameError(f"{what} is {w}x{h}, the camera is {size[0]}x{size[1]}")
    n = int(np.prod(msg.shape))
    if len(data) != n:
        raise FrameError(f"{what}: {len(data)} bytes for shape {list(msg.shape)} "
                         f"(expected {n})")
    return _grey_and_color(np.frombuffer(data, np.uint8).reshape(msg.shape).copy(), what)


def decode_depth(msg: proto.IngestFrame, size: tuple[int, int]) -> NDArray[np.float32]:
    """Depth (H, W) float32 metres: a 16-bit PNG over ``depth_scale``, or raw float32."""
    data = msg.depth
    assert data is not None
    if data.startswith(PNG_MAGIC):
        raw = _decode_compressed(data, "png", size, "depth")
        if raw.ndim != 2 or raw.dtype != np.uint16:
            raise FrameError(f"depth PNG must be single-channel 16-bit, got {raw.dtype} "
                             f"{raw.shape}")
        scale = msg.depth_scale or DEFAULT_DEPTH_SCALE
        return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)
    if msg.encoding != "raw":
        raise FrameError("depth must be a 16-bit PNG (or raw float32 with encoding 'raw')")
    w, h = size
    if len(data) != 4 * w * h:
        raise FrameError(f"raw depth: {len(data)} bytes, expected {4 * w * h} "
                         f"(float32 metres, {w}x{h})")
    depth = np.frombuffer(data, "<f4").reshape(h, w).astype(np.float32)
    return np.where(np.isfinite(depth), depth, np.float32(0)).astype(np.float32)


def _check_image(msg: proto.IngestFrame, data: bytes, size: tuple[int, int], what: str
                 ) -> None:
    """The size checks of :func:`decode_image` alone (no pixel is decoded)."""
    if msg.encoding == "raw":
        assert msg.shape is not None
        if (msg.shape[1], msg.shape[0]) != size:
            raise FrameError(f"{what} is {msg.shape[1]}x{msg.shape[0]}, the camera is "
                             f"{size[0]}x{size[1]}")
        if len(data) != int(np.prod(msg.shape)):
            raise FrameError(f"{what}: {len(data)} bytes for shape {list(msg.shape)} "
                             f"(expected {int(np.prod(msg.shape))})")
        return
    declared = png_size(data) if msg.encoding == "png" else jpeg_size(data)
    if declared is None:
        raise FrameError(f"{what} is not a {msg.encoding.upper()} image")
    if declared != size:
        raise FrameError(f"{what} is {declared[0]}x{declared[1]}, the camera is "
                         f"{size[0]}x{size[1]}")


def check_frame(msg: proto.IngestFrame, calibration: Calibration, sensor: str) -> None:
    """Refuse a pushed frame that cannot fit ``sensor`` and the camera, from its fields
    and image headers alone (cheap: nothing is decoded); raises :class:`FrameError`."""
    cam = calibration.camera
    size = (cam.width, cam.height)
    _check_image(msg, msg.image, size, "image")
    if sensor == "stereo":
        if msg.right is None:
            raise FrameError("a stereo server needs the 'right' image")
        _check_image(msg, msg.right, size, "right image")
    if sensor == "rgbd":
        if msg.depth is None:
            raise FrameError("an RGB-D server needs the 'depth' image")
        if msg.depth.startswith(PNG_MAGIC):
            if png_size(msg.depth) != size:
                raise FrameError(f"depth PNG is not {size[0]}x{size[1]}")
        elif msg.encoding != "raw":
            raise FrameError("depth must be a 16-bit PNG (or raw float32 with encoding 'raw')")
        elif len(msg.depth) != 4 * size[0] * size[1]:
            raise FrameError(f"raw depth: {len(msg.depth)} bytes, expected "
                             f"{4 * size[0] * size[1]} (float32 metres, {size[0]}x{size[1]})")


def to_sensor_frame(msg: proto.IngestFrame, calibration: Calibration, sensor: str, index: int
                    ) -> SensorFrame:
    """The :class:`SensorFrame` of a pushed frame for ``sensor``; raises :class:`FrameError`."""
    cam = calibration.camera
    size = (cam.width, cam.height)
    grey, color = decode_image(msg, msg.image, size, "image")
    right = depth = None
    if sensor == "stereo":
        if msg.right is None:
            raise FrameError("a stereo server needs the 'right' image")
        right, _ = decode_image(msg, msg.right, size, "right image")
    if sensor == "rgbd":
        if msg.depth is None:
            raise FrameError("an RGB-D server needs the 'depth' image")
        depth = decode_depth(msg, size)
    return SensorFrame(index, msg.stamp.to_seconds(), grey, right=right, depth_m=depth,
                       color=color)


# --- the socket -------------------------------------------------------------------
def reply_body(seq: int, ok: bool, error: str | None = None, dropped: bool = False,
               pose: proto.PoseMsg | None = None) -> bytes:
    return proto.encode(proto.IngestReply(seq, ok, error, dropped, pose).to_dict())


class IngestServer(RouterServer):
    """The ROUTER ingestion socket. Accepted frames go to ``queue`` (drop-oldest); with
    ``queue=None`` every frame is refused with ``refusal`` (the server replays a source).

    The tracking thread answers tracked frames through :meth:`reply_channel` (an
    inproc PUSH socket per thread), which this thread forwards to the sender.
    """

    name = "ingest"

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, queue: FrameQueue | None,
                 calibration: Calibration, sensor: str, max_bytes: int = proto.MAX_MESSAGE_BYTES,
                 setup: Any = None, refusal: str = "this server takes no frames") -> None:
        super().__init__(ctx, endpoint, max_bytes, setup, rcvhwm=INGEST_RCVHWM)
        self.ctx = ctx
        self.queue = queue
        self.calibration = calibration
        self.sensor = sensor
        self.refusal = refusal
        self.accepted = 0
        self.rejected = 0
        self._index = 0
        self._reply_endpoint = f"inproc://slam-ingest-replies-{next(_ingest_ids)}"
        self._replies = ctx.socket(zmq.PULL)
        self._replies.setsockopt(zmq.LINGER, 0)
        self._replies.bind(self._reply_endpoint)

    def reply_channel(self) -> zmq.Socket[Any]:
        """A PUSH socket for one other thread: send ``[*envelope, body]`` multipart."""
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._reply_endpoint)
        return push

    def _extra_sockets(self) -> list[zmq.Socket[Any]]:
        return [self._replies]

    def _on_extra(self, sock: zmq.Socket[Any]) -> None:
        frames = sock.recv_multipart(flags=zmq.NOBLOCK)
        if len(frames) >= 2:
            self.send(frames[:-1], frames[-1])

    def error_reply(self, message: str) -> bytes:
        self.rejected += 1
        return reply_body(proto.NO_SEQ, False, message)

    def handle(self, envelope: list[bytes], body: bytes) -> bytes | None:
        t_arrival = time.perf_counter()
        try:
            msg = proto.IngestFrame.from_dict(proto.decode(body, self.max_bytes))
        except proto.ProtocolError as exc:
            return self.error_reply(str(exc))
        if self.queue is None:
            self.rejected += 1
            return reply_body(msg.seq, False, self.refusal)
        try:
            check_frame(msg, self.calibration, self.sensor)
        except FrameError as exc:
            self.rejected += 1
            log.debug("refused frame %d: %s", msg.seq, exc)
            return reply_body(msg.seq, False, str(exc))
        index = self._index
        self._index += 1
        self.accepted += 1

        def decode() -> SensorFrame:
            return to_sensor_frame(msg, self.calibration, self.sensor, index)

        dropped = self.queue.put(Job(None, t_arrival, envelope[0], envelope, msg.seq, decode))
        if dropped is not None and dropped.sender is not None:
            self.send(dropped.envelope, reply_body(
                -1 if dropped.client_seq is None else dropped.client_seq, False,
                "dropped: frames arrive faster than they are tracked", dropped=True))
        return None
