"""Compression of keyframe images for map files (format version 2).

Colour images are JPEG (lossy, quality chosen by the caller) or PNG; grey images
are PNG (lossless); depth images (float32 metres) are 16-bit PNG of
``round(depth * scale)`` with a per-image ``scale`` in units per metre (0.2 mm
units, as TUM's raw depth, unless the image is deeper than 13.1 m). Arrays a codec
cannot hold (not uint8, odd shapes) are stored raw. OpenCV encodes and decodes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from slam.io.image_header import jpeg_size, png_size

DEPTH_SCALE = 5000.0  # units per metre: 0.2 mm, max 13.1 m
MIN_DEPTH_SCALE, MAX_DEPTH_SCALE = 1.0, 1e6  # units per metre of a stored depth image
_UINT16_MAX = 65535
_PNG_LEVEL = 1  # fast; barely larger than level 9 on depth and camera images
CHANNELS = (1, 3, 4)  # of a (H, W, C) image; grey images are (H, W)
# Decoding a map's images allocates at most this many bytes per pixel of the camera
# and keyframe: colour, grey and right images up to 4 channels of uint8 each, depth
# float32 (``check_image_arrays``).
DECODED_BYTES_PER_PIXEL = 16
Blob = bytes | memoryview | NDArray[np.uint8]


class Codec(IntEnum):
    """How one image is stored (``kf.<kind>_codec``)."""

    NONE = 0
    PNG = 1
    JPEG = 2
    RAW = 3


def _encodable(img: NDArray[Any]) -> bool:
    return img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4)))


def encode_image(img: NDArray[np.uint8], jpeg_quality: int | None) -> tuple[Codec, bytes]:
    """``img`` (H, W) or (H, W, 3|4) uint8 as JPEG (``jpeg_quality`` 1..100, 3 channels
    or grey) or PNG (``jpeg_quality`` None, or 4 channels); anything else raw bytes."""
    if img.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {img.dtype}")
    if not _encodable(img):
        return Codec.RAW, np.ascontiguousarray(img).tobytes()
    if jpeg_quality is not None and (img.ndim == 2 or img.shape[2] == 3):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        codec = Codec.JPEG
    else:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])
        codec = Codec.PNG
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} image")
    return codec, buf.tobytes()


def _imdecode(codec: Codec, data: Blob, shape: tuple[int, ...], flag: int) -> Any:
    """``cv2.imdecode`` of PNG or JPEG ``data`` once its header declares the (H, W) of
    ``shape`` (so a forged header cannot make OpenCV allocate more); None if it fails."""
    buf = np.frombuffer(data, np.uint8)
    if codec == Codec.PNG:
        declared = png_size(buf.data)
    elif codec == Codec.JPEG:
        declared = jpeg_size(buf.data)
    else:
        raise ValueError(f"unknown image codec {int(codec)}")
    if declared != (shape[1], shape[0]):
        raise ValueError(f"an encoded image declares size {declared}, expected "
                         f"{shape[1]}x{shape[0]}")
    try:
        return cv2.imdecode(buf, flag)
    except cv2.error:
        return None


def decode_image(codec: Codec, data: Blob, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    """Inverse of :func:`encode_image`; ValueError when the result is not of ``shape``
    (checked in the PNG/JPEG header before decoding)."""
    if codec == Codec.RAW:
        if len(data) != int(np.prod(shape)):
            raise ValueError(f"{len(data)} raw image bytes do not fit shape {shape}")
        return np.frombuffer(data, np.uint8).reshape(shape).copy()
    flag = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_UNCHANGED
    img = _imdecode(codec, data, shape, flag)
    if img is None or img.shape != tuple(shape) or img.dtype != np.uint8:
        got = None if img is None else img.shape
        raise ValueError(f"an encoded image decodes to {got}, expected {tuple(shape)}")
    return np.asarray(img, np.uint8)


def depth_scale_for(depth_m: NDArray[np.floating[Any]]) -> float:
    """Units per metre for :func:`encode_depth`: :data:`DEPTH_SCALE` unless the deepest
    reading would overflow 16 bits, then the largest scale that fits (at least
    :data:`MIN_DEPTH_SCALE`: readings beyond 65.5 km are clipped)."""
    finite = depth_m[np.isfinite(depth_m)]
    deepest = float(finite.max()) if finite.size else 0.0
    if deepest * DEPTH_SCALE <= _UINT16_MAX:
        return DEPTH_SCALE
    return max(MIN_DEPTH_SCALE, float(np.floor(_UINT16_MAX / deepest)))


def encode_depth(depth_m: NDArray[np.float32], scale: float) -> bytes:
    """(H, W) depth in metres (0, negative or NaN: no reading) as a 16-bit PNG of
    ``round(depth * scale)``."""
    if depth_m.ndim != 2:
        raise ValueError(f"a depth image must be (H, W), got {depth_m.shape}")
    d = np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    raw = np.clip(np.rint(d * scale), 0, _UINT16_MAX).astype(np.uint16)
    ok, buf = cv2.imencode(".png", raw, [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {depth_m.shape} depth image")
    return bytes(buf.tobytes())


def decode_depth(data: Blob, scale: float, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """(H, W) float32 metres of :func:`encode_depth`'s bytes: ``raw / scale`` in float32,
    the same arithmetic as the TUM reader, so TUM depth round-trips exactly."""
    if not MIN_DEPTH_SCALE <= scale <= MAX_DEPTH_SCALE:
        raise ValueError(f"invalid depth scale {scale}")
    raw = _imdecode(Codec.PNG, data, shape, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.shape != tuple(shape):
        got = None if raw is None else (raw.dtype, raw.shape)
        raise ValueError(f"an encoded depth image decodes to {got}, expected uint16 {shape}")
    return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)


# --- keyframe images as map-file arrays ------------------------------------------------
# Array prefix -> Frame attribute. Per kind: kf.<kind>_codec (K,) u1, kf.<kind>_ndim (K,)
# (-1: no image), kf.<kind>_shape (K, 4) padded with 1, kf.<kind>_offsets (K+1,) into
# <kind>.data (encoded bytes); kf.depth_scale (K,) units per metre of the depth PNGs.
IMAGE_KINDS: dict[str, str] = {"color": "color", "image": "image", "right": "right_image",
                               "depth": "depth_image"}
IMAGE_OFFSETS: dict[str, str] = {k: f"kf.{k}_offsets" for k in IMAGE_KINDS}
Images = dict[str, list[NDArray[Any] | None]]


def image_spec() -> dict[str, tuple[str | None, tuple[int, ...], str]]:
    """The image arrays in the notation of ``map_arrays.SPEC``."""
    spec: dict[str, tuple[str | None, tuple[int, ...], str]] = {
        "kf.depth_scale": ("<f8", (), "K")}
    for k in IMAGE_KINDS:
        spec |= {f"kf.{k}_codec": ("|u1", (), "K"), f"kf.{k}_ndim": ("<i8", (), "K"),
                 f"kf.{k}_shape": ("<i8", (4,), "K"), f"kf.{k}_offsets": ("<i8", (), "K+1"),
                 f"{k}.data": ("|u1", (), k)}
    return spec


def snapshot_images(frames: list[Any]) -> Images:
    """References to each frame's images, per kind (call under the map lock; cheap)."""
    return {k: [getattr(f, attr) for f in frames] for k, attr in IMAGE_KINDS.items()}


