"""Training sets built from sequences and cached to disk (one ``.npz`` per source).

One pass over a sequence yields both sets:

* :class:`PatchPairs`: patches at matching ORB keypoints of two frames of the same time
  span (A's keypoint carried to B by depth and pose, B's nearest keypoint within
  ``match_px``), or of a frame and a homographic, re-exposed copy of it when the
  sequence has no depth. Patches as the runtime sees them (:class:`PatchSampler`).
* :class:`FrameSet`: small grey images with poses, for the place embedding.

Frames of the test span are never read into a cache. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from slam.config import FeatureConfig
from slam.features.orb import Keypoints, OrbExtractor
from slam.features.patches import PatchSampler
from slam.learn.data import (
    TEST,
    FlowTracks,
    LearnFrame,
    Projection,
    SplitSpec,
    apply_homography,
    homography_pair,
    nearest_keypoints,
    open_sequence,
)
from slam.place.embedding_input import embed_image

log = logging.getLogger(__name__)

CACHE_VERSION = 6


@dataclass(frozen=True)
class BuildParams:
    """How pairs are drawn: ``gaps_per_frame`` partners per frame, at most ``max_gap``
    frames later; at most ``per_pair_train`` / ``per_pair_val`` correspondences kept per
    frame pair; B's keypoint within ``match_px`` of A's projection; patches sampled
    32 x 32 over ``patch_support`` pixels of the keypoint's pyramid level."""

    n_features: int = 1000
    max_gap: int = 20
    gaps_per_frame: int = 2
    per_pair_train: int = 64
    per_pair_val: int = 256
    match_px: float = 3.0
    patch_support: float = 32.0
    seed: int = 0
    split: SplitSpec = field(default_factory=SplitSpec)
    max_frames: int | None = None


@dataclass
class PatchPairs:
    """``patches_a``/``patches_b`` (M, S, S) uint8, ``xyz_world`` (M, 3) float32 world point
    (NaN when unknown), ``key`` (M,) int64 identity of A's keypoint where there is no
    world point, ``group`` (M,) int32 frame pair, ``split`` (M,) int8, ``orb_a``/``orb_b``
    (M, 32) uint8 ORB's descriptors of the same keypoints (the baseline), ``patches_near``
    (M, S, S) the B keypoint nearest the true position but beyond ``match_px`` (a hard,
    spatially close negative) where ``has_near`` (M,)."""

    patches_a: NDArray[np.uint8]
    patches_b: NDArray[np.uint8]
    xyz_world: NDArray[np.float32]
    key: NDArray[np.int64]
    group: NDArray[np.int32]
    split: NDArray[np.int8]
    orb_a: NDArray[np.uint8]
    orb_b: NDArray[np.uint8]
    patches_near: NDArray[np.uint8]
    has_near: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.group)

    def subset(self, mask: NDArray[np.bool_]) -> PatchPairs:
        return PatchPairs(*(a[mask] for a in self._arrays()))

    def _arrays(self) -> tuple[NDArray, ...]:  # type: ignore[type-arg]
        return tuple(getattr(self, f.name) for f in fields(self))

    @staticmethod
    def concat(parts: list[PatchPairs]) -> PatchPairs:
        """One set of all ``parts``, group ids made distinct."""
        out, offset = [], 0
        for k, p in enumerate(parts):
            arrays = list(p._arrays())
            arrays[3] = arrays[3] + (np.int64(k) << np.int64(40))
            arrays[4] = arrays[4] + offset
            offset = int(arrays[4].max()) + 1 if len(p) else offset
            out.append(arrays)
        if not out:
            return PatchPairs(*_empty_pairs())
        return PatchPairs(*(np.concatenate(col) for col in zip(*out)))


@dataclass
class FrameSet:
    """``images`` (F, h, w) uint8 grey at :data:`~slam.place.embedding_input.EMBED_SIZE`,
    ``T_world_cam`` (F, 4, 4) (NaN when unknown), ``stamps`` (F,), ``seq`` (F,) int16
    sequence number, ``split`` (F,)."""

    images: NDArray[np.uint8]
    T_world_cam: NDArray[np.float64]
    stamps: NDArray[np.float64]
    seq: NDArray[np.int16]
    split: NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.stamps)

    @staticmethod
    def concat(parts: list[FrameSet]) -> FrameSet:
        cols = [[p.images, p.T_world_cam, p.stamps, p.seq + i, p.split]
                for i, p in enumerate(parts)]
        return FrameSet(*(np.concatenate(c) for c in zip(*cols)))


