"""One typed configuration object, loaded once and passed explicitly.

:func:`load_config` reads our own YAML (nested sections matching the models below)
or an ORB-SLAM-style settings file (``%YAML:1.0``, ``ORBextractor.nFeatures`` …),
then applies dotted overrides such as ``{"features.n_features": 1500}``.
Camera intrinsics are *not* here: they belong to :class:`slam.camera.Calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slam.errors import ConfigError


class Sensor(StrEnum):
    """The camera setups the system runs on; a member equals its name as a string
    (``Sensor.RGBD == "rgbd"``), so files and command lines keep the plain names."""

    MONO = "mono"
    STEREO = "stereo"
    RGBD = "rgbd"


SENSORS: tuple[str, ...] = tuple(s.value for s in Sensor)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureConfig(_Section):
    """ORB extraction."""

    n_features: int = Field(
        0, ge=0, le=10000,
        description="features per frame; 0 = by image size (1000 up to 640x480, 2000 above, "
        "as ORB-SLAM's TUM and KITTI settings)",
    )
    n_features_init: int = Field(
        0, ge=0, le=20000, description="monocular initialisation; 0 = twice n_features"
    )

    @field_validator("n_features", "n_features_init")
    @classmethod
    def _auto_or_enough(cls, v: int) -> int:
        if v != 0 and v < 100:
            raise ValueError("must be 0 (automatic) or at least 100")
        return v

    def features_for(self, width: int, height: int) -> tuple[int, int]:
        """(features per frame, features for monocular initialisation) for an image size."""
        n = self.n_features or (1000 if width * height <= 640 * 480 else 2000)
        return n, self.n_features_init or 2 * n
    scale_factor: float = Field(1.2, gt=1.0, le=2.0)
    n_levels: int = Field(8, ge=1, le=16)
    fast_threshold: int = Field(20, ge=1, le=100)
    min_fast_threshold: int = Field(7, ge=1, le=100)
    grid_cell_px: int = Field(32, ge=8, le=256, description="cell size of the spreading grid")
    descriptor: Literal["orb", "learned"] = Field(
        "orb", description="descriptor of the ORB keypoints: ORB's own, or our learned "
        "256-bit one (cv2.dnn, see docs/learning.md)")
    descriptor_model: str = Field(
        "", description="ONNX model of the learned descriptor; empty = the shipped one "
        "(slam/data/models/descriptor.onnx)")


class TrackingConfig(_Section):
    """Tracking thread."""

    match_ratio: float = Field(0.8, gt=0.0, le=1.0)
    hamming_threshold_high: int = Field(100, ge=1, le=256)
    motion_radius_px: float = Field(
        10.0, gt=0.0, description="motion-model search radius at level 0 (doubled on failure)"
    )
    recovery_keyframes: int = Field(40, ge=1, description="latest keyframes searched when lost")
    min_tracked_points: int = Field(30, ge=5, description="inliers a frame needs to count as "
                                    "tracked after local-map tracking (ORB-SLAM: 30)")
    mono_init_min_points: int = Field(
        50, ge=1, description="monocular initialisation is retried when its bundle adjustment "
        "leaves fewer map points than this")
    motion_min_matches: int = Field(
        20, ge=1, description="matches with the last frame below which the motion model's "
        "search radius is doubled once, and then given up (ORB-SLAM: 20)")
    pose_min_inliers: int = Field(
        10, ge=1, description="inliers the pose optimisation must keep for the motion model or "
        "the reference keyframe to have tracked the frame (ORB-SLAM: 10)")
    reference_min_matches: int = Field(
        15, ge=1, description="descriptor matches with the reference keyframe needed to try "
        "its pose at all (ORB-SLAM: 15)")
    last_frame_match_ratio: float = Field(
        0.9, gt=0.0, le=1.0, description="Lowe ratio of matches projected from the last frame")
    reference_match_ratio: float = Field(
        0.7, gt=0.0, le=1.0, description="Lowe ratio of matches to the reference keyframe")
    recovery_match_ratio: float = Field(
        0.8, gt=0.0, le=1.0, description="Lowe ratio of matches to the local map when lost")
    recovery_min_points: int = Field(
        30, ge=4, description="lost: local-map points, matches, PnP inliers and optimised "
        "inliers each needed to recover against the local map")
    local_search_radius_px: float = Field(
        1.0, gt=0.0, description="local-map search radius (level-0 pixels, times 2.5 head-on "
        "or 4 oblique, times the level's scale) for monocular and stereo")
    local_search_radius_rgbd_px: float = Field(
        3.0, gt=0.0, description="the same for RGB-D (depth-registered colour is less sharp)")
    local_search_radius_recovered_px: float = Field(
        5.0, gt=0.0, description="the same for the first frames after a relocalisation")
    recovered_frames: int = Field(
        3, ge=0, description="frames after a relocalisation that search the wider radius")
    default_close_depth_m: float = Field(
        3.0, gt=0.0, description="metres: the close/far depth threshold when the calibration "
        "gives none (ORB-SLAM: ThDepth x baseline)")
    min_init_map_points: int = Field(
        100, ge=10, description="monocular initialisation: matches and triangulated points needed"
    )
    init_seed: int = Field(
        0, ge=0, description="seed of the monocular initialisation's RANSAC: runs are "
        "repeatable with one seed; other seeds show how much a result owes to chance")
    pose_iterations: int = Field(10, ge=1)
    keyframe_min_frames: int = Field(
        0, ge=0, description="frames since the last keyframe before mapping being idle is "
        "reason enough for a new one (ORB-SLAM's mMinFrames)")
    keyframe_max_frames: int = Field(
        30, ge=1, description="frames since the last keyframe after which a new one is due "
        "(ORB-SLAM's mMaxFrames: one a second at 30 Hz)")
    keyframe_track_ratio: float = Field(
        0.75, gt=0.0, le=1.0, description="stereo/RGB-D: a new keyframe once the frame tracks "
        "fewer than this share of the reference keyframe's well-observed points (ORB-SLAM's "
        "thRefRatio)")
    keyframe_track_ratio_mono: float = Field(
        0.9, gt=0.0, le=1.0, description="the same for monocular: its points are fewer and "
        "fragile, so keyframes come sooner (ORB-SLAM: 0.9)")
    keyframe_track_ratio_start: float = Field(
        0.4, gt=0.0, le=1.0, description="the same while the map has a single keyframe "
        "(ORB-SLAM: 0.4; the first keyframe's points are observed once only)")
    keyframe_weak_ratio: float = Field(
        0.25, gt=0.0, le=1.0, description="stereo/RGB-D: tracking fewer than this share of "
        "the reference's points is weak tracking, a keyframe is due whatever the frame count "
        "(ORB-SLAM's c1c)")
    keyframe_close_tracked_max: int = Field(
        100, ge=0, description="stereo/RGB-D: fewer tracked close points than this (depth "
        "below the close threshold) ...")
    keyframe_close_untracked_min: int = Field(
        70, ge=0, description="... and more untracked close points than this ask for a "
        "keyframe that would map them (ORB-SLAM's bNeedToInsertClose)")
    keyframe_min_inliers: int = Field(
        15, ge=0, description="no keyframe from a frame with this many inliers or fewer: its "
        "pose is too weak to anchor new points")
    keyframe_max_mapping_queue: int = Field(
        3, ge=1, description="stereo/RGB-D: while mapping is busy a keyframe is still "
        "inserted when fewer than this many wait for it besides the one being mapped "
        "(ORB-SLAM: 3); offline replays wait for that, live sources skip the keyframe; "
        "monocular waits (replays) or skips (live)")
    keyframe_overlap_ratio: float = Field(
        0.3, ge=0.0, le=1.0,
        description="stereo/RGB-D: also a new keyframe when fewer than this share of the "
        "reference keyframe's points are tracked (0: ORB-SLAM's rules alone, which on the "
        "synthetic loop wait until about 100 points are left and the pose is already weak: "
        "8.7 mm ATE instead of 2.6 mm; fr1_rpy gets about 15 % more keyframes)",
    )
    local_map_keyframes: int = Field(20, ge=1)
    keyframe_revisit_deg: float = Field(
        0.0, ge=0.0, le=45.0,
        description="degrees; no new keyframe while a keyframe of the map sees the place "
        "from nearly the same view: its viewing direction within this angle of the frame's "
        "and its centre within the baseline that gives this parallax at the frame's median "
        "scene depth (a place mapped already). Bounds the map of a camera that keeps "
        "revisiting one place for days (`slam serve` live sources: 5); 0 = off (ORB-SLAM's "
        "rules alone)")
    subpixel: Literal["auto", "all", "keyframes", "off"] = Field(
        "auto",
        description="refine matched keypoints to a fraction of a pixel by aligning the patch "
        "each map point shows in its reference keyframe (warped by the poses), then "
        "re-optimise: on every frame (most accurate poses, about 4 ms a frame), only on the "
        "frames that become keyframes (an accurate map at little cost; what `slam serve` uses "
        "for live sources, which must keep up with the camera), or never. auto: every frame "
        "for stereo and RGB-D, keyframes for monocular (on fr1_rpy every frame made the "
        "monocular map fragile: 3.6-5.8 cm instead of 2.8 cm)",
    )

    def subpixel_mode(self, sensor: str) -> str:
        """``subpixel`` with ``auto`` resolved for ``sensor``."""
        if self.subpixel != "auto":
            return self.subpixel
        return "keyframes" if sensor == "mono" else "all"

    @field_validator("subpixel", mode="before")
    @classmethod
    def _subpixel_switch(cls, v: object) -> object:
        """Switches as booleans too (YAML reads ``off`` as False): true = all."""
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "on"):
            v = v.lower() in ("true", "yes", "on")
        if isinstance(v, bool):
            return "all" if v else "off"
        return v

    subpixel_max_shift: float = Field(
        1.5, gt=0.0, le=5.0,
        description="largest accepted move of a refined keypoint, in pixels of its level",
    )
    wait_for_mapping: bool = Field(
        True,
        description="when a keyframe is needed and mapping is busy, wait for it (offline "
        "replay at full speed) instead of skipping the keyframe (live sources)",
    )


class MappingConfig(_Section):
    """Local mapping thread."""

    queue_size: int = Field(8, ge=1)
    covisible_for_triangulation: int = Field(10, ge=1)
    local_ba_keyframes: int = Field(10, ge=2)
    local_ba_iterations: int = Field(10, ge=1)
    cull_found_ratio: float = Field(0.25, ge=0.0, le=1.0)
    cull_redundant_ratio: float = Field(0.9, ge=0.0, le=1.0)
    enabled: bool = True
    final_global_ba_iterations: int = Field(
        20, ge=0, description="bundle adjustment of the whole map when a replay ends (0: off)"
    )


class PlaceConfig(_Section):
    """Place recognition (loop detection and relocalisation)."""

    method: Literal["bow", "learned"] = Field(
        "bow", description="bag of binary words, or the learned global embedding"
    )
    vocabulary: str = Field(
        "", description="vocabulary file; empty = the one shipped in slam/data/vocab/"
    )
    embedding_model: str = Field(
        "", description="ONNX model of the learned embedding; empty = the shipped one "
        "(slam/data/models/embedding.onnx)")
    max_candidates: int = Field(10, ge=1, description="candidates returned per query")


class LoopConfig(_Section):
    """Loop closing thread."""

    enabled: bool = True
    min_keyframes_between: int = Field(
        10, ge=1, description="a loop is searched only among keyframes this many ids older"
    )
    consistency: int = Field(
        3, ge=1, description="consecutive keyframes whose candidate groups must agree"
    )
    min_matches: int = Field(20, ge=6, description="ORB matches needed to try an alignment")
    min_inliers: int = Field(20, ge=6, description="alignment inliers needed to accept a loop")
    min_projected_matches: int = Field(
        40, ge=10, description="matches after projecting the loop's neighbourhood"
    )
    essential_graph_min_weight: int = Field(
        100, ge=1, description="covisibility weight that puts an edge in the essential graph"
    )
    pose_graph_iterations: int = Field(20, ge=1)
    global_ba_iterations: int = Field(
        10, ge=0, description="global BA after each loop, in the background (0: off)"
    )


class RelocalizationConfig(_Section):
    """Recovery when tracking is lost."""

    min_inliers: int = Field(30, ge=6, description="PnP inliers needed to accept a candidate")
    new_map_after_s: float = Field(
        5.0, ge=0.0,
        description="monocular: start a new map when relocalisation fails this long (0: never)",
    )


class SystemConfig(_Section):
    """Wiring of the threads."""

    frame_queue_size: int = Field(8, ge=1)
    max_trajectory_poses: int = Field(
        0, ge=0,
        description="frame poses kept for the trajectory (about 110 bytes each); 0 keeps "
        "every one (replays); a long-running service keeps the newest and counts the rest "
        "as dropped")
    threads: bool | None = Field(
        None,
        description="local mapping in its own thread; None = automatic: inline for "
        "monocular replays that wait for mapping (tracking waits for every keyframe's "
        "points there anyway: inline is faster and repeatable), a thread otherwise",
    )

    def mapping_threaded(self, sensor: str, wait_for_mapping: bool) -> bool:
        """Whether local mapping runs in its own thread for this sensor and policy."""
        if self.threads is not None:
            return self.threads
        return not (sensor == "mono" and wait_for_mapping)


class SlamConfig(_Section):
    """The whole configuration: one section per concern."""

    features: FeatureConfig = Field(default_factory=FeatureConfig)  # type: ignore[arg-type]
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # type: ignore[arg-type]
    mapping: MappingConfig = Field(default_factory=MappingConfig)  # type: ignore[arg-type]
    system: SystemConfig = Field(default_factory=SystemConfig)  # type: ignore[arg-type]
    place: PlaceConfig = Field(default_factory=PlaceConfig)  # type: ignore[arg-type]
    loop: LoopConfig = Field(default_factory=LoopConfig)  # type: ignore[arg-type]
    relocalization: RelocalizationConfig = Field(
        default_factory=RelocalizationConfig)  # type: ignore[arg-type]


_ORB_SETTINGS_KEYS: dict[str, str] = {
    "ORBextractor.nFeatures": "features.n_features",
    "ORBextractor.scaleFactor": "features.scale_factor",
    "ORBextractor.nLevels": "features.n_levels",
    "ORBextractor.iniThFAST": "features.fast_threshold",
    "ORBextractor.minThFAST": "features.min_fast_threshold",
}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _read_orb_settings(path: Path) -> dict[str, Any]:
    from slam.io.settings import read_opencv_yaml  # local: keeps config import light

    tree: dict[str, Any] = {}
    values = read_opencv_yaml(path)
    for key, dotted in _ORB_SETTINGS_KEYS.items():
        if key in values:
            _set_dotted(tree, dotted, values[key])
    return tree


def _read_own_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> SlamConfig:
    """Load the configuration from ``path`` (ours or ORB-SLAM settings), then overrides.

    Raises :class:`ConfigError` for a missing file, bad YAML or invalid values.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"configuration file not found: {p}")
        head = p.read_text(errors="replace")[:64]
        tree = _read_orb_settings(p) if head.lstrip().startswith("%YAML") else _read_own_yaml(p)
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    try:
        return SlamConfig.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid configuration at {where}: {first['msg']}") from exc


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Command-line overrides for :func:`load_config`: ``["a.b=1", "c.d=true"]`` ->
    ``{"a.b": 1, "c.d": True}`` (values parsed as YAML). Raises :class:`ConfigError` for
    an item without ``=`` or a value that is not YAML."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML") from exc
    return overrides
