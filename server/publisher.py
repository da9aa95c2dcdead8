"""The PUB socket and what goes out on it: poses, keyframes, map diffs, loops, status
and images.

Publishing never blocks: the socket has a send high-water mark and every send is
non-blocking, so a subscriber that stops reading loses messages (ZeroMQ drops them
for that subscriber alone) and never slows tracking. Map updates are diffs of the
map's point store against what was last published.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from typing import Any

import cv2
import numpy as np
import zmq
from numpy.typing import NDArray
from zmq.utils.monitor import recv_monitor_message

from server import protocol as proto
from slam.geometry.conventions import pose_to_t_q_xyzw
from slam.loop.loop_closing import LoopEvent
from slam.map.map import Map
from slam.map.point_store import PointStore

log = logging.getLogger(__name__)

POINT_MOVE_EPS_M = 0.005  # a point moved at least this far is published again
KF_MOVE_EPS_M = 0.005  # a keyframe moved this far ...
KF_TURN_EPS = 0.005  # ... or turned about this many radians is published with moved: true
NO_COLOR_RGB = (160, 160, 160)
IMAGE_MAX_WIDTH = 640
JPEG_QUALITY = 80


def pose_fields(T_world_cam: NDArray[np.float64] | None
                ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``position`` (3,) and ``orientation`` (4,) xyzw of a world-from-camera pose (4x4)."""
    if T_world_cam is None:
        return None, None
    t, q_xyzw = pose_to_t_q_xyzw(np.asarray(T_world_cam, np.float64))
    return tuple(float(x) for x in t), tuple(float(x) for x in q_xyzw)