def _empty_pairs() -> tuple[NDArray, ...]:  # type: ignore[type-arg]
    return (np.zeros((0, 32, 32), np.uint8), np.zeros((0, 32, 32), np.uint8),
            np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32),
            np.zeros(0, np.int8), np.zeros((0, 32), np.uint8), np.zeros((0, 32), np.uint8),
            np.zeros((0, 32, 32), np.uint8), np.zeros(0, bool))


def near_keypoints(uv_true: NDArray[np.float64], uv_kp: NDArray[np.float64], min_px: float,
                   max_px: float = 24.0, k: int = 8) -> NDArray[np.int64]:
    """Index (N,) of the keypoint (M, 2) nearest each true position (N, 2) but farther
    than ``min_px`` (and within ``max_px``); -1 when there is none."""
    from scipy.spatial import cKDTree

    out = np.full(len(uv_true), -1, np.int64)
    if len(uv_kp) <= 1 or len(uv_true) == 0:
        return out
    dist, idx = cKDTree(uv_kp).query(uv_true, k=min(k, len(uv_kp)),
                                     distance_upper_bound=max_px)
    dist = dist.reshape(len(uv_true), -1)
    idx = idx.reshape(len(uv_true), -1)
    ok = np.isfinite(dist) & (dist > min_px)
    first = ok.argmax(axis=1)
    has = ok.any(axis=1)
    out[has] = idx[has, first[has]]
    return out


def gaps_for(index: int, params: BuildParams) -> set[int]:
    """Frame gaps (deterministic in ``seed`` and ``index``) of frame ``index``'s partners."""
    rng = np.random.default_rng([params.seed, index])
    k = min(params.gaps_per_frame, params.max_gap)
    return {int(g) for g in rng.choice(np.arange(1, params.max_gap + 1), k, replace=False)}


@dataclass
class _Seen:
    frame: LearnFrame
    kp: Keypoints
    pyramid: list[NDArray[np.uint8]]
    span: int
    tracks: FlowTracks | None = None


class _Builder:
    def __init__(self, params: BuildParams, cfg: FeatureConfig) -> None:
        self.params = params
        self.extractor = OrbExtractor(cfg, params.n_features)
        self.sampler = PatchSampler(cfg.scale_factor, cfg.n_levels,
                                    support=params.patch_support)
        self.parts: list[tuple[NDArray, ...]] = []  # type: ignore[type-arg]
        self.n_groups = 0

    def pair(self, a: _Seen, b: _Seen, rng: np.random.Generator,
             proj: Projection | None = None, H: NDArray[np.float64] | None = None) -> None:
        """Correspondences of ``a`` -> ``b`` (tracked ground truth ``proj``, or the
        homography ``H``), subsampled."""
        if proj is not None:
            uv_b, valid, xyz = proj.uv_raw_b, proj.valid, proj.xyz_world
        else:
            assert H is not None
            uv_b = apply_homography(H, a.kp.uv_raw)
            h, w = b.frame.image.shape
            valid = (uv_b[:, 0] >= 8) & (uv_b[:, 1] >= 8) & (uv_b[:, 0] < w - 8) & (
                uv_b[:, 1] < h - 8)
            xyz = np.full((len(uv_b), 3), np.nan)
        uv_b = np.where(valid[:, None], uv_b, np.nan)
        j = nearest_keypoints(uv_b, b.kp.uv_raw, self.params.match_px, a.kp.octave,
                              b.kp.octave)
        i = np.flatnonzero(j >= 0)
        j = j[i]
        same_scale = np.abs(a.kp.octave[i] - b.kp.octave[j]) <= 2
        i, j = i[same_scale], j[same_scale]
        _, first = np.unique(j, return_index=True)  # each B keypoint once
        i, j = i[first], j[first]
        cap = self.params.per_pair_train if a.span == 0 else self.params.per_pair_val
        if len(i) > cap:
            keep = np.sort(rng.choice(len(i), cap, replace=False))
            i, j = i[keep], j[keep]
        if len(i) < 8:
            return
        pa = self.sampler.sample(a.frame.image, a.kp.uv_raw[i], a.kp.octave[i], a.kp.angle[i],
                                 a.pyramid)
        pb = self.sampler.sample(b.frame.image, b.kp.uv_raw[j], b.kp.octave[j], b.kp.angle[j],
                                 b.pyramid)
        near = near_keypoints(uv_b[i], b.kp.uv_raw, self.params.match_px)
        k = np.where(near >= 0, near, j)
        pn = self.sampler.sample(b.frame.image, b.kp.uv_raw[k], b.kp.octave[k], b.kp.angle[k],
                                 b.pyramid)
        key = a.frame.index * 100_000 + i.astype(np.int64)
        self.parts.append((pa, pb, xyz[i].astype(np.float32), key,
                           np.full(len(i), self.n_groups, np.int32),
                           np.full(len(i), a.span, np.int8), a.kp.descriptors[i],
                           b.kp.descriptors[j], pn, near >= 0))
        self.n_groups += 1

    def pairs(self) -> PatchPairs:
        if not self.parts:
            return PatchPairs(*_empty_pairs())
        return PatchPairs(*(np.concatenate(c) for c in zip(*self.parts)))


