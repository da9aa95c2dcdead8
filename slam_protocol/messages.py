"""The messages of schema v1, each declared once: a dataclass whose fields carry their
wire type (:mod:`slam_protocol.codec`). ``docs/protocol.md`` shows every one on the wire.

Published (PUB, topic in the first frame): :class:`PoseMsg`, :class:`KeyframeMsg`,
:class:`MapUpdateMsg`, :class:`LoopMsg`, :class:`StatusMsg`, :class:`ImageMsg`.
Commands (ROUTER): :class:`Command` and its :class:`Reply`. Ingestion (ROUTER):
:class:`IngestFrame` and its :class:`IngestReply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray

from slam_protocol import names
from slam_protocol.codec import (
    Array,
    Bin,
    Bool,
    Counts,
    Int,
    Message,
    Nested,
    Num,
    Rest,
    Shape,
    Str,
    Time,
    Vec,
    read_field,
)
from slam_protocol.wire import ProtocolError, Stamp

Vector = tuple[float, ...]
"""A position [x, y, z] (metres) or a quaternion [x, y, z, w]."""


# --- published messages ---------------------------------------------------------------
@dataclass
class PoseMsg(Message):
    """Topic ``pose``: one per processed frame; ``position``/``orientation`` (xyzw) are
    ``T_world_cam`` (camera optical frame in the map frame), None when untracked.
    ``latency_ms``: frame arrival to pose; ``queued_ms``: of it, waiting in the queue."""

    seq: Annotated[int, Int()]
    stamp: Annotated[Stamp, Time()]
    position: Annotated[Vector | None, Vec(3, null=True)]
    orientation: Annotated[Vector | None, Vec(4, null=True)]
    state: Annotated[str, Str(choices=names.STATES)]
    latency_ms: Annotated[float, Num()]
    keyframe: Annotated[bool, Bool()] = False
    source_index: Annotated[int, Int()] = 0
    sender: Annotated[str | None, Str(null=True)] = None
    frame_id: Annotated[str, Str()] = "map"
    child_frame_id: Annotated[str, Str()] = "camera"
    queued_ms: Annotated[float, Num()] = 0.0


@dataclass
class KeyframeMsg(Message):
    """Topic ``keyframe``: a new keyframe, or one moved by a loop closure or BA (``moved``)."""

    id: Annotated[int, Int()]
    stamp: Annotated[Stamp, Time()]
    position: Annotated[Vector, Vec(3)]
    orientation: Annotated[Vector, Vec(4)]
    n_points: Annotated[int, Int()]
    moved: Annotated[bool, Bool()] = False


Ids = NDArray[np.int64]
"""Point ids (N,)."""
Xyz = NDArray[np.float32]
"""Point positions (N, 3), metres in the map frame."""
Rgb = NDArray[np.uint8]
"""Point colours (N, 3)."""


def _no_ids() -> Ids:
    return np.zeros(0, np.int64)


def _no_xyz() -> Xyz:
    return np.zeros((0, 3), np.float32)


def _no_rgb() -> Rgb:
    return np.zeros((0, 3), np.uint8)


def _ids(key: str) -> Array:
    return Array(np.int64, key=key, required=True)


def _rows(dtype: type[np.generic], key: str) -> Array:
    return Array(dtype, (3,), key=key, required=True)


@dataclass(eq=False)
class MapUpdateMsg(Message):
    """Topic ``map``: points added (ids (N,) int64, xyz (N,3) float32 metres, rgb (N,3)
    uint8), moved (ids, xyz) and removed (ids) since the previous map message.
    ``reset``: forget every point and keyframe first (the map was replaced)."""

    seq: Annotated[int, Int()]
    added_ids: Annotated[Ids, _ids("added.ids")] = field(default_factory=_no_ids)
    added_xyz: Annotated[Xyz, _rows(np.float32, "added.xyz")] = field(default_factory=_no_xyz)
    added_rgb: Annotated[Rgb, _rows(np.uint8, "added.rgb")] = field(default_factory=_no_rgb)
    moved_ids: Annotated[Ids, _ids("moved.ids")] = field(default_factory=_no_ids)
    moved_xyz: Annotated[Xyz, _rows(np.float32, "moved.xyz")] = field(default_factory=_no_xyz)
    removed_ids: Annotated[Ids, _ids("removed.ids")] = field(default_factory=_no_ids)
    reset: Annotated[bool, Bool()] = False

    def is_empty(self) -> bool:
        """True when the message changes nothing (no point added, moved or removed, no reset)."""
        return not (len(self.added_ids) or len(self.moved_ids) or len(self.removed_ids)
                    or self.reset)

    def validate(self) -> None:
        if not len(self.added_ids) == len(self.added_xyz) == len(self.added_rgb):
            raise ProtocolError("added: ids, xyz and rgb differ in length")
        if len(self.moved_ids) != len(self.moved_xyz):
            raise ProtocolError("moved: ids and xyz differ in length")


@dataclass
class LoopMsg(Message):
    """Topic ``loop``: a loop closed between keyframes ``cur_kf`` and ``loop_kf``;
    ``scale`` of the Sim(3) correction (1 for stereo and RGB-D)."""

    cur_kf: Annotated[int, Int()]
    loop_kf: Annotated[int, Int()]
    stamp: Annotated[Stamp, Time()]
    loop_stamp: Annotated[Stamp, Time()]
    scale: Annotated[float, Num()]
    n_matches: Annotated[int, Int()]


@dataclass
class StatusMsg(Message):
    """Topic ``status`` (1 Hz). ``queue_depth`` = {frames, mapping, loop}; ``drops``
    frames dropped by the bounded frame queue; ``errors`` frames skipped (unreadable,
    refused at ingestion or failed in tracking), ``refused`` those refused at ingestion;
    ``rss_mb`` the server's resident memory (MB); ``poses_dropped`` poses that left the
    bounded trajectory; ``stamps_skipped`` frames skipped because their timestamp did not
    increase; ``subscribers`` left out when unknown."""

    fps: Annotated[float, Num()]
    frames: Annotated[int, Int()]
    tracked_frames: Annotated[int, Int()]
    state: Annotated[str, Str(choices=names.STATES)]
    keyframes: Annotated[int, Int()]
    map_points: Annotated[int, Int()]
    loops_closed: Annotated[int, Int()]
    relocalisations: Annotated[int, Int()]
    maps: Annotated[int, Int()]
    queue_depth: Annotated[dict[str, int], Counts(always=("frames", "mapping"))]
    drops: Annotated[int, Int()]
    paused: Annotated[bool, Bool()]
    finished: Annotated[bool, Bool()]
    subscribers: Annotated[int | None, Int(null=True, omit=None)] = None
    errors: Annotated[int, Int()] = 0
    refused: Annotated[int, Int()] = 0
    rss_mb: Annotated[float | None, Num(null=True)] = None
    poses_dropped: Annotated[int, Int()] = 0
    stamps_skipped: Annotated[int, Int()] = 0


@dataclass(eq=False)
class ImageMsg(Message):
    """Topic ``image`` (<= 5 Hz): JPEG of the frame of pose ``seq`` (<= 640 px wide) and
    ``uv`` (K, 2) float32 pixels of the tracked keypoints in the JPEG."""

    seq: Annotated[int, Int()]
    stamp: Annotated[Stamp, Time()]
    jpeg: Annotated[bytes, Bin()]
    width: Annotated[int, Int()]
    height: Annotated[int, Int()]
    uv: Annotated[NDArray[np.float32], Array(np.float32, (2,))]


TOPIC_TYPES: dict[str, type[Message]] = {
    names.TOPIC_POSE: PoseMsg,
    names.TOPIC_KEYFRAME: KeyframeMsg,
    names.TOPIC_MAP: MapUpdateMsg,
    names.TOPIC_LOOP: LoopMsg,
    names.TOPIC_STATUS: StatusMsg,
    names.TOPIC_IMAGE: ImageMsg,
}
"""Topic name -> message class of what is published under it."""


# --- commands ---------------------------------------------------------------------------
@dataclass
class Command(Message):
    """A request on the command socket: ``cmd`` and its arguments (``name``, a map
    name, for ``save_map``/``load_map``; other fields are ignored when decoding)."""

    cmd: Annotated[str, Str()]
    args: Annotated[dict[str, Any], Rest()] = field(default_factory=dict)

    def validate(self) -> None:
        if self.cmd not in names.COMMANDS:
            raise ProtocolError(f"unknown command {self.cmd[:64]!r}; expected one of "
                                f"{', '.join(names.COMMANDS)}")
        given, self.args = self.args, {}
        if self.cmd not in names.MAP_COMMANDS:
            return
        if "path" in given:
            raise ProtocolError(f"{self.cmd} takes 'name' (a map in the server's map "
                                "directory), not 'path'")
        name = read_field(given, "name", Str())
        if not names.MAP_NAME_RE.fullmatch(name):
            raise ProtocolError("field 'name' must be a map name: 1-64 letters, digits, "
                                "'_' or '-' (starting with a letter or digit), optionally "
                                "followed by '.map'")
        self.args["name"] = name


@dataclass
class Reply(Message):
    """A command reply: ``ok``, ``error`` when not ok (``"failed"`` when none is given;
    always None when ok) and the command's ``fields``."""

    ok: Annotated[bool, Bool()]
    error: Annotated[str | None, Str(null=True, omit=None)] = None
    fields: Annotated[dict[str, Any], Rest()] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.error = None if self.ok else (self.error or "failed")


