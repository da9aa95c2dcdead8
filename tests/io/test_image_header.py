"""Image sizes from PNG and JPEG headers, read without decoding."""

from __future__ import annotations

import cv2
import numpy as np

from slam.io.image_header import jpeg_size, png_size


def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return bytes(buf.tobytes())


def test_sizes_of_real_images() -> None:
    for h, w in ((1, 1), (48, 64), (480, 640)):
        img = np.zeros((h, w, 3), np.uint8)
        assert png_size(_encode(".png", img)) == (w, h)
        assert jpeg_size(_encode(".jpg", img)) == (w, h)
        assert png_size(memoryview(_encode(".png", img))) == (w, h)


def test_a_forged_png_header_is_read_as_declared() -> None:
    png = bytearray(_encode(".png", np.zeros((4, 4), np.uint8)))
    png[16:24] = (100_000).to_bytes(4, "big") * 2
    assert png_size(bytes(png)) == (100_000, 100_000)


def test_other_bytes_have_no_size() -> None:
    png, jpg = _encode(".png", np.zeros((4, 4), np.uint8)), _encode(".jpg", np.zeros((4, 4),
                                                                                     np.uint8))
    assert png_size(jpg) is None and jpeg_size(png) is None
    for junk in (b"", b"\x89PNG", b"\xff\xd8", b"\xff\xd8\xff", b"\xff\xd8\x00\x00",
                 jpg[:20], b"\xff\xd8\xff\xc0\x00"):
        assert png_size(junk) is None and jpeg_size(junk) is None
