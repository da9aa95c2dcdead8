"""The frame-source interface, image decoding helpers and a bounded reader thread."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.config import SENSORS
from slam.errors import DataSourceError, ImageError, SensorError
from slam.io.types import SensorFrame, Trajectory

log = logging.getLogger(__name__)



class FrameSource(ABC):
    """A sequence of :class:`SensorFrame` for one sensor setup.

    ``calibration`` describes the images the source yields (rectified for stereo),
    None when the source has none (a video without ``--calib``). ``sensors`` lists
    what the source can feed; ``sensor`` is the one chosen at construction.
    """

    name: str
    sensor: str
    sensors: frozenset[str]
    calibration: Calibration | None

    def _check_sensor(self, sensor: str) -> None:
        if sensor not in SENSORS:
            raise SensorError(f"unknown sensor {sensor!r}; expected one of {sorted(SENSORS)}")
        if sensor not in self.sensors:
            raise SensorError(
                f"{self.name} cannot feed a {sensor} sensor (it feeds {sorted(self.sensors)})"
            )
        self.sensor = sensor

    @property
    def length(self) -> int | None:
        """Number of frames when known in advance, else None (live camera)."""
        return None

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f"{self.name} has no known length")
        return n

    @abstractmethod
    def __iter__(self) -> Iterator[SensorFrame]:
        """Frames in time order, indices from 0."""

    def ground_truth(self) -> Trajectory | None:
        """World-from-camera ground truth of the yielded camera, when the dataset has it."""
        return None

    def close(self) -> None:
        """Release devices or files (no-op for folder datasets)."""
        return None


def _decode(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    try:
        img = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as exc:
        raise ImageError(f"cannot decode image {path}") from exc
    if img is None:
        raise ImageError(f"cannot decode image {path} (corrupt or not an image)")
    return img


def _check_size(path: Path, img: np.ndarray, size: tuple[int, int] | None) -> None:
    if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
        raise ImageError(
            f"image {path} is {img.shape[1]}x{img.shape[0]}, expected {size[0]}x{size[1]}"
        )


def read_grey(path: Path, size: tuple[int, int] | None = None) -> NDArray[np.uint8]:
    """(H, W) uint8 grey image of a file; ``size`` = expected (width, height)."""
    img = _decode(path, cv2.IMREAD_GRAYSCALE)
    _check_size(path, img, size)
    return np.asarray(img, dtype=np.uint8)


def read_color(
    path: Path, size: tuple[int, int] | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(grey (H, W), BGR (H, W, 3)) uint8 images of a colour file."""
    bgr = _decode(path, cv2.IMREAD_COLOR)
    _check_size(path, bgr, size)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return np.asarray(grey, dtype=np.uint8), np.asarray(bgr, dtype=np.uint8)


