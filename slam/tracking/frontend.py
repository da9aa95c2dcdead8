"""Turn a sensor frame into a :class:`Frame`: ORB features, undistortion, depth.

The feature work of a frame (ORB on the left and right images, stereo matching or
the depth lookup, undistortion) needs nothing from the map, so it can run ahead of
tracking: :meth:`FrameBuilder.prefetch` starts it for the next frame on the feature
worker thread while the tracker works on the current one, and :meth:`FrameBuilder.build`
picks it up. OpenCV's ORB and our Numba stereo kernel release the GIL, so the two
overlap on two cores. Stereo also extracts the right image on a thread of its own.
The result is the same whether a frame was prefetched or not.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slam.camera import Calibration
from slam.config import FeatureConfig, Sensor
from slam.errors import ImageError, SensorError
from slam.features.learned import LearnedDescriptor
from slam.features.orb import Keypoints, OrbExtractor
from slam.features.stereo import depth_from_image, stereo_u_right
from slam.io.types import SensorFrame
from slam.map.frame import Frame
from slam.stages import StageClock

MAX_AHEAD = 2  # frames prefetched and not yet built (the current one and the next)


@dataclass
class _Features:
    """What the feature stage makes of a sensor frame (see :class:`Frame`)."""

    kp: Keypoints
    uv: NDArray[np.float64]
    depth_m: NDArray[np.float64]
    u_right: NDArray[np.float64]


class FrameBuilder:
    """Extracts features and per-keypoint depth for one sensor type."""

    def __init__(self, calib: Calibration, cfg: FeatureConfig, sensor: Sensor) -> None:
        self.calib = calib
        self.cfg = cfg
        self.sensor = sensor
        n, n_init = cfg.features_for(calib.camera.width, calib.camera.height)
        self.extractor = OrbExtractor(cfg, n)
        self.init_extractor = OrbExtractor(cfg, n_init)
        self.learned: LearnedDescriptor | None = None
        if cfg.descriptor == "learned":  # our CNN describes the ORB keypoints (cv2.dnn)
            self.learned = LearnedDescriptor(cfg.descriptor_model or None, cfg.scale_factor,
                                             cfg.n_levels)
        self.scale_factors = self.extractor.scale_factors
        self.inv_level_sigma2 = self.extractor.inv_level_sigma2
        self.clock = StageClock("features")
        self._right_pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="orb-right")
                            if sensor == "stereo" else None)
        self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features")
        # Frames whose features are being prefetched, oldest first, with their jobs.
        self._ahead: collections.deque[tuple[SensorFrame, bool, Future[_Features]]] = \
            collections.deque()
        bf = calib.stereo_bf
        if sensor in ("stereo", "rgbd") and bf is None:
            raise SensorError(f"{sensor} needs a baseline (Camera.bf or a stereo rig)")
        self.bf = float(bf) if bf is not None else 0.0

    def prefetch(self, sf: SensorFrame, for_init: bool = False) -> None:
        """Start the feature work of ``sf`` on the feature thread, behind the frames
        prefetched before it (at most ``MAX_AHEAD`` wait; older ones are dropped)."""
        while len(self._ahead) >= MAX_AHEAD:
            self._ahead.popleft()[2].cancel()  # one that runs already finishes unseen
        self._ahead.append((sf, for_init, self._ahead_pool.submit(self._features, sf, for_init)))

    def build(self, sf: SensorFrame, frame_id: int, for_init: bool = False) -> Frame:
        """Features of ``sf``; ``for_init`` extracts more, for monocular initialisation.
        Uses the prefetched features when :meth:`prefetch` was called with ``sf`` (frames
        prefetched before ``sf`` are dropped)."""
        feats = None
        if any(ahead_sf is sf for ahead_sf, _, _ in self._ahead):
            while True:
                ahead_sf, ahead_init, job = self._ahead.popleft()
                if ahead_sf is sf:
                    break
                job.cancel()
            if ahead_init == for_init:
                with self.clock.stage("wait_prefetch"):
                    feats = job.result()  # re-raises the job's ImageError or SensorError
            else:  # made with the other extractor (monocular initialisation began or ended)
                job.cancel()
        if feats is None:
            feats = self._features(sf, for_init)
        cam = self.calib.camera
        kp = feats.kp
        return Frame(
            id=frame_id,
            timestamp=sf.timestamp,
            uv=feats.uv,
            octave=kp.octave,
            descriptors=kp.descriptors,
            depth_m=feats.depth_m,
            u_right=feats.u_right,
            inv_sigma2=self.inv_level_sigma2[kp.octave],
            width=cam.width,
            height=cam.height,
            color=sf.color,
            image=sf.image if sf.color is None or self.sensor == "stereo" else None,
            right_image=sf.right if self.sensor == "stereo" else None,
            depth_image=sf.depth_m if self.sensor == "rgbd" else None,
        )

    def _features(self, sf: SensorFrame, for_init: bool) -> _Features:
        """Keypoints, undistorted pixels and depth of ``sf`` (in any thread)."""
        cam = self.calib.camera
        img = sf.image
        if img.shape != (cam.height, cam.width):
            raise ImageError(
                f"frame {sf.index}: image is {img.shape[1]}x{img.shape[0]}, "
                f"calibration says {cam.width}x{cam.height}"
            )
        extractor = self.init_extractor if for_init else self.extractor
        right_job = None
        if self.sensor == "stereo":
            if sf.right is None or sf.right.shape != img.shape:
                raise SensorError(f"frame {sf.index}: stereo needs a right image of the same size")
            assert self._right_pool is not None
            right_job = self._right_pool.submit(self._extract, extractor, sf.right, "orb_right")
        kp = self._extract(extractor, img, "orb")
        uv = cam.undistort_points(kp.uv_raw)
        n = len(kp)
        depth = np.full(n, -1.0)
        u_right = np.full(n, -1.0)
        if self.sensor == "rgbd":
            if sf.depth_m is None or sf.depth_m.shape != img.shape:
                raise SensorError(f"frame {sf.index}: RGB-D needs a depth image of the same size")
            depth = depth_from_image(kp.uv_raw, sf.depth_m)
            ok = depth > 0
            u_right[ok] = uv[ok, 0] - self.bf / depth[ok]
        elif right_job is not None:
            assert sf.right is not None
            kp_r = right_job.result()
            with self.clock.stage("stereo_match"):
                u_right = stereo_u_right(kp, kp_r, img, sf.right, self.scale_factors,
                                         self.bf, cam.fx)
            ok = u_right >= 0
            disp = np.maximum(uv[ok, 0] - u_right[ok], 1e-3)
            depth[ok] = self.bf / disp
        return _Features(kp, uv, depth, u_right)

    def _extract(self, extractor: OrbExtractor, image: np.ndarray, stage: str) -> Keypoints:
        """ORB keypoints of ``image``, described by ORB or by the learned descriptor."""
        with self.clock.stage(stage):
            kp = extractor.extract(image)
            return kp if self.learned is None else self.learned.describe(image, kp)

    def close(self) -> None:
        """Stop the feature threads (prefetched jobs not started are dropped; one that
        runs is waited for, a few milliseconds)."""
        self._ahead.clear()
        self._ahead_pool.shutdown(wait=True, cancel_futures=True)
        if self._right_pool is not None:
            self._right_pool.shutdown(wait=True, cancel_futures=True)
