"""Frame sources behind explicit URIs.

=================  ==========================================================
``tum:DIR``        TUM RGB-D sequence folder (mono, rgbd)
``kitti:DIR``      KITTI odometry ``.../sequences/NN`` folder (mono, stereo)
``euroc:DIR``      EuRoC MAV ASL folder, ``DIR/mav0/cam0`` or ``DIR/cam0`` (mono, stereo)
``video:FILE``     a video file OpenCV decodes (mono)
``images:DIR``     image files of a folder in name order (mono)
``webcam:N``       live camera number N (mono)
``synthetic:KIND`` rendered room along a known trajectory (mono, stereo, rgbd);
                   KIND is loop, forward or sideways, options ``?n_frames=&seed=``
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slam.errors import DataSourceError
from slam.io.sources.base import (
    SENSORS,
    BoundedReader,
    FrameSource,
    LimitedSource,
    SkippedSpanSource,
)
from slam.io.sources.euroc import EurocSource
from slam.io.sources.kitti import KittiSource
from slam.io.sources.tum import TumSource
from slam.io.sources.video import ImageFolderSource, VideoSource, WebcamSource

__all__ = [
    "SENSORS",
    "BoundedReader",
    "EurocSource",
    "FrameSource",
    "ImageFolderSource",
    "KittiSource",
    "LimitedSource",
    "SkippedSpanSource",
    "TumSource",
    "VideoSource",
    "WebcamSource",
    "open_source",
]

Opener = Callable[[str, str, "str | Path | None", "float | None"], FrameSource]

_OPENERS: dict[str, Opener] = {
    "tum": lambda arg, sensor, calib, fps: TumSource(arg, sensor, calib),
    "kitti": lambda arg, sensor, calib, fps: KittiSource(arg, sensor, calib),
    "euroc": lambda arg, sensor, calib, fps: EurocSource(arg, sensor, calib),
    "video": lambda arg, sensor, calib, fps: VideoSource(arg, sensor, calib, fps),
    "images": lambda arg, sensor, calib, fps: ImageFolderSource(arg, sensor, calib, fps),
    "webcam": lambda arg, sensor, calib, fps: WebcamSource(_device(arg), sensor, calib),
    "synthetic": lambda arg, sensor, calib, fps: _synthetic("synthetic:" + arg, sensor),
}


def _synthetic(uri: str, sensor: str) -> FrameSource:
    from slam.synthetic.source import parse_synthetic_uri  # renderer only when asked for

    return parse_synthetic_uri(uri, sensor)


def _device(arg: str) -> int:
    try:
        return int(arg)
    except ValueError as exc:
        raise DataSourceError(f"webcam:N needs a device number, got {arg!r}") from exc


def open_source(
    uri: str, sensor: str, calib_path: str | Path | None = None, fps: float | None = None
) -> FrameSource:
    """Open the source named by ``uri`` (``scheme:argument``, see the module docstring).

    ``sensor`` is ``mono``, ``stereo`` or ``rgbd``; ``calib_path`` an ORB-SLAM settings
    file overriding the dataset's calibration; ``fps`` the frame rate of
    ``video:``/``images:`` sources. Raises :class:`DataSourceError` for an unknown
    scheme or missing path, :class:`SensorError` when the source cannot feed
    ``sensor``, :class:`CalibrationError` when no calibration can be found.
    """
    scheme, sep, arg = uri.partition(":")
    if not sep or scheme not in _OPENERS:
        raise DataSourceError(
            f"unknown source {uri!r}; use one of " + ", ".join(f"{s}:..." for s in _OPENERS)
        )
    if not arg:
        raise DataSourceError(f"source {uri!r} names no path or device")
    return _OPENERS[scheme](arg, sensor, calib_path, fps)
