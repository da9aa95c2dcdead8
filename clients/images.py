"""Images and depth maps as pushed frames carry them (``encoding``: jpeg, png or raw).

OpenCV is imported only to compress (jpeg, png); raw frames and bytes that are already
encoded need only numpy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from clients.errors import ClientError
from slam_protocol import ENCODINGS

DEFAULT_DEPTH_SCALE = 5000.0
"""PNG depth units per metre, as TUM RGB-D writes them."""
MAX_DEPTH_UNITS = 65535
"""Largest value of a 16-bit PNG depth pixel (depth beyond it is clipped)."""

Image = NDArray[np.uint8] | bytes
"""An (H, W) grey or (H, W, 3) BGR uint8 array, or bytes already in the frame's encoding."""


def encode_image(image: Image, encoding: str) -> bytes:
    """Bytes of an (H, W) grey or (H, W, 3) BGR uint8 image in ``encoding``.

    ``bytes`` pass through untouched (a JPEG straight from an MJPEG camera, say);
    ``raw`` needs an array (its shape travels with it).

    :raises ClientError: unknown encoding, wrong dtype or shape, or OpenCV failed.
    """
    if encoding not in ENCODINGS:
        raise ClientError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if isinstance(image, bytes | bytearray | memoryview):
        if encoding == "raw":
            raise ClientError("raw frames must be arrays (their shape is sent with them)")
        return bytes(image)
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ClientError(f"image must be (H, W) or (H, W, 3) uint8, got {a.dtype} {a.shape}")
    if encoding == "raw":
        return a.tobytes()
    import cv2  # only to compress

    ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", a)
    if not ok:
        raise ClientError(f"OpenCV could not {encoding}-encode a {a.shape} image")
    return bytes(buf)


def encode_depth(depth_m: NDArray[np.float32] | bytes, encoding: str, depth_scale: float
                 ) -> bytes:
    """Depth (H, W) metres: raw float32 for ``raw``, else a 16-bit PNG of metres*scale
    (``bytes`` pass through: an already encoded PNG of ``depth_scale`` units per metre).
    NaN and infinite depths become 0 (no depth).

    :raises ClientError: wrong shape, raw bytes, or OpenCV failed.
    """
    if isinstance(depth_m, bytes | bytearray | memoryview):
        if encoding == "raw":
            raise ClientError("raw depth must be an array")
        return bytes(depth_m)
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if d.ndim != 2:
        raise ClientError(f"depth must be (H, W), got {d.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(d, dtype="<f4").tobytes()
    import cv2

    units = np.clip(np.round(d * depth_scale), 0, MAX_DEPTH_UNITS).astype(np.uint16)
    ok, buf = cv2.imencode(".png", units)
    if not ok:
        raise ClientError("OpenCV could not PNG-encode the depth image")
    return bytes(buf)
