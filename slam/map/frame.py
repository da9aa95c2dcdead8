"""A frame's features, depth measurements and pose estimate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from slam.features.matching import KeypointGrid
from slam.geometry.lie import se3_inv

NO_POINT = -1


@dataclass
class Frame:
    """Features of one image and what tracking knows about them.

    ``uv`` (N, 2) ideal (undistorted) pixels; ``octave`` (N,) int32;
    ``descriptors`` (N, 32) uint8; ``depth_m`` (N,) metres, <= 0 where unknown;
    ``u_right`` (N,) virtual right-image column (pixels), < 0 where unknown;
    ``inv_sigma2`` (N,) information of each keypoint (1 / scale^2);
    ``point_ids`` (N,) int64 id of the matched map point or -1;
    ``outlier`` (N,) bool. ``T_cam_world`` (4x4) once tracked.

    The pixels, for dense reconstruction (references to the sensor's arrays, never
    copies): ``color`` (H, W, 3) uint8 BGR when the source has colour; ``image``
    (H, W) uint8 grey when it has none, and always for stereo (the left image);
    ``right_image`` (H, W) uint8 the rectified right image (stereo); ``depth_image``
    (H, W) float32 metres registered to the image, 0 where unknown (RGB-D). None
    where not applicable. Keyframes keep them; other frames are dropped by tracking.
    """

    id: int
    timestamp: float
    uv: NDArray[np.float64]
    octave: NDArray[np.int32]
    descriptors: NDArray[np.uint8]
    depth_m: NDArray[np.float64]
    u_right: NDArray[np.float64]
    inv_sigma2: NDArray[np.float64]
    width: int
    height: int
    color: NDArray[np.uint8] | None = None
    T_cam_world: NDArray[np.float64] | None = None
    point_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    outlier: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    image: NDArray[np.uint8] | None = None
    right_image: NDArray[np.uint8] | None = None
    depth_image: NDArray[np.float32] | None = None
    _grid: KeypointGrid | None = None

    def __post_init__(self) -> None:
        n = len(self.uv)
        if len(self.point_ids) != n:
            self.point_ids = np.full(n, NO_POINT, np.int64)
        if len(self.outlier) != n:
            self.outlier = np.zeros(n, bool)

    def __len__(self) -> int:
        return len(self.uv)

    @property
    def grid(self) -> KeypointGrid:
        """Keypoint grid for radius searches (built on first use)."""
        if self._grid is None:
            self._grid = KeypointGrid(self.uv, self.width, self.height)
        return self._grid

    @property
    def T_world_cam(self) -> NDArray[np.float64]:
        """World-from-camera pose (4x4); the frame must have been tracked."""
        assert self.T_cam_world is not None
        return se3_inv(self.T_cam_world)

    @property
    def center_world(self) -> NDArray[np.float64]:
        """Camera centre (3,) in the world frame."""
        assert self.T_cam_world is not None
        return -self.T_cam_world[:3, :3].T @ self.T_cam_world[:3, 3]

    def pixels(self) -> NDArray[np.uint8] | None:
        """The frame's image: colour (H, W, 3) BGR when there is one, else grey (H, W)."""
        return self.color if self.color is not None else self.image

    def move_keypoints(self, rows: NDArray[np.int64], uv: NDArray[np.float64]) -> None:
        """Move keypoints ``rows`` (M,) to ideal pixels ``uv`` (M, 2) (a refinement):
        ``u_right`` shifts with ``u``, and the radius-search grid is rebuilt."""
        du = uv[:, 0] - self.uv[rows, 0]
        has_right = self.u_right[rows] >= 0
        self.u_right[rows[has_right]] += du[has_right]
        self.uv[rows] = uv
        self._grid = None

    def released(self) -> Frame:
        """This frame without its features and pixels (what a culled keyframe keeps):
        id, timestamp, image size and pose, zero keypoints. The arrays are dropped, not
        copied, so a culled keyframe costs a few hundred bytes instead of megabytes."""
        pose = None if self.T_cam_world is None else self.T_cam_world.copy()
        return Frame(self.id, self.timestamp, np.zeros((0, 2)), np.zeros(0, np.int32),
                     np.zeros((0, 32), np.uint8), np.zeros(0), np.zeros(0), np.zeros(0),
                     self.width, self.height, T_cam_world=pose)

    def has_depth(self) -> NDArray[np.bool_]:
        """Mask (N,) of keypoints with a depth measurement."""
        return self.depth_m > 0