def read_depth(
    path: Path, depth_factor: float, size: tuple[int, int] | None = None
) -> NDArray[np.float32]:
    """(H, W) float32 depth in metres (raw / ``depth_factor``; 0 stays 0) of a 16-bit PNG."""
    raw = _decode(path, cv2.IMREAD_UNCHANGED)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ImageError(
            f"depth image {path} must be single-channel 16-bit, got {raw.dtype} {raw.shape}"
        )
    _check_size(path, raw, size)
    return (raw.astype(np.float32) / np.float32(depth_factor)).astype(np.float32)


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    img = _decode(path, cv2.IMREAD_UNCHANGED)
    return img.shape[1], img.shape[0]


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else :class:`DataSourceError`."""
    if not path.is_dir():
        raise DataSourceError(f"{what} folder not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else :class:`DataSourceError`."""
    if not path.is_file():
        raise DataSourceError(f"{what} not found: {path}")
    return path


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class BoundedReader:
    """Reads frames on a thread into a bounded queue (back-pressure when full).

    Iterating yields the frames; an exception raised while reading is re-raised
    in the consumer. ``realtime=True`` releases frames no faster than their
    timestamps. ``close()`` (or leaving the ``with`` block) stops the thread early;
    so does setting ``stop`` (e.g. from a signal handler), which also ends the
    iteration within ``STOP_POLL_S`` even while no frame arrives.
    """

    STOP_POLL_S = 0.1  # how often a consumer waiting for a frame looks at ``stop``

    def __init__(
        self, frames: Iterable[SensorFrame], maxsize: int = 8, realtime: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._frames = frames
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()  # set by close()
        self._stop_requested = stop  # set by the caller, never by this class
        self._realtime = realtime
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._started = False
        self._done = False

    def _stopping(self) -> bool:
        """Whether ``close()`` was called or the caller's ``stop`` is set."""
        return self._stop.is_set() or (
            self._stop_requested is not None and self._stop_requested.is_set())

    def _put(self, item: object) -> bool:
        """Put with back-pressure; False once closed or stopped."""
        while not self._stopping():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _pace(self, stamp: float, t0: tuple[float, float] | None) -> tuple[float, float]:
        if t0 is None:
            return time.monotonic(), stamp
        deadline = t0[0] + (stamp - t0[1])
        while not self._stopping() and (wait := deadline - time.monotonic()) > 0:
            self._stop.wait(min(wait, self.STOP_POLL_S))
        return t0

    def _run(self) -> None:
        t0: tuple[float, float] | None = None
        try:
            for frame in self._frames:
                if self._stopping():
                    return
                if self._realtime:
                    t0 = self._pace(frame.timestamp, t0)
                if not self._put(frame):
                    return
        except BaseException as exc:
            self._put(_Failure(exc))
            return
        self._put(_END)

    def start(self) -> BoundedReader:
        """Start the reader thread (iteration starts it too)."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[SensorFrame]:
        self.start()
        while not self._done:
            if self._stopping():
                self._done = True
                return
            try:
                item = self._queue.get(timeout=self.STOP_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                self._done = True
                return
            if isinstance(item, _Failure):
                self._done = True
                raise item.exc
            yield cast(SensorFrame, item)

    def qsize(self) -> int:
        """Frames waiting in the queue now."""
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and drop queued frames."""
        self._stop.set()
        self._done = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._started:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("frame reader thread did not stop within %.1f s", timeout)

    def __enter__(self) -> BoundedReader:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LimitedSource:
    """The first ``max_frames`` frames of a source; every other attribute passes through."""

    def __init__(self, source: FrameSource, max_frames: int) -> None:
        self._source = source
        self._max_frames = max_frames

    @property
    def length(self) -> int | None:
        n = self._source.length
        return self._max_frames if n is None else min(n, self._max_frames)

    def __len__(self) -> int:
        return min(len(self._source), self._max_frames)

    def __iter__(self) -> Iterator[SensorFrame]:
        return itertools.islice(iter(self._source), self._max_frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


class SkippedSpanSource:
    """A kidnapped camera: frames ``start <= index < stop`` (0-based, in reading
    order) are left out, the first ``blank`` of them replaced by black frames (the
    lens covered while the camera is carried away). Other attributes pass through."""

    def __init__(self, source: FrameSource, start: int, stop: int, blank: int = 0) -> None:
        if not 0 <= start < stop or not 0 <= blank <= stop - start:
            raise DataSourceError(f"invalid span of frames to skip: {start}:{stop} "
                                  f"({blank} blank)")
        self._source = source
        self.start = start
        self.stop = stop
        self.blank = blank

    @property
    def length(self) -> int | None:
        n = self._source.length
        if n is None:
            return None
        return n - max(0, min(n, self.stop) - min(n, self.start)) + min(
            self.blank, max(0, n - self.start))

    def __iter__(self) -> Iterator[SensorFrame]:
        for i, sf in enumerate(iter(self._source)):
            if not self.start <= i < self.stop:
                yield sf
            elif i - self.start < self.blank:
                yield _blanked(sf)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


def _blanked(sf: SensorFrame) -> SensorFrame:
    """``sf`` with every image black and no depth."""
    def black(a: NDArray[Any] | None) -> NDArray[Any] | None:
        return None if a is None else np.zeros_like(a)

    return SensorFrame(sf.index, sf.timestamp, np.zeros_like(sf.image), black(sf.right),
                       black(sf.depth_m), black(sf.color))
