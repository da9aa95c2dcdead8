"""The input of the learned place embedding: the whole image, grey and small.

The runtime recognizer (:mod:`slam.place.learned`) and the training companion
(:mod:`slam.learn.datasets`, :mod:`slam.learn.export`) both shrink images here, so the
network sees at run time what it was trained on. numpy and OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

EMBED_SIZE = (160, 120)  # width, height in pixels of the place-embedding input


def embed_image(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W) grey or (H, W, 3) BGR image -> (h, w) grey at :data:`EMBED_SIZE` (area)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return np.asarray(cv2.resize(grey, EMBED_SIZE, interpolation=cv2.INTER_AREA), np.uint8)
