"""A :class:`FrameSource` that renders the synthetic room lazily, with exact ground truth.

URI form: ``synthetic:KIND[?n_frames=N&seed=S&width=W&height=H&noise=SIGMA&blur=SIGMA&laps=L]``
with KIND one of ``loop``, ``forward``, ``sideways`` (see :func:`parse_synthetic_uri`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from slam.camera.pinhole import Calibration, PinholeCamera
from slam.errors import DataSourceError
from slam.io.sources.base import FrameSource
from slam.io.types import SensorFrame, Trajectory
from slam.synthetic.render import render, render_stereo
from slam.synthetic.scene import Scene, room_scene
from slam.synthetic.trajectories import forward_trajectory, loop_trajectory, sideways_trajectory

log = logging.getLogger(__name__)

STEREO_BASELINE_M = 0.1
_FX_AT_640 = 500.0
_TRAJECTORIES: dict[str, Callable[..., Trajectory]] = {
    "loop": loop_trajectory,
    "forward": forward_trajectory,
    "sideways": sideways_trajectory,
}
_DEFAULT_FRAMES = {"loop": 300, "forward": 150, "sideways": 90}


class SyntheticSource(FrameSource):
    """Frames rendered on demand along ``trajectory`` through ``scene``.

    ``mono`` yields ``image``; ``stereo`` adds the rectified ``right`` image (right
    camera at ``+calibration.baseline_m`` along x); ``rgbd`` adds ``depth_m`` (exact
    z-depth in metres). :meth:`ground_truth` is the left/colour camera's trajectory.
    """

    sensors = frozenset({"mono", "stereo", "rgbd"})

    def __init__(self, scene: Scene, trajectory: Trajectory, calibration: Calibration,
                 sensor: str = "mono", name: str = "synthetic", blur_sigma: float = 0.0,
                 noise_sigma: float = 0.0, noise_seed: int = 0) -> None:
        self.name = name
        self._check_sensor(sensor)
        if sensor == "stereo" and calibration.baseline_m is None:
            raise DataSourceError(f"{name}: a stereo source needs calibration.baseline_m")
        self.calibration = calibration
        self.scene = scene
        self._trajectory = trajectory
        self._render_kw = {"blur_sigma": blur_sigma, "noise_sigma": noise_sigma}
        self._noise_seed = noise_seed

    @property
    def length(self) -> int:
        return len(self._trajectory)

    def frame(self, index: int) -> SensorFrame:
        """Render frame ``index`` (0 <= index < len(self))."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")
        assert self.calibration is not None
        cam = self.calibration.camera
        T_world_cam = self._trajectory.T_world_cam[index]
        stamp = float(self._trajectory.stamps[index])
        seed = self._noise_seed * 1_000_003 + 2 * index
        if self.sensor == "stereo":
            assert self.calibration.baseline_m is not None
            left, right, _ = render_stereo(self.scene, cam, self.calibration.baseline_m,
                                           T_world_cam, noise_seed=seed, **self._render_kw)
            return SensorFrame(index=index, timestamp=stamp, image=left, right=right)
        image, depth = render(self.scene, cam, T_world_cam, noise_seed=seed, **self._render_kw)
        depth_m = depth if self.sensor == "rgbd" else None
        return SensorFrame(index=index, timestamp=stamp, image=image, depth_m=depth_m)

    def __iter__(self) -> Iterator[SensorFrame]:
        for index in range(len(self)):
            yield self.frame(index)

    def ground_truth(self) -> Trajectory:
        return Trajectory(self._trajectory.stamps.copy(), self._trajectory.T_world_cam.copy())