# --- ingestion --------------------------------------------------------------------------
@dataclass(eq=False)
class IngestFrame(Message):
    """A frame pushed by a client. ``image``: JPEG/PNG bytes, or raw uint8 of ``shape``
    ([h, w] grey or [h, w, 3] BGR; required with ``raw``, ignored otherwise).
    ``depth``: 16-bit PNG (``depth_scale`` units per metre, default 5000) or, with
    ``raw``, float32 metres (h, w). ``right``: the rectified right image, same encoding
    as ``image``."""

    seq: Annotated[int, Int()]
    stamp: Annotated[Stamp, Time()]
    encoding: Annotated[str, Str(choices=names.ENCODINGS)]
    image: Annotated[bytes, Bin()]
    shape: Annotated[tuple[int, ...] | None, Shape(null=True, omit=None)] = None
    depth: Annotated[bytes | None, Bin(null=True, omit=None)] = None
    depth_scale: Annotated[float | None, Num(positive=True, null=True, omit=None)] = None
    right: Annotated[bytes | None, Bin(null=True, omit=None)] = None

    def validate(self) -> None:
        if self.encoding != "raw":
            self.shape = None
        elif self.shape is None:
            Shape().check(None, "shape")  # raises, saying what a shape must be


@dataclass
class IngestReply(Message):
    """The server's answer to one pushed frame: ``pose`` once tracked, ``error`` when
    malformed, ``dropped`` when the bounded queue dropped it. ``seq`` is the client's
    (:data:`names.NO_SEQ` when the message could not be read)."""

    seq: Annotated[int, Int()]
    ok: Annotated[bool, Bool()]
    error: Annotated[str | None, Str(null=True, omit=None)] = None
    dropped: Annotated[bool, Bool(omit=False)] = False
    pose: Annotated[PoseMsg | None, Nested(PoseMsg, null=True, omit=None)] = None
