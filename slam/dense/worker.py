"""``slam run --dense``: fuse keyframes into a TSDF mesh while SLAM runs.

Open3D holds Python's GIL while it integrates (and for seconds when its hash map
grows), so the volume lives in a child process of its own, started with ``spawn``
and at low priority (``nice``): tracking never waits for it, not even for the
GIL. In the SLAM process, :meth:`DenseWorker.submit` (called by local mapping when
it has finished a keyframe) and :meth:`DenseWorker.on_corrected` (after a loop
correction or a global BA) only note an id or a flag under a condition variable;
a feeder thread reads the keyframe's images and pose from the map and sends them
down a pipe (bounded: the feeder waits when the child is behind, nobody else does).

The child caches each keyframe's prepared depth and colour. A volume cannot take
a view back out, so when poses change (a loop correction, or keyframes moved by
more than the pose tolerance) it rebuilds the volume from its cache with the new
poses. :meth:`DenseWorker.finish` sends the final poses, lets the child rebuild if
they moved, extract, clean and write the mesh and its picture.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from slam.camera.pinhole import Calibration
from slam.dense import DenseError, NoDepthError, Open3DMissingError
from slam.dense.tsdf import KeyframePixels, TsdfParams
from slam.errors import SensorError

if TYPE_CHECKING:  # the child process need not import the map (nor Numba)
    from slam.map.map import Map

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
_START_TIMEOUT_S = 120.0
_ANY_MOVE_M, _ANY_MOVE_DEG = 1e-4, 0.01  # after a loop correction: any real change
_NICE = 10


class KeyframeSink(Protocol):
    """What SLAM tells a dense mapper (a :class:`DenseWorker`, or :class:`NullDense`)."""

    def submit(self, kf_id: int) -> None: ...

    def on_corrected(self) -> None: ...

    def finish(self, timeout: float = 600.0) -> DenseResult | None: ...

    def close(self) -> None: ...


class NullDense:
    """No dense mapping: every call does nothing."""

    def submit(self, kf_id: int) -> None:
        pass

    def on_corrected(self) -> None:
        pass

    def finish(self, timeout: float = 600.0) -> DenseResult | None:
        return None

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class DenseOptions:
    """``mesh_path``: where the final mesh goes (its picture beside it, ``.png``);
    ``params``: the TSDF. The child rebuilds the volume when a keyframe's pose moved
    since it was fused by more than ``pose_tol_m`` / ``pose_tol_deg`` while running
    (checked with each new keyframe), by anything after a loop correction or global
    BA, and by more than ``final_tol_m`` / ``final_tol_deg`` at the end."""

    mesh_path: Path
    params: TsdfParams = field(default_factory=TsdfParams)
    picture: bool = True
    pose_tol_m: float = 0.05
    pose_tol_deg: float = 5.0
    final_tol_m: float = 0.005
    final_tol_deg: float = 0.5


@dataclass(frozen=True)
class DenseResult:
    """The final mesh and how the worker got there (``rebuilds``: re-integrations)."""

    mesh_path: Path
    png_path: Path | None
    renderer: str | None
    n_keyframes: int
    n_vertices: int
    n_triangles: int
    rebuilds: int
    integrate_ms_median: float
    finish_s: float


class DenseWorker:
    """Feeds keyframes of ``slam_map`` to a TSDF child process (see the module doc)."""

    def __init__(self, slam_map: Map, calibration: Calibration, sensor: str,
                 options: DenseOptions) -> None:
        if sensor not in ("rgbd", "stereo"):
            raise SensorError(f"--dense needs depth: an rgbd or stereo sensor, not {sensor}")
        self.map = slam_map
        self.options = options
        self._cv = threading.Condition()
        self._pending: list[int] = []
        self._correct = False
        self._stopping = False
        self._busy = False
        self._sent: set[int] = set()
        self._error: BaseException | None = None
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, name="slam-dense", daemon=True,
                                 args=(child_conn, calibration, options))
        self._proc.start()
        child_conn.close()
        self._expect_ready()
        self._feeder = threading.Thread(target=self._feed, name="dense-feeder", daemon=True)
        self._feeder.start()
        with slam_map.lock:  # a loaded map's keyframes, culled ones too (as slam export)
            loaded = list(slam_map.keyframes)
        for kf_id in loaded:
            self.submit(kf_id)

    def _expect_ready(self) -> None:
        """Wait for the child's 'ready' (Open3D imported, volume allocated)."""
        kind, payload = "error", "no answer"
        with contextlib.suppress(EOFError, OSError):
            if self._conn.poll(_START_TIMEOUT_S):
                kind, payload = self._conn.recv()
        if kind == "ready":
            return
        self._conn.close()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
        if kind == "no-open3d":
            raise Open3DMissingError(str(payload))
        raise DenseError(f"the dense mapping process failed to start: {payload}")

    # --- called from SLAM threads: never block --------------------------------------------
    def submit(self, kf_id: int) -> None:
        """Fuse keyframe ``kf_id`` soon (local mapping has finished it)."""
        with self._cv:
            self._pending.append(kf_id)
            self._cv.notify()

    def on_corrected(self) -> None:
        """Poses changed (loop correction, global BA): re-integrate with the new ones."""
        with self._cv:
            self._correct = True
            self._cv.notify()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every keyframe submitted so far has been handed to the child (with
        the pose it had then); False on timeout."""
        with self._cv:
            return self._cv.wait_for(
                lambda: not (self._pending or self._correct or self._busy)
                or self._error is not None, timeout)

    # --- feeder thread ----------------------------------------------------------------------
    def _feed(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._pending or self._correct or self._stopping):
                        self._cv.wait()
                    ids, self._pending = self._pending, []
                    correct, self._correct = self._correct, False
                    stopping = self._stopping
                    self._busy = True
                for kf_id in ids:
                    self._send_keyframe(kf_id)
                if correct:
                    self._conn.send(("poses", self._poses(), _ANY_MOVE_M, _ANY_MOVE_DEG))
                elif ids:
                    self._conn.send(("poses", self._poses(), self.options.pose_tol_m,
                                     self.options.pose_tol_deg))
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                if stopping:
                    return
        except (OSError, EOFError, ValueError) as exc:  # the child died
            log.error("dense mapping stopped: %s", exc)
            self._error = exc
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _send_keyframe(self, kf_id: int) -> None:
        with self.map.lock:
            kf = self.map.keyframes.get(kf_id)
            if kf is None or kf_id in self._sent:
                return
            pixels = KeyframePixels.of(kf)
            T_cam_world = self.map.keyframe_pose(kf_id)
        if not pixels.has_depth:
            return
        self._sent.add(kf_id)
        self._conn.send(("add", pixels, T_cam_world))

    def _poses(self) -> dict[int, Array]:
        with self.map.lock:
            return {k: self.map.keyframe_pose(k) for k in self._sent if k in self.map.keyframes}

    # --- end ----------------------------------------------------------------------------------
    def finish(self, timeout: float = 600.0) -> DenseResult | None:
        """Fuse what is pending with the final poses, write the mesh and its picture, stop
        the child. Returns None (logged) when the child failed."""
        t0 = time.perf_counter()
        self._stop_feeder(timeout)
        if self._error is not None:
            self.close()
            return None
        try:
            self._conn.send(("poses", self._poses(), self.options.final_tol_m,
                             self.options.final_tol_deg))
            self._conn.send(("finish", self.options.mesh_path, self.options.picture))
            if not self._conn.poll(timeout):
                log.error("dense mapping did not finish in %.0f s: no mesh", timeout)
                self.close()
                return None
            kind, payload = self._conn.recv()
        except (OSError, EOFError) as exc:
            log.error("dense mapping failed: %s", exc)
            self.close()
            return None
        self.close()
        if kind != "done":
            log.error("dense mapping failed: %s", payload)
            return None
        return DenseResult(**payload, finish_s=time.perf_counter() - t0)

    def _stop_feeder(self, timeout: float) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._feeder.join(timeout)

    def close(self) -> None:
        """Stop the child without a mesh (idempotent)."""
        if self._feeder.is_alive():
            self._stop_feeder(10.0)
        if self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("stop",))
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._conn.close()


def start_dense(slam_map: Map, calibration: Calibration, sensor: str,
                options: DenseOptions | None) -> KeyframeSink:
    """A :class:`DenseWorker` for ``options``, or a :class:`NullDense` without."""
    if options is None:
        return NullDense()
    return DenseWorker(slam_map, calibration, sensor, options)


# --- the child process ------------------------------------------------------------------------
def _child_main(conn: Connection, calibration: Calibration, options: DenseOptions) -> None:
    """Entry point of the dense process: prepare and fuse views, rebuild, write the mesh."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent decides
    os.dup2(2, 1)  # Open3D and Filament print on stdout: keep the run's report clean
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    try:
        fuser = _ChildFuser(calibration, options)
    except Open3DMissingError as exc:
        conn.send(("no-open3d", str(exc)))
        return
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg[0] == "add":
                fuser.add(msg[1], msg[2])
            elif msg[0] == "poses":
                fuser.update_poses(msg[1], msg[2], msg[3])
            elif msg[0] == "finish":
                conn.send(("done", fuser.finish(msg[1], msg[2])))
                return
            else:
                return
        except Exception as exc:
            log.exception("dense mapping failed")
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return