def synthetic_calibration(sensor: str, width: int = 640, height: int = 480) -> Calibration:
    """fx = fy = 500 px at 640 px width (scaled with width), centred principal point,
    no distortion, 30 fps; stereo: baseline 0.1 m (bf = 50); rgbd: depth_factor 1, bf 50."""
    fx = _FX_AT_640 * width / 640.0
    camera = PinholeCamera(fx, fx, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
    bf = STEREO_BASELINE_M * fx
    if sensor == "stereo":
        return Calibration(camera, fps=30.0, baseline_m=STEREO_BASELINE_M, bf=bf)
    if sensor == "rgbd":
        return Calibration(camera, fps=30.0, bf=bf, depth_factor=1.0)
    return Calibration(camera, fps=30.0)


def make_synthetic_source(kind: str = "loop", sensor: str = "mono", n_frames: int | None = None,
                          seed: int = 0, width: int = 640, height: int = 480,
                          blur_sigma: float = 0.0, noise_sigma: float = 0.0,
                          laps: float = 1.0) -> SyntheticSource:
    """Source over :func:`room_scene(seed)` along the ``kind`` trajectory at 30 Hz.

    ``n_frames`` defaults to 300 per lap (loop; ``laps`` > 1 revisits the start),
    150 (forward) or 90 (sideways).
    """
    if kind not in _TRAJECTORIES:
        raise DataSourceError(f"unknown synthetic sequence {kind!r}; "
                              f"expected one of {sorted(_TRAJECTORIES)}")
    if width < 16 or height < 16:
        raise DataSourceError(f"synthetic image size {width}x{height} is too small")
    if laps != 1.0 and kind != "loop":
        raise DataSourceError(f"laps applies to the loop sequence only, not {kind!r}")
    n = round(_DEFAULT_FRAMES[kind] * laps) if n_frames is None else int(n_frames)
    if n < 2:
        raise DataSourceError(f"a synthetic sequence needs at least 2 frames, got {n}")
    trajectory = (loop_trajectory(n_frames=n, laps=laps) if kind == "loop"
                  else _TRAJECTORIES[kind](n_frames=n))
    calibration = synthetic_calibration(sensor if sensor in ("stereo", "rgbd") else "mono",
                                        width, height)
    log.info("synthetic:%s %s, %d frames %dx%d, seed %d", kind, sensor, n, width, height, seed)
    return SyntheticSource(room_scene(seed), trajectory, calibration, sensor=sensor,
                           name=f"synthetic:{kind}", blur_sigma=blur_sigma,
                           noise_sigma=noise_sigma, noise_seed=seed)


_URI_PARAMS: dict[str, tuple[str, Callable[[str], float | int]]] = {
    "n_frames": ("n_frames", int), "n": ("n_frames", int), "seed": ("seed", int),
    "width": ("width", int), "height": ("height", int),
    "noise": ("noise_sigma", float), "blur": ("blur_sigma", float), "laps": ("laps", float),
}


def parse_synthetic_uri(uri: str, sensor: str) -> SyntheticSource:
    """Source of ``synthetic:KIND[?key=value&...]`` (keys: n_frames (or n), seed, width,
    height, noise, blur, laps) for ``sensor`` ('mono', 'stereo' or 'rgbd')."""
    scheme, sep, rest = uri.partition(":")
    if scheme != "synthetic" or not sep:
        raise DataSourceError(f"not a synthetic URI: {uri!r} (expected synthetic:KIND)")
    kind, _, query = rest.partition("?")
    kwargs: dict[str, float | int] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise DataSourceError(f"{uri!r}: malformed parameters {query!r}") from exc
    for key, value in pairs:
        if key not in _URI_PARAMS:
            raise DataSourceError(f"{uri!r}: unknown parameter {key!r}; "
                                  f"expected one of {sorted(_URI_PARAMS)}")
        name, cast = _URI_PARAMS[key]
        try:
            kwargs[name] = cast(value)
        except ValueError as exc:
            raise DataSourceError(f"{uri!r}: bad value {value!r} for {key}") from exc
    if not np.all([np.isfinite(v) for v in kwargs.values()]):
        raise DataSourceError(f"{uri!r}: parameters must be finite")
    return make_synthetic_source(kind, sensor, **kwargs)  # type: ignore[arg-type]


def open_synthetic(arg: str, sensor: str, calib_path: str | Path | None = None,
                   fps: float | None = None) -> SyntheticSource:
    """Opener of the ``synthetic:`` scheme for :func:`slam.io.sources.open_source` (the
    ``slam.sources`` entry point): ``arg`` is what follows ``synthetic:``. The room has its
    own exact calibration and no frame rate, so ``calib_path`` and ``fps`` are unused."""
    return parse_synthetic_uri(f"synthetic:{arg}", sensor)
