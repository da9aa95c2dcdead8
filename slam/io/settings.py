"""Read OpenCV ``FileStorage`` YAML (the ``%YAML:1.0`` settings files of ORB-SLAM).

PyYAML rejects the ``%YAML:1.0`` directive and OpenCV's ``!!opencv-matrix`` tags,
so these files are read with :class:`cv2.FileStorage`. The result is flat:
``{"Camera.fx": 517.3, "LEFT.K": array(3x3), ...}``; nested maps become dotted
keys (``{"a": {"b": 1}}`` -> ``"a.b"``), numeric sequences become 1-D arrays and
``!!opencv-matrix`` nodes become 2-D arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slam.errors import CalibrationError

log = logging.getLogger(__name__)

SettingValue = float | int | str | np.ndarray


def read_opencv_yaml(path: str | Path) -> dict[str, SettingValue]:
    """All values of an OpenCV YAML/XML file, keyed by flat dotted names.

    Raises :class:`CalibrationError` naming the file when it is missing, not a
    file, unreadable or not parseable by OpenCV.
    """
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"settings file not found: {p}")
    if not p.is_file():
        raise CalibrationError(f"settings path is not a file: {p}")
    try:
        p.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"cannot read settings file {p}: {exc}") from exc
    try:
        fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as exc:
        detail = str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__]
        raise CalibrationError(f"malformed settings file {p}: {detail[0]}") from exc
    try:
        if not fs.isOpened():
            raise CalibrationError(f"OpenCV cannot open settings file {p}")
        root = fs.root()
        if not root.isMap():
            raise CalibrationError(f"settings file {p} does not hold a mapping of keys")
        out: dict[str, SettingValue] = {}
        top_keys = root.keys()
        for key in top_keys:
            _collect(fs.getNode(key), key, out, p)
        return out
    finally:
        fs.release()


def _collect(node: Any, key: str, out: dict[str, SettingValue], path: Path) -> None:
    """Store ``node`` (a ``cv2.FileNode``) under ``key``, recursing into plain maps."""
    if node.isInt():
        out[key] = int(node.real())
    elif node.isReal():
        out[key] = float(node.real())
    elif node.isString():
        out[key] = node.string()
    elif node.isMap():
        keys = node.keys()
        if {"rows", "cols", "data"} <= set(keys):
            out[key] = _matrix(node, key, path)
        else:
            for sub in keys:
                _collect(node.getNode(sub), f"{key}.{sub}", out, path)
    elif node.isSeq():
        out[key] = _sequence(node, key, path)
    else:
        log.debug("%s: skipping empty key %s", path, key)


def _matrix(node: Any, key: str, path: Path) -> np.ndarray:
    try:
        mat = node.mat()
    except (cv2.error, SystemError) as exc:
        raise CalibrationError(f"{path}: key {key} is not a valid opencv-matrix") from exc
    if mat is None:
        raise CalibrationError(f"{path}: key {key} is not a valid opencv-matrix")
    return np.asarray(mat, dtype=np.float64)


def _sequence(node: Any, key: str, path: Path) -> np.ndarray:
    values: list[float] = []
    for i in range(node.size()):
        item = node.at(i)
        if not (item.isInt() or item.isReal()):
            raise CalibrationError(f"{path}: key {key} must be a sequence of numbers")
        values.append(float(item.real()))
    return np.asarray(values, dtype=np.float64)