class _ChildFuser:
    """The volume and the cache of prepared views, inside the child."""

    def __init__(self, calibration: Calibration, options: DenseOptions) -> None:
        from slam.dense.tsdf import TsdfVolume

        self.calibration = calibration
        self.options = options
        self.volume = TsdfVolume(calibration.camera, options.params)
        self.views: dict[int, tuple[NDArray[np.float32], NDArray[np.uint8]]] = {}
        self.fused_pose: dict[int, Array] = {}
        self.pose: dict[int, Array] = {}
        self.integrate_ms: list[float] = []
        self.rebuilds = 0

    def add(self, pixels: KeyframePixels, T_cam_world: Array) -> None:
        depth, colour = self.volume.prepare(pixels.depth(self.calibration.stereo_bf),
                                            pixels.rgb())
        self.views[pixels.kf_id] = (depth, colour)
        self.pose[pixels.kf_id] = T_cam_world
        self._integrate(pixels.kf_id)

    def _integrate(self, kf_id: int) -> None:
        t0 = time.perf_counter()
        depth, colour = self.views[kf_id]
        self.volume.integrate(depth, colour, self.pose[kf_id])
        self.fused_pose[kf_id] = self.pose[kf_id]
        self.integrate_ms.append((time.perf_counter() - t0) * 1e3)

    def update_poses(self, poses: dict[int, Array], tol_m: float, tol_deg: float) -> None:
        """New poses; rebuild the volume when one moved by more than the tolerance
        since it was fused."""
        self.pose.update({k: T for k, T in poses.items() if k in self.views})
        tol_rad = np.radians(tol_deg)
        moved = (_pose_change(self.fused_pose[k], self.pose[k]) for k in self.fused_pose)
        if any(dt > tol_m or dr > tol_rad for dt, dr in moved):
            self.rebuild()

    def rebuild(self) -> None:
        t0 = time.perf_counter()
        self.volume.reset()
        for kf_id in self.views:
            self._integrate(kf_id)
        self.rebuilds += 1
        log.info("re-integrated %d keyframes in %.1f s", len(self.views),
                 time.perf_counter() - t0)

    def finish(self, mesh_path: Path, picture: bool) -> dict[str, Any]:
        from slam.dense.export import clean_mesh, write_mesh_ply

        mesh = clean_mesh(self.volume.mesh())
        if len(mesh.triangles) == 0:
            raise NoDepthError(f"no mesh: {len(self.views)} keyframes fused, no surface seen "
                               "often enough")
        write_mesh_ply(mesh_path, mesh)
        png, renderer = None, None
        if picture:
            from slam.dense.render import render_mesh_png
            from slam.geometry.lie import se3_inv

            png = Path(mesh_path).with_suffix(".png")
            cams = np.array([se3_inv(T) for T in self.pose.values()])
            renderer = render_mesh_png(mesh, png, cams, mesh_file=mesh_path)
        return {"mesh_path": Path(mesh_path), "png_path": png, "renderer": renderer,
                "n_keyframes": len(self.views), "n_vertices": len(mesh.vertices),
                "n_triangles": len(mesh.triangles), "rebuilds": self.rebuilds,
                "integrate_ms_median": float(np.median(self.integrate_ms))
                if self.integrate_ms else 0.0}


def _pose_change(T_a: Array, T_b: Array) -> tuple[float, float]:
    """Translation (metres, of the camera centre) and rotation (radians) between two
    ``T_cam_world`` poses."""
    c_a = -T_a[:3, :3].T @ T_a[:3, 3]
    c_b = -T_b[:3, :3].T @ T_b[:3, 3]
    R = T_a[:3, :3] @ T_b[:3, :3].T
    angle = float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    return float(np.linalg.norm(c_a - c_b)), angle
