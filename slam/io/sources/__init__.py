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

The first six are built in. Other schemes come from the ``slam.sources`` entry-point
group (``scheme = "module:opener"``, an :data:`Opener`), so a companion package can add a
source without the runtime importing it: ``synthetic:`` is declared so in
``pyproject.toml`` (:func:`slam.synthetic.source.open_synthetic`) and its renderer is
imported only when such a URI is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
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
    "source_schemes",
]

Opener = Callable[[str, str, "str | Path | None", "float | None"], FrameSource]
"""``(argument, sensor, calib_path, fps) -> FrameSource``: opens ``scheme:argument``."""

SOURCE_PLUGIN_GROUP = "slam.sources"

_OPENERS: dict[str, Opener] = {
    "tum": lambda arg, sensor, calib, fps: TumSource(arg, sensor, calib),
    "kitti": lambda arg, sensor, calib, fps: KittiSource(arg, sensor, calib),
    "euroc": lambda arg, sensor, calib, fps: EurocSource(arg, sensor, calib),
    "video": lambda arg, sensor, calib, fps: VideoSource(arg, sensor, calib, fps),
    "images": lambda arg, sensor, calib, fps: ImageFolderSource(arg, sensor, calib, fps),
    "webcam": lambda arg, sensor, calib, fps: WebcamSource(_device(arg), sensor, calib),
}


def _opener(scheme: str) -> Opener | None:
    """The built-in opener of ``scheme``, else the one an installed package declares in
    the ``slam.sources`` entry-point group (imported now), else None."""
    if scheme in _OPENERS:
        return _OPENERS[scheme]
    for ep in entry_points(group=SOURCE_PLUGIN_GROUP, name=scheme):
        opener: Opener = ep.load()
        return opener
    return None


def source_schemes() -> list[str]:
    """Every scheme :func:`open_source` knows: the built-in ones, then the declared ones."""
    declared = sorted({ep.name for ep in entry_points(group=SOURCE_PLUGIN_GROUP)})
    return [*_OPENERS, *(s for s in declared if s not in _OPENERS)]


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
    opener = _opener(scheme) if sep else None
    if opener is None:
        raise DataSourceError(
            f"unknown source {uri!r}; use one of "
            + ", ".join(f"{s}:..." for s in source_schemes())
        )
    if not arg:
        raise DataSourceError(f"source {uri!r} names no path or device")
    return opener(arg, sensor, calib_path, fps)
