"""``slam calibrate``: pinhole intrinsics and distortion from chessboard views.

Reads frames from ``webcam:N``, ``images:DIR`` or ``video:FILE``, finds the inner
corners of a chessboard (``cv2.findChessboardCorners`` refined by
``cv2.cornerSubPix``), keeps views that differ from the last kept one, runs
``cv2.calibrateCamera`` and writes an ORB-SLAM ``%YAML:1.0`` settings file
(``Camera.fx`` ... ``Camera.k3``, size, fps) that ``slam run --calib`` reads.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from slam.errors import CalibrationError, ConfigError

if TYPE_CHECKING:
    from slam.io.types import SensorFrame

log = logging.getLogger(__name__)

SCHEMES = ("webcam", "images", "video")
DEFAULT_FPS = 30.0
MIN_VIEWS_ABSOLUTE = 3  # calibrateCamera needs several views for a meaningful solution


@dataclass(frozen=True)
class Board:
    """A chessboard of ``cols`` x ``rows`` inner corners, squares of ``square_m`` metres."""

    cols: int
    rows: int
    square_m: float

    @property
    def pattern_size(self) -> tuple[int, int]:
        """``(cols, rows)`` as OpenCV's ``patternSize`` wants it."""
        return self.cols, self.rows

    def object_points(self) -> NDArray[np.float32]:
        """(cols*rows, 3) corner positions on the board plane z = 0, metres, row by row."""
        xs, ys = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        xyz = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
        return (xyz * self.square_m).astype(np.float32)


@dataclass(frozen=True)
class CalibrationResult:
    """Output of :func:`calibrate`: ``K`` (3, 3), ``dist`` (5,) = k1 k2 p1 p2 k3,
    ``rms_px`` the reprojection RMS over all corners, ``image_size`` (width, height)."""

    K: NDArray[np.float64]
    dist: NDArray[np.float64]
    rms_px: float
    image_size: tuple[int, int]
    n_views: int


def parse_board(text: str, square_m: float) -> Board:
    """``"9x6"`` -> ``Board(9, 6, square_m)``; :class:`ConfigError` for anything else."""
    cols, sep, rows = text.lower().partition("x")
    try:
        board = Board(int(cols), int(rows), float(square_m))
    except ValueError:
        board = None
    if not sep or board is None or board.cols < 3 or board.rows < 3:
        raise ConfigError(f"--board wants inner corners as COLSxROWS (>= 3 each), got {text!r}")
    if board.cols == board.rows:
        raise ConfigError("--board must not be square (COLS != ROWS) so its orientation is known")
    if not board.square_m > 0:
        raise ConfigError(f"--square must be a positive size in metres, got {square_m}")
    return board


def detect_corners(grey: NDArray[np.uint8], board: Board) -> NDArray[np.float32] | None:
    """(cols*rows, 2) sub-pixel corner positions in ``grey`` (H, W) uint8, or None."""
    import cv2

    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(grey, board.pattern_size, None, flags)
    if not found or corners is None:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    refined = cv2.cornerSubPix(grey, corners, (5, 5), (-1, -1), criteria)
    return np.asarray(refined, dtype=np.float32).reshape(-1, 2)


def collect_views(
    frames: Iterable[SensorFrame],
    board: Board,
    max_views: int,
    min_shift_px: float = 10.0,
) -> tuple[list[NDArray[np.float32]], tuple[int, int] | None]:
    """Corner sets of up to ``max_views`` frames, each moved at least ``min_shift_px``
    (mean corner displacement) from the previous kept view; and the image size.

    Stops on Ctrl-C and keeps what was collected (a webcam has no end).
    """
    views: list[NDArray[np.float32]] = []
    size: tuple[int, int] | None = None
    frames_seen = 0
    try:
        for frame in frames:
            frames_seen += 1
            grey = frame.image
            if size is None:
                size = (grey.shape[1], grey.shape[0])
            elif (grey.shape[1], grey.shape[0]) != size:
                raise CalibrationError(f"frame {frame.index} has another size than the first")
            uv = detect_corners(grey, board)
            if uv is None:
                continue
            if views and float(np.linalg.norm(uv - views[-1], axis=1).mean()) < min_shift_px:
                continue
            views.append(uv)
            log.info("view %d kept (frame %d)", len(views), frame.index)
            if len(views) >= max_views:
                break
    except KeyboardInterrupt:
        log.warning("interrupted: calibrating with the %d views collected", len(views))
    log.info("%d chessboard views in %d frames", len(views), frames_seen)
    return views, size