def encode_image_arrays(images: Images, color_quality: int | None,
                        workers: int = 2) -> dict[str, NDArray[Any]]:
    """Encode every image (OpenCV releases the GIL: ``workers`` threads) into the arrays
    described above. Colour is JPEG at ``color_quality`` (None: PNG), grey PNG, depth
    16-bit PNG."""
    n = len(images["color"])
    scales = np.array([0.0 if d is None else depth_scale_for(d) for d in images["depth"]])

    def one(kind: str, i: int) -> tuple[Codec, bytes]:
        img = images[kind][i]
        if img is None:
            return Codec.NONE, b""
        if kind == "depth":
            return Codec.PNG, encode_depth(img, float(scales[i]))
        return encode_image(img, color_quality if kind == "color" else None)

    jobs = [(k, i) for k in IMAGE_KINDS for i in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = dict(zip(jobs, pool.map(lambda job: one(*job), jobs)))
    out: dict[str, NDArray[Any]] = {"kf.depth_scale": scales}
    for k in IMAGE_KINDS:
        ndim, shape = np.full(n, -1, np.int64), np.ones((n, 4), np.int64)
        for i, img in enumerate(images[k]):
            if img is not None:
                if img.ndim > 4:
                    raise ValueError(f"Frame.{IMAGE_KINDS[k]} of {img.ndim} dimensions")
                ndim[i], shape[i, : img.ndim] = img.ndim, img.shape
        blobs = [results[(k, i)][1] for i in range(n)]
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
        out |= {f"kf.{k}_codec": np.array([results[(k, i)][0] for i in range(n)], np.uint8),
                f"kf.{k}_ndim": ndim, f"kf.{k}_shape": shape, f"kf.{k}_offsets": offsets,
                f"{k}.data": np.frombuffer(b"".join(blobs), np.uint8)}
    return out


def check_image_arrays(a: dict[str, NDArray[Any]], width: int, height: int) -> None:
    """Codes, dimensions and raw sizes consistent, every image exactly ``height`` x
    ``width`` pixels (grey (H, W), or (H, W, C) with C in :data:`CHANNELS`; depth
    (H, W)), and the decoded bytes within :data:`DECODED_BYTES_PER_PIXEL` per pixel
    and keyframe; ValueError otherwise. The decoders check each PNG/JPEG header and
    decoded shape."""
    total = 0
    for k in IMAGE_KINDS:
        codec, nd, shape = a[f"kf.{k}_codec"], a[f"kf.{k}_ndim"], a[f"kf.{k}_shape"]
        allowed = (Codec.NONE, Codec.PNG) if k == "depth" else tuple(Codec)
        if not np.all(np.isin(codec, [int(c) for c in allowed])):
            raise ValueError(f"kf.{k}_codec holds unknown codes")
        present = nd >= 0
        if np.any(present != (codec != Codec.NONE)):
            raise ValueError(f"kf.{k}_ndim does not match kf.{k}_codec")
        if not np.all(np.isin(nd[present], (2,) if k == "depth" else (2, 3))):
            raise ValueError(f"{k} images must be (H, W)" + ("" if k == "depth" else
                                                              " or (H, W, C)"))
        sh = shape[present]
        if np.any(sh[:, 0] != height) or np.any(sh[:, 1] != width):
            raise ValueError(f"a {k} image is not of the camera's size {width}x{height}")
        channels = np.where(nd[present] == 3, sh[:, 2], 1)
        if not np.all(np.isin(channels, CHANNELS)):
            raise ValueError(f"a {k} image has {int(channels.max())} channels")
        itemsize = 4 if k == "depth" else 1
        sizes = np.zeros(len(nd), np.int64)
        sizes[present] = height * width * channels
        raw = codec == Codec.RAW
        if np.any(sizes[raw] != np.diff(a[f"kf.{k}_offsets"])[raw]):
            raise ValueError(f"{k} image shapes do not match their data")
        total += int(sizes.sum()) * itemsize
    budget = len(a["kf.depth_scale"]) * width * height * DECODED_BYTES_PER_PIXEL
    if total > budget:
        raise ValueError(f"the images would decode to {total} bytes, more than the "
                         f"{budget} bytes {len(a['kf.depth_scale'])} keyframes may hold")


def decode_image_arrays(a: dict[str, NDArray[Any]], workers: int = 2) -> Images:
    """Every keyframe's images (None where absent), per kind, decoded in ``workers``
    threads from views of the arrays (no copy of the encoded bytes); ValueError names
    an image that does not decode to its stored shape. Call :func:`check_image_arrays`
    first."""
    n = len(a["kf.depth_scale"])
    failed = threading.Event()  # stop decoding the rest once one image failed

    def one(kind: str, i: int) -> NDArray[Any] | None:
        nd = int(a[f"kf.{kind}_ndim"][i])
        if nd < 0 or failed.is_set():
            return None
        lo, hi = a[f"kf.{kind}_offsets"][i: i + 2]
        shape = tuple(int(s) for s in a[f"kf.{kind}_shape"][i, :nd])
        blob = a[f"{kind}.data"][lo:hi]
        try:
            if kind == "depth":
                return decode_depth(blob, float(a["kf.depth_scale"][i]), shape)
            return decode_image(Codec(int(a[f"kf.{kind}_codec"][i])), blob, shape)
        except ValueError as exc:
            failed.set()
            raise ValueError(f"the {kind} image of keyframe {i} (in file order): {exc}"
                             ) from exc

    jobs = [(k, i) for k in IMAGE_KINDS for i in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(lambda job: one(*job), jobs))
    return {k: decoded[j * n: (j + 1) * n] for j, k in enumerate(IMAGE_KINDS)}


def v1_image_arrays(a: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """Format version 1 kept only colour images, raw (``kf.color_ndim``, ``kf.color_shape``,
    ``kf.color_offsets`` in elements, ``color.data`` of any dtype): the version 2 arrays
    holding the same colour images raw and no other image. ValueError when inconsistent."""
    nd, shape, offsets = a["kf.color_ndim"], a["kf.color_shape"], a["kf.color_offsets"]
    data = a["color.data"]
    n = len(nd)
    if len(data) and data.dtype != np.uint8:
        raise ValueError(f"colour images of dtype {data.dtype} (only uint8 is supported)")
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(data):
        raise ValueError("kf.color_offsets does not index color.data")
    out: dict[str, NDArray[Any]] = {"kf.depth_scale": np.zeros(n)}
    for k in IMAGE_KINDS:
        out |= {f"kf.{k}_codec": np.zeros(n, np.uint8), f"kf.{k}_ndim": np.full(n, -1, np.int64),
                f"kf.{k}_shape": np.ones((n, 4), np.int64),
                f"kf.{k}_offsets": np.zeros(n + 1, np.int64), f"{k}.data": np.zeros(0, np.uint8)}
    codec = np.where(nd >= 0, int(Codec.RAW), int(Codec.NONE)).astype(np.uint8)
    out |= {"kf.color_codec": codec, "kf.color_ndim": np.asarray(nd, np.int64),
            "kf.color_shape": np.asarray(shape, np.int64),
            "kf.color_offsets": np.asarray(offsets, np.int64),
            "color.data": np.asarray(data, np.uint8).reshape(-1)}
    return out
