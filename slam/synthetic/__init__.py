"""Synthetic textured room, ray-casting renderer and trajectories with exact ground truth.

A companion of the runtime, for tests and benchmarks: it imports the runtime, the runtime
never imports it (``synthetic:`` URIs reach it through the ``slam.sources`` entry point).
"""

from slam.synthetic.render import render, render_stereo
from slam.synthetic.scene import Box, Quad, Scene, build_room_scene, room_scene
from slam.synthetic.source import (
    SyntheticSource,
    make_synthetic_source,
    open_synthetic,
    parse_synthetic_uri,
)
from slam.synthetic.trajectories import (
    camera_rotation,
    forward_trajectory,
    loop_trajectory,
    sideways_trajectory,
)

__all__ = [
    "Box",
    "Quad",
    "Scene",
    "SyntheticSource",
    "build_room_scene",
    "camera_rotation",
    "forward_trajectory",
    "loop_trajectory",
    "make_synthetic_source",
    "open_synthetic",
    "parse_synthetic_uri",
    "render",
    "render_stereo",
    "room_scene",
    "sideways_trajectory",
]