def build_sets(uri: str, params: BuildParams, progress: bool = True
               ) -> tuple[PatchPairs, FrameSet]:
    """Read ``uri`` once and build its patch pairs and place frames (train and val spans)."""
    from tqdm import tqdm

    seq = open_sequence(uri, params.max_frames)
    cam = seq.calibration.camera
    spans = params.split.of(seq.length)
    builder = _Builder(params, FeatureConfig.model_validate({}))
    window: deque[_Seen] = deque(maxlen=params.max_gap)
    images, poses, stamps, splits = [], [], [], []
    rng = np.random.default_rng(params.seed)
    bar = tqdm(seq.frames, total=seq.length, desc=seq.name, unit="frame", disable=not progress,
               leave=False)
    for f in bar:
        span = int(spans[f.index])
        if span == TEST:
            break
        kp = builder.extractor.extract(f.image)
        cur = _Seen(f, kp, builder.sampler.pyramid(f.image), span)
        if seq.has_depth:
            cur.tracks = FlowTracks(cam, f, kp.uv_raw)
            for prev in window:
                gap = f.index - prev.frame.index
                if prev.tracks is None or prev.span != span:
                    continue
                proj = prev.tracks.advance(f)
                if gap in gaps_for(prev.frame.index, params):
                    builder.pair(prev, cur, rng, proj)
        else:
            warped, H = homography_pair(f.image, rng)
            copy = LearnFrame(f.index, f.stamp, warped, None, None)
            other = _Seen(copy, builder.extractor.extract(warped),
                          builder.sampler.pyramid(warped), span)
            builder.pair(cur, other, rng, H=H)
        window.append(cur)
        images.append(embed_image(f.image))
        poses.append(f.T_world_cam if f.T_world_cam is not None else np.full((4, 4), np.nan))
        stamps.append(f.stamp)
        splits.append(span)
    bar.close()
    pairs = builder.pairs()
    frames = FrameSet(np.stack(images), np.stack(poses), np.asarray(stamps),
                      np.zeros(len(stamps), np.int16), np.asarray(splits, np.int8))
    log.info("%s: %d patch pairs in %d frame pairs, %d frames for the embedding", seq.name,
             len(pairs), builder.n_groups, len(frames))
    return pairs, frames


def cache_path(uri: str, params: BuildParams, cache_dir: Path) -> Path:
    """Cache file of ``uri`` built with ``params`` (the key covers both and the version)."""
    scheme, _, arg = uri.partition(":")
    where = str(Path(arg).resolve()) if scheme != "synthetic" else arg
    text = json.dumps({"uri": f"{scheme}:{where}", "params": asdict(params),
                       "version": CACHE_VERSION}, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    return cache_dir / f"{scheme}-{Path(arg).name}-{digest}.npz"


def load_sets(uris: list[str], params: BuildParams, cache_dir: Path, progress: bool = True
              ) -> tuple[PatchPairs, FrameSet]:
    """Patch pairs and frames of every source, read from the cache or built and cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    all_pairs, all_frames = [], []
    for uri in uris:
        path = cache_path(uri, params, cache_dir)
        if path.is_file():
            with np.load(path) as z:
                pairs = PatchPairs(*(z[f.name] for f in fields(PatchPairs)))
                frames = FrameSet(z["images"], z["T_world_cam"], z["stamps"], z["seq"],
                                  z["frame_split"])
            log.info("%s: %d patch pairs from cache %s", uri, len(pairs), path)
        else:
            pairs, frames = build_sets(uri, params, progress)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **{f.name: getattr(pairs, f.name) for f in fields(PatchPairs)},
                     images=frames.images, T_world_cam=frames.T_world_cam,
                     stamps=frames.stamps, seq=frames.seq, frame_split=frames.split)
            tmp.replace(path)
            log.info("cached %s", path)
        all_pairs.append(pairs)
        all_frames.append(frames)
    return PatchPairs.concat(all_pairs), FrameSet.concat(all_frames)