def calibrate(
    views_uv: Sequence[NDArray[np.float32]], board: Board, image_size: tuple[int, int]
) -> CalibrationResult:
    """``cv2.calibrateCamera`` on corner sets (each (cols*rows, 2) pixels) of ``board``."""
    import cv2

    if len(views_uv) < MIN_VIEWS_ABSOLUTE:
        raise CalibrationError(f"need at least {MIN_VIEWS_ABSOLUTE} views, got {len(views_uv)}")
    xyz = board.object_points()
    object_points = [xyz.reshape(-1, 1, 3) for _ in views_uv]
    image_points = [np.asarray(uv, np.float32).reshape(-1, 1, 2) for uv in views_uv]
    try:
        rms, K, dist, _, _ = cv2.calibrateCamera(
            object_points, image_points, image_size, None, None
        )
    except cv2.error as exc:
        raise CalibrationError(f"OpenCV calibration failed: {exc}") from exc
    dist5 = np.zeros(5)
    flat = np.asarray(dist, dtype=np.float64).ravel()[:5]
    dist5[: flat.size] = flat
    K64 = np.asarray(K, np.float64)
    if not (np.all(np.isfinite(K64)) and K64[0, 0] > 0 and K64[1, 1] > 0):
        raise CalibrationError("calibration did not converge (non-finite or negative focal)")
    return CalibrationResult(K64, dist5, float(rms), image_size, len(views_uv))


def settings_text(result: CalibrationResult, fps: float) -> str:
    """ORB-SLAM ``%YAML:1.0`` settings holding ``result`` (read by ``slam.io.calibration``)."""
    K, d = result.K, result.dist
    width, height = result.image_size
    lines = [
        "%YAML:1.0",
        f"# written by slam calibrate from {result.n_views} chessboard views, "
        f"reprojection RMS {result.rms_px:.3f} px",
        f"Camera.fx: {K[0, 0]:.6f}",
        f"Camera.fy: {K[1, 1]:.6f}",
        f"Camera.cx: {K[0, 2]:.6f}",
        f"Camera.cy: {K[1, 2]:.6f}",
        *(f"Camera.{name}: {value:.9f}" for name, value in zip(("k1", "k2", "p1", "p2", "k3"), d)),
        f"Camera.width: {int(width)}",
        f"Camera.height: {int(height)}",
        f"Camera.fps: {float(fps):.3f}",
        "Camera.RGB: 1",
    ]
    return "\n".join(lines) + "\n"


def write_settings(path: Path, result: CalibrationResult, fps: float) -> None:
    """Write :func:`settings_text` to ``path`` (parent folders created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings_text(result, fps))
    except OSError as exc:
        raise CalibrationError(f"cannot write {path}: {exc}") from exc


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``calibrate`` subparser to ``commands`` (an argparse subparsers action)."""
    p = commands.add_parser(
        "calibrate",
        parents=list(parents),
        help="calibrate a camera from chessboard views",
        description="Find a chessboard in the frames of a webcam, image folder or video, "
        "calibrate the camera (OpenCV) and write an ORB-SLAM settings YAML for --calib. "
        "Show the board at many positions and tilts, filling the corners of the image.",
    )
    p.add_argument("--source", required=True, metavar="URI",
                   help="webcam:N, images:DIR or video:FILE")
    p.add_argument("--board", default="9x6", metavar="COLSxROWS",
                   help="inner corners of the chessboard (default 9x6)")
    p.add_argument("--square", type=float, default=0.025, metavar="M",
                   help="side of one square in metres (default 0.025)")
    p.add_argument("--out", required=True, type=Path, metavar="YAML", help="settings file")
    p.add_argument("--min-views", type=int, default=15, metavar="N",
                   help="fail with fewer chessboard views than this (default 15)")
    p.add_argument("--max-views", type=int, default=40, metavar="N",
                   help="stop collecting after N views (default 40; a webcam stops here)")
    p.add_argument("--fps", type=float, help="frame rate to write (default: the source's)")
    p.set_defaults(func=execute)


def _frames(source: Any) -> Iterator[SensorFrame]:
    try:
        yield from source
    finally:
        source.close()


def execute(args: argparse.Namespace) -> int:
    """Run ``slam calibrate``; see :func:`register` for the options."""
    from slam.io.sources import open_source

    board = parse_board(args.board, args.square)
    if args.min_views < MIN_VIEWS_ABSOLUTE or args.max_views < args.min_views:
        raise ConfigError(
            f"need {MIN_VIEWS_ABSOLUTE} <= --min-views <= --max-views, "
            f"got {args.min_views} and {args.max_views}"
        )
    scheme = args.source.partition(":")[0]
    if scheme not in SCHEMES:
        raise ConfigError(f"calibrate reads {', '.join(s + ':' for s in SCHEMES)} sources")
    quiet = logging.getLogger("slam.io.sources.video")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "no calibration given": that is what we are making
    try:
        source = open_source(args.source, "mono", None, args.fps)
    finally:
        quiet.setLevel(level)
    fps = float(getattr(source, "fps", 0.0) or args.fps or DEFAULT_FPS)
    views, size = collect_views(_frames(source), board, args.max_views)
    if len(views) < args.min_views or size is None:
        raise CalibrationError(
            f"found the {board.cols}x{board.rows} chessboard in {len(views)} distinct views, "
            f"need {args.min_views} (--min-views)"
        )
    result = calibrate(views, board, size)
    write_settings(args.out, result, fps)
    K = result.K
    print(
        f"fx {K[0, 0]:.2f} fy {K[1, 1]:.2f} cx {K[0, 2]:.2f} cy {K[1, 2]:.2f} | "
        f"dist {' '.join(f'{v:.4f}' for v in result.dist)}"
    )
    print(f"{result.n_views} views, reprojection RMS {result.rms_px:.3f} px -> {args.out}")
    return 0
