"""Image sizes read from PNG and JPEG headers, before anything is decoded.

A decoder allocates what the header declares: reading the declared width and
height first lets a caller refuse a forged header (a few bytes declaring a
gigapixel image) instead of letting ``cv2.imdecode`` allocate it. Used by the
service's frame ingestion and by map files (keyframe images).
"""

from __future__ import annotations

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}


def png_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) in pixels of a PNG from its IHDR chunk; None when not a PNG."""
    head = bytes(data[:24])
    if len(head) < 24 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) in pixels of a JPEG from its first start-of-frame segment; None
    when not a JPEG or no start-of-frame segment is found."""
    if len(data) < 4 or bytes(data[:2]) != JPEG_SOI:
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            return (int.from_bytes(bytes(data[i + 7:i + 9]), "big"),
                    int.from_bytes(bytes(data[i + 5:i + 7]), "big"))
        i += 2 + int.from_bytes(bytes(data[i + 2:i + 4]), "big")
    return None
