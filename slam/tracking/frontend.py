"""Turn a sensor frame into a :class:`Frame`: ORB features, undistortion, depth."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from slam.camera import Calibration
from slam.config import FeatureConfig, Sensor
from slam.errors import ImageError, SensorError
from slam.features.learned import LearnedDescriptor
from slam.features.orb import Keypoints, OrbExtractor
from slam.features.stereo import depth_from_image, stereo_u_right
from slam.io.types import SensorFrame
from slam.map.frame import Frame


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
        self._pool = ThreadPoolExecutor(max_workers=1) if sensor == "stereo" else None
        bf = calib.stereo_bf
        if sensor in ("stereo", "rgbd") and bf is None:
            raise SensorError(f"{sensor} needs a baseline (Camera.bf or a stereo rig)")
        self.bf = float(bf) if bf is not None else 0.0

    def build(self, sf: SensorFrame, frame_id: int, for_init: bool = False) -> Frame:
        """Features of ``sf``; ``for_init`` extracts more, for monocular initialisation."""
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
            assert self._pool is not None
            right_job = self._pool.submit(self._extract, extractor, sf.right)
        kp = self._extract(extractor, img)
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
            u_right = stereo_u_right(kp, kp_r, img, sf.right, self.scale_factors, self.bf, cam.fx)
            ok = u_right >= 0
            disp = np.maximum(uv[ok, 0] - u_right[ok], 1e-3)
            depth[ok] = self.bf / disp
        return Frame(
            id=frame_id,
            timestamp=sf.timestamp,
            uv=uv,
            octave=kp.octave,
            descriptors=kp.descriptors,
            depth_m=depth,
            u_right=u_right,
            inv_sigma2=self.inv_level_sigma2[kp.octave],
            width=cam.width,
            height=cam.height,
            color=sf.color,
            image=sf.image if sf.color is None or self.sensor == "stereo" else None,
            right_image=sf.right if self.sensor == "stereo" else None,
            depth_image=sf.depth_m if self.sensor == "rgbd" else None,
        )

    def _extract(self, extractor: OrbExtractor, image: np.ndarray) -> Keypoints:
        """ORB keypoints of ``image``, described by ORB or by the learned descriptor."""
        kp = extractor.extract(image)
        return kp if self.learned is None else self.learned.describe(image, kp)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