class Publisher:
    """A bound PUB socket shared by the service's threads (sends are serialised by a
    lock and never block). ``sent``/``failed`` count messages; ``subscribers`` the
    connected peers (from the socket monitor)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, hwm: int = 100,
                 setup: Any = None) -> None:
        self._sock = ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        if setup is not None:
            setup(self._sock)
        self._monitor = self._sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError:
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self._peers = 0

    def send(self, topic: str, msg: dict[str, Any]) -> bool:
        """Publish ``msg`` under ``topic``; False (and counted) when it could not be queued."""
        body = proto.encode(msg)
        with self._lock:
            if self._sock.closed:
                return False
            try:
                self._sock.send_multipart([topic.encode("ascii"), body], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                self.failed += 1
                log.debug("publish of %s dropped: %s", topic, exc)
                return False
            self.sent += 1
            return True

    def subscribers(self) -> int:
        """Connected subscribers now (drains the monitor; call from one thread only)."""
        while self._monitor is not None and not self._monitor.closed:
            try:
                if not self._monitor.poll(0):
                    break
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                break
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._peers += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._peers = max(0, self._peers - 1)
        return self._peers

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._sock.close(linger=0)


class MapDiffer:
    """What changed in a map since the last :meth:`diff`: points added (with colour),
    moved by more than :data:`POINT_MOVE_EPS_M`, removed; new and moved keyframes;
    new loops. A different map object (reset, load) starts over with ``reset: true``."""

    def __init__(self) -> None:
        self.seq = 0
        self._map_ref: weakref.ref[Map] | None = None
        self._store_ref: weakref.ref[PointStore] | None = None
        # What was published, one row per live point (sorted ids): memory follows the
        # map's size, not the number of points ever created.
        self._ids = np.zeros(0, np.int64)
        self._xyz = np.zeros((0, 3), np.float32)
        self._rgb = np.zeros((0, 3), np.uint8)
        self._kf_poses: dict[int, NDArray[np.float64]] = {}
        self._n_loops = 0

    def _switch(self, slam_map: Map) -> bool:
        """Forget the published state when the map was replaced (another map object) or
        cleared in place (a new monocular map: a new point store); True if so."""
        current = self._map_ref() if self._map_ref is not None else None
        store = slam_map.store
        if current is slam_map:
            if self._store_ref is not None and self._store_ref() is store:
                return False
            self._store_ref = weakref.ref(store)
            self._kf_poses.clear()
            return True
        first = self._map_ref is None
        self._map_ref = weakref.ref(slam_map)
        self._store_ref = weakref.ref(store)
        self._kf_poses.clear()
        self._n_loops = 0
        return not first

    def diff(self, slam_map: Map) -> proto.MapUpdateMsg | None:
        """The map message of the changes, or None when nothing changed."""
        reset = self._switch(slam_map)
        if reset:
            removed = self._ids
            self._ids = np.zeros(0, np.int64)
            self._xyz, self._rgb = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        with slam_map.lock:
            store = slam_map.store
            ids = store.live_ids()
            xyz = store.get("xyz", ids).astype(np.float32)
            is_new = ~np.isin(ids, self._ids, assume_unique=True)
            rgb_new = point_colors(slam_map, ids[is_new])
        if not reset:
            removed = self._ids[~np.isin(self._ids, ids, assume_unique=True)]
        old_rows = np.searchsorted(self._ids, ids[~is_new])
        step = np.abs(xyz[~is_new] - self._xyz[old_rows]).max(axis=1, initial=0.0)
        moved_rows = np.flatnonzero(~is_new)[step > POINT_MOVE_EPS_M]
        published_xyz = xyz.copy()
        published_xyz[~is_new] = self._xyz[old_rows]  # small moves stay unpublished
        published_xyz[moved_rows] = xyz[moved_rows]
        rgb = np.zeros((len(ids), 3), np.uint8)
        rgb[~is_new] = self._rgb[old_rows]
        rgb[is_new] = rgb_new
        self._ids, self._xyz, self._rgb = ids, published_xyz, rgb
        msg = proto.MapUpdateMsg(self.seq, ids[is_new], xyz[is_new], rgb_new, ids[moved_rows],
                                 xyz[moved_rows], removed.astype(np.int64), reset)
        if msg.is_empty():
            return None
        self.seq += 1
        return msg

    def published(self) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.uint8], int]:
        """Points as the map messages so far describe them: ids (N,), xyz (N, 3), rgb
        (N, 3), and the ``seq`` the next map message will carry."""
        return self._ids.copy(), self._xyz.copy(), self._rgb.copy(), self.seq

    def keyframes(self, slam_map: Map) -> list[proto.KeyframeMsg]:
        """Messages for keyframes not published yet and for those moved since."""
        self._switch(slam_map)
        out: list[proto.KeyframeMsg] = []
        with slam_map.lock:
            gone = [k for k in self._kf_poses
                    if (kf := slam_map.keyframes.get(k)) is None or kf.bad]
            for k in gone:  # culled: forgotten, so that memory follows the map's size
                del self._kf_poses[k]
            for kf in slam_map.keyframes.values():
                if kf.bad:
                    continue
                T = kf.T_world_cam
                prev = self._kf_poses.get(kf.id)
                if prev is not None and not _pose_moved(prev, T):
                    continue
                self._kf_poses[kf.id] = T
                pids = kf.point_ids
                n_points = len(slam_map.store.alive_ids(pids[pids >= 0]))
                position, orientation = pose_fields(T)
                assert position is not None and orientation is not None
                stamp = proto.Stamp.from_seconds(kf.timestamp)
                out.append(proto.KeyframeMsg(kf.id, stamp, position, orientation, n_points,
                                             moved=prev is not None))
        return out

    def loops(self, events: list[LoopEvent]) -> list[proto.LoopMsg]:
        """Messages for the loop events not published yet."""
        new = events[self._n_loops:]
        self._n_loops = len(events)
        return [loop_message(e) for e in new]


def loop_message(e: LoopEvent) -> proto.LoopMsg:
    return proto.LoopMsg(e.cur_kf_id, e.loop_kf_id, proto.Stamp.from_seconds(e.stamp),
                     proto.Stamp.from_seconds(e.loop_stamp), float(e.scale), int(e.n_matches))


def _pose_moved(T_prev: NDArray[np.float64], T: NDArray[np.float64]) -> bool:
    return bool(np.linalg.norm(T[:3, 3] - T_prev[:3, 3]) > KF_MOVE_EPS_M
                or np.abs(T[:3, :3] - T_prev[:3, :3]).max() > KF_TURN_EPS)


def point_colors(slam_map: Map, pids: NDArray[np.int64]) -> NDArray[np.uint8]:
    """RGB (N, 3) uint8 of points: the reference keyframe's colour image at the point's
    keypoint, :data:`NO_COLOR_RGB` without one. Call with the map lock held."""
    rgb = np.empty((len(pids), 3), np.uint8)
    rgb[:] = NO_COLOR_RGB
    for row, pid in enumerate(pids.tolist()):
        mp = slam_map.points.get(pid)
        kf = slam_map.keyframes.get(mp.ref_kf_id) if mp is not None else None
        if mp is None or kf is None or kf.frame.color is None:
            continue
        idx = mp.observations.get(kf.id)
        color = kf.frame.color
        if idx is None or color.ndim != 3:
            continue
        u, v = np.round(kf.frame.uv[idx]).astype(int)
        if 0 <= v < color.shape[0] and 0 <= u < color.shape[1]:
            rgb[row] = color[v, u, 2::-1]  # BGR -> RGB
    return rgb


def encode_image(image: NDArray[np.uint8], uv: NDArray[np.float64],
                 max_width: int = IMAGE_MAX_WIDTH) -> tuple[bytes, int, int, NDArray[np.float32]]:
    """JPEG bytes, width, height of ``image`` ((H, W) grey or (H, W, 3) BGR) scaled down
    to at most ``max_width`` pixels wide, and ``uv`` (K, 2) pixels scaled alike."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    uv_out = (np.asarray(uv, np.float64).reshape(-1, 2) * scale).astype(np.float32)
    return buf.tobytes(), image.shape[1], image.shape[0], uv_out
