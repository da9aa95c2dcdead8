"""A robot-side consumer of the SLAM service: a fixed-rate control loop reading poses.

Run ``python -m clients.robot_example --pub tcp://HOST:5555 --rate 10``: every tick
takes the newest pose with :meth:`SlamClient.latest_pose` (never waits on a backlog),
converts it to a ROS ``geometry_msgs/PoseStamped``-shaped dict and hands it to the
robot's controller (here: logged as one JSON line).

Frames (REP 103 / REP 105)
--------------------------
- Camera optical frame (the service's ``camera``): x right, y down, z forward.
- Body frame (``base_link`` axes, REP 103): x forward, y left, z up. For a camera
  mounted looking forward, body-from-optical is the fixed rotation

  ``R_body_optical = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]``

  (columns: optical x -> body -y, optical y -> body -z, optical z -> body +x).
- The service's ``map`` frame is the first camera's optical frame. We publish in a
  ``map`` frame with REP 103 axes: that optical frame rotated by ``R_body_optical``,
  so the robot starts at the origin with identity orientation, x forward, z up.
  Hence ``T_mapREP_body = C * T_map_cam * C^T`` with ``C = R_body_optical`` (no
  translation between camera and body: add the mounting offset of your robot).

Quaternions are xyzw on both sides (service and ROS): no order conversion here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from clients.client import DEFAULT_PUB, SlamClient

log = logging.getLogger(__name__)

R_BODY_OPTICAL: NDArray[np.float64] = np.array(
    [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
)
"""Body-from-optical rotation: optical (x right, y down, z fwd) -> body (x fwd, y left, z up)."""

PoseStamped = dict[str, Any]


def optical_to_body_pose(
    position_map: Sequence[float], q_xyzw_map_cam: Sequence[float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Camera pose in the optical-axes map -> body pose in the REP 103 map.

    :param position_map: (3,) camera centre in the service's map frame, metres.
    :param q_xyzw_map_cam: (4,) orientation of the camera optical frame in that map, xyzw.
    :return: ``(position (3,), q_xyzw (4,))`` of the body frame in the REP 103 ``map``.
    """
    R_map_cam = Rotation.from_quat(np.asarray(q_xyzw_map_cam, dtype=np.float64)).as_matrix()
    R_rep_body = R_BODY_OPTICAL @ R_map_cam @ R_BODY_OPTICAL.T
    position = R_BODY_OPTICAL @ np.asarray(position_map, dtype=np.float64)
    q_xyzw = Rotation.from_matrix(R_rep_body).as_quat()
    if q_xyzw[3] < 0:  # one of the two equal quaternions: w >= 0
        q_xyzw = -q_xyzw
    return position, q_xyzw


def to_pose_stamped(pose: Any) -> PoseStamped | None:
    """A ``geometry_msgs/PoseStamped``-shaped dict of a service pose message, in ``map``.

    ``pose`` has ``stamp`` ({sec, nanosec}), ``position`` and ``orientation`` (xyzw,
    camera optical frame), as :class:`slam_protocol.PoseMsg`. None when the frame
    was not tracked (position None).
    """
    position = getattr(pose, "position", None)
    orientation = getattr(pose, "orientation", None)
    if position is None or orientation is None:
        return None
    p, q = optical_to_body_pose(position, orientation)
    stamp = pose.stamp
    sec, nanosec = (stamp["sec"], stamp["nanosec"]) if isinstance(stamp, dict) else stamp
    return {
        "header": {"stamp": {"sec": int(sec), "nanosec": int(nanosec)}, "frame_id": "map"},
        "pose": {
            "position": {"x": float(p[0]), "y": float(p[1]), "z": float(p[2])},
            "orientation": {"x": float(q[0]), "y": float(q[1]), "z": float(q[2]),
                            "w": float(q[3])},
        },
    }


class ControlLoop:
    """Calls ``controller(pose_stamped or None)`` at ``rate_hz`` with the newest pose.

    The loop owns the timing: a slow service never stalls it (``latest_pose`` returns
    at once) and a fast one is never queued up (older poses are skipped).
    """

    def __init__(
        self,
        client: SlamClient,
        controller: Callable[[PoseStamped | None], None],
        rate_hz: float = 10.0,
    ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate must be positive, got {rate_hz}")
        self.client, self.controller, self.period_s = client, controller, 1.0 / rate_hz
        self.last_seq: int | None = None

    def step(self) -> PoseStamped | None:
        """One tick: the newest tracked pose as PoseStamped (None when none is known)."""
        pose = self.client.latest_pose()
        stamped = to_pose_stamped(pose) if pose is not None else None
        if pose is not None:
            self.last_seq = int(pose.seq)
        self.controller(stamped)
        return stamped

    def run(self, ticks: int | None = None) -> None:
        """Tick ``ticks`` times (None: until Ctrl-C), on a fixed schedule."""
        next_t = time.monotonic()
        count = 0
        while ticks is None or count < ticks:
            self.step()
            count += 1
            next_t += self.period_s
            time.sleep(max(0.0, next_t - time.monotonic()))


def _log_controller(stamped: PoseStamped | None) -> None:
    if stamped is None:
        log.info("no tracked pose yet")
    else:
        print(json.dumps(stamped), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clients.robot_example [--pub URL] [--rate HZ] [--ticks N]``."""
    parser = argparse.ArgumentParser(prog="robot_example", description=__doc__.split("\n")[0])
    parser.add_argument("--pub", default=DEFAULT_PUB, help=f"PUB endpoint (default {DEFAULT_PUB})")
    parser.add_argument("--rate", type=float, default=10.0, help="control rate, Hz")
    parser.add_argument("--ticks", type=int, help="stop after N ticks (default: Ctrl-C)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with SlamClient(pub=args.pub) as client:
        try:
            ControlLoop(client, _log_controller, args.rate).run(args.ticks)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
