"""Wire format of the SLAM service, schema version 1 (``docs/protocol.md``).

Every message is one msgpack map with ``v`` (the schema version); arrays travel
as msgpack ``bin`` values of little-endian raw bytes whose dtype and shape the
field documents. Never pickle. This module imports only the standard library,
numpy and msgpack: clients use it without the SLAM package or ZeroMQ.

Versioning: fields may be added within a version (readers ignore fields they do
not know); removing a field or changing its meaning or type bumps
:data:`SCHEMA_VERSION`, and :func:`decode` rejects a version it does not speak.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np
from numpy.typing import NDArray

SCHEMA_VERSION = 1

TOPIC_POSE = "pose"
TOPIC_KEYFRAME = "keyframe"
TOPIC_MAP = "map"
TOPIC_LOOP = "loop"
TOPIC_STATUS = "status"
TOPIC_IMAGE = "image"
TOPICS = (TOPIC_POSE, TOPIC_KEYFRAME, TOPIC_MAP, TOPIC_LOOP, TOPIC_STATUS, TOPIC_IMAGE)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_CMD_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_INGEST_ENDPOINT = "tcp://127.0.0.1:5557"
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

STATES = ("initializing", "tracking", "lost")
COMMANDS = ("stats", "snapshot", "pause", "resume", "reset", "save_map", "load_map",
            "list_maps", "shutdown")
# A map name (``save_map``/``load_map``): 1-64 letters, digits, '_' or '-', starting with a
# letter or digit, optionally followed by ".map"; the file is <name>.map in the server's map
# directory (docs/protocol.md, "Map files").
MAP_SUFFIX = ".map"
MAP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?:\.map)?")
ENCODINGS = ("jpeg", "png", "raw")
MAX_IMAGE_SIDE = 16384
NO_SEQ = -1  # ``seq`` of an ingestion reply to a message that could not be read


class ProtocolError(ValueError):
    """A message is not valid under this schema (the text says what is wrong)."""


# --- encoding -------------------------------------------------------------------
def encode(obj: Mapping[str, Any]) -> bytes:
    """msgpack bytes of a message map; ``v`` is set to :data:`SCHEMA_VERSION` when absent."""
    body = dict(obj)
    body.setdefault("v", SCHEMA_VERSION)
    return bytes(msgpack.packb(body, use_bin_type=True))


def decode(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES
           ) -> dict[Any, Any]:
    """The message map of ``data``.

    Raises :class:`ProtocolError` for oversize data, data that is not exactly one
    msgpack value, a value that is not a map, and a missing or unknown ``v``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a message must be bytes, got {type(data).__name__}")
    n = len(data)
    if n > max_bytes:
        raise ProtocolError(f"message of {n} bytes exceeds the limit of {max_bytes} bytes")
    if n == 0:
        raise ProtocolError("empty message (expected a msgpack map)")
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=False, use_list=True,
            max_bin_len=n, max_str_len=n, max_array_len=n, max_map_len=n, max_ext_len=n,
        )
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the msgpack value") from None
    except Exception as exc:
        raise ProtocolError(f"not valid msgpack ({_short(exc)})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a msgpack map, got {type(obj).__name__}")
    check_version(obj)
    return obj


def check_version(obj: Mapping[Any, Any]) -> None:
    """Raise :class:`ProtocolError` unless ``obj['v']`` is :data:`SCHEMA_VERSION`."""
    if "v" not in obj:
        raise ProtocolError("field 'v' (schema version) is missing")
    v = obj["v"]
    if not _is_int(v):
        raise ProtocolError(f"field 'v' must be an integer, got {type(v).__name__}")
    if v != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported schema version {v} (this end speaks "
                            f"{SCHEMA_VERSION})")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# --- arrays and stamps ------------------------------------------------------------
def pack_array(a: NDArray[Any]) -> bytes:
    """Little-endian raw bytes of ``a`` (C order); the reader knows dtype and shape."""
    arr = np.asarray(a)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def unpack_array(b: bytes, dtype: Any, shape_tail: tuple[int, ...] = ()) -> NDArray[Any]:
    """Array (N, *shape_tail) of ``dtype`` (native byte order) from little-endian bytes."""
    if not isinstance(b, bytes | bytearray | memoryview):
        raise ProtocolError(f"an array must be msgpack bin, got {type(b).__name__}")
    dt = np.dtype(dtype).newbyteorder("<")
    row = dt.itemsize * math.prod(shape_tail)
    if row == 0 or len(b) % row:
        raise ProtocolError(f"{len(b)} bytes are not a whole number of {dt.name} rows "
                            f"of shape {shape_tail}")
    flat = np.frombuffer(b, dtype=dt)
    return flat.reshape(-1, *shape_tail).astype(np.dtype(dtype), copy=True)


class Stamp(NamedTuple):
    """A time stamp as ROS writes it: whole seconds and nanoseconds (0..999999999)."""

    sec: int
    nanosec: int

    @classmethod
    def from_seconds(cls, t: float) -> Stamp:
        if not math.isfinite(t):
            raise ProtocolError(f"stamp must be finite, got {t}")
        sec = math.floor(t)
        nanosec = round((t - sec) * 1e9)
        if nanosec >= 1_000_000_000:
            sec, nanosec = sec + 1, nanosec - 1_000_000_000
        return cls(int(sec), int(nanosec))

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9

    def to_dict(self) -> dict[str, int]:
        return {"sec": self.sec, "nanosec": self.nanosec}

    @classmethod
    def from_dict(cls, d: Any, name: str = "stamp") -> Stamp:
        if not isinstance(d, Mapping):
            raise ProtocolError(f"field '{name}' must be a map {{sec, nanosec}}")
        sec, nanosec = _int(d, "sec", where=name), _int(d, "nanosec", where=name)
        if not 0 <= nanosec < 1_000_000_000:
            raise ProtocolError(f"field '{name}.nanosec' must be in [0, 1e9), got {nanosec}")
        return cls(sec, nanosec)


def stamp_from_seconds(t: float) -> dict[str, int]:
    """``{"sec", "nanosec"}`` of a time in seconds."""
    return Stamp.from_seconds(t).to_dict()


def seconds_from_stamp(d: Mapping[str, Any]) -> float:
    """Seconds of a ``{"sec", "nanosec"}`` map (raises :class:`ProtocolError` if malformed)."""
    return Stamp.from_dict(d).to_seconds()


# --- field readers ----------------------------------------------------------------
_MISSING: Any = object()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _field(d: Mapping[Any, Any], key: str, default: Any, where: str) -> Any:
    if key in d:
        return d[key]
    if default is _MISSING:
        raise ProtocolError(f"field '{where + '.' if where else ''}{key}' is missing")
    return default


def _bad(key: str, want: str, got: Any, where: str = "") -> ProtocolError:
    name = f"{where}.{key}" if where else key
    return ProtocolError(f"field '{name}' must be {want}, got {type(got).__name__}")


def _int(d: Mapping[Any, Any], key: str, default: Any = _MISSING, where: str = "") -> Any:
    x = _field(d, key, default, where)
    if x is default and default is not _MISSING:
        return x
    if not _is_int(x):
        raise _bad(key, "an integer", x, where)
    return x


def _num(d: Mapping[Any, Any], key: str, default: Any = _MISSING) -> Any:
    x = _field(d, key, default, "")
    if x is default and default is not _MISSING:
        return x
    if not (_is_int(x) or isinstance(x, float)):
        raise _bad(key, "a number", x)
    return float(x)


def _str(d: Mapping[Any, Any], key: str, default: Any = _MISSING) -> Any:
    x = _field(d, key, default, "")
    if x is default and default is not _MISSING:
        return x
    if not isinstance(x, str):
        raise _bad(key, "a string", x)
    return x


def _bool(d: Mapping[Any, Any], key: str, default: Any = _MISSING) -> Any:
    x = _field(d, key, default, "")
    if not isinstance(x, bool):
        raise _bad(key, "a boolean", x)
    return x


def _bytes(d: Mapping[Any, Any], key: str, default: Any = _MISSING, where: str = "") -> Any:
    x = _field(d, key, default, where)
    if x is default and default is not _MISSING:
        return x
    if not isinstance(x, bytes):
        raise _bad(key, "binary (msgpack bin)", x, where)
    return x


def _vec(d: Mapping[Any, Any], key: str, n: int) -> tuple[float, ...] | None:
    """A list of ``n`` finite numbers, or None."""
    x = _field(d, key, None, "")
    if x is None:
        return None
    if (not isinstance(x, list) or len(x) != n
            or not all(_is_int(c) or isinstance(c, float) for c in x)):
        raise ProtocolError(f"field '{key}' must be a list of {n} numbers or null")
    out = tuple(float(c) for c in x)
    if not all(math.isfinite(c) for c in out):
        raise ProtocolError(f"field '{key}' must be finite")
    return out


def _map(d: Mapping[Any, Any], key: str) -> dict[Any, Any]:
    x = _field(d, key, _MISSING, "")
    if not isinstance(x, dict):
        raise _bad(key, "a map", x)
    return x


def _state(d: Mapping[Any, Any]) -> str:
    s = _str(d, "state")
    if s not in STATES:
        raise ProtocolError(f"field 'state' must be one of {list(STATES)}, got {s!r}")
    return str(s)


def _list(v: tuple[float, ...] | None) -> list[float] | None:
    return None if v is None else list(v)


# --- published messages -----------------------------------------------------------
@dataclass
class PoseMsg:
    """Topic ``pose``: one per processed frame; ``position``/``orientation`` (xyzw) are
    ``T_world_cam`` (camera optical frame in the map frame), None when untracked."""

    seq: int
    stamp: Stamp
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    state: str
    latency_ms: float
    keyframe: bool = False
    source_index: int = 0
    sender: str | None = None
    frame_id: str = "map"
    child_frame_id: str = "camera"
    queued_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "seq": self.seq, "stamp": self.stamp.to_dict(),
                "frame_id": self.frame_id, "child_frame_id": self.child_frame_id,
                "position": _list(self.position), "orientation": _list(self.orientation),
                "state": self.state, "latency_ms": self.latency_ms, "keyframe": self.keyframe,
                "source_index": self.source_index, "sender": self.sender,
                "queued_ms": self.queued_ms}

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> PoseMsg:
        sender = _field(d, "sender", None, "")
        if sender is not None and not isinstance(sender, str):
            raise _bad("sender", "a string or null", sender)
        return cls(_int(d, "seq"), Stamp.from_dict(_field(d, "stamp", _MISSING, "")),
                   _vec(d, "position", 3), _vec(d, "orientation", 4), _state(d),
                   _num(d, "latency_ms"), _bool(d, "keyframe", False),
                   _int(d, "source_index", 0), sender,
                   _str(d, "frame_id", "map"), _str(d, "child_frame_id", "camera"),
                   _num(d, "queued_ms", 0.0))


@dataclass
class KeyframeMsg:
    """Topic ``keyframe``: a new keyframe, or one moved by a loop closure or BA (``moved``)."""

    id: int
    stamp: Stamp
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    n_points: int
    moved: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "id": self.id, "stamp": self.stamp.to_dict(),
                "position": list(self.position), "orientation": list(self.orientation),
                "n_points": self.n_points, "moved": self.moved}

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> KeyframeMsg:
        position, orientation = _vec(d, "position", 3), _vec(d, "orientation", 4)
        if position is None or orientation is None:
            raise ProtocolError("a keyframe needs a position and an orientation")
        return cls(_int(d, "id"), Stamp.from_dict(_field(d, "stamp", _MISSING, "")),
                   position, orientation, _int(d, "n_points"), _bool(d, "moved", False))


def _ids(a: NDArray[Any] | None) -> NDArray[np.int64]:
    return np.zeros(0, np.int64) if a is None else np.asarray(a, np.int64).reshape(-1)


@dataclass(eq=False)
class MapUpdateMsg:
    """Topic ``map``: points added (ids (N,) int64, xyz (N,3) float32 metres, rgb (N,3)
    uint8), moved (ids, xyz) and removed (ids) since the previous map message.
    ``reset``: forget every point and keyframe first (the map was replaced)."""

    seq: int
    added_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    added_xyz: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    added_rgb: NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    moved_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    moved_xyz: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    removed_ids: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    reset: bool = False

    def is_empty(self) -> bool:
        return not (len(self.added_ids) or len(self.moved_ids) or len(self.removed_ids)
                    or self.reset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION, "seq": self.seq, "reset": self.reset,
            "added": {"ids": pack_array(_ids(self.added_ids)),
                      "xyz": pack_array(np.asarray(self.added_xyz, np.float32)),
                      "rgb": pack_array(np.asarray(self.added_rgb, np.uint8))},
            "moved": {"ids": pack_array(_ids(self.moved_ids)),
                      "xyz": pack_array(np.asarray(self.moved_xyz, np.float32))},
            "removed": {"ids": pack_array(_ids(self.removed_ids))},
        }

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> MapUpdateMsg:
        added, moved, removed = _map(d, "added"), _map(d, "moved"), _map(d, "removed")
        msg = cls(
            _int(d, "seq"),
            unpack_array(_bytes(added, "ids", where="added"), np.int64),
            unpack_array(_bytes(added, "xyz", where="added"), np.float32, (3,)),
            unpack_array(_bytes(added, "rgb", where="added"), np.uint8, (3,)),
            unpack_array(_bytes(moved, "ids", where="moved"), np.int64),
            unpack_array(_bytes(moved, "xyz", where="moved"), np.float32, (3,)),
            unpack_array(_bytes(removed, "ids", where="removed"), np.int64),
            _bool(d, "reset", False),
        )
        if not len(msg.added_ids) == len(msg.added_xyz) == len(msg.added_rgb):
            raise ProtocolError("added: ids, xyz and rgb differ in length")
        if len(msg.moved_ids) != len(msg.moved_xyz):
            raise ProtocolError("moved: ids and xyz differ in length")
        return msg


@dataclass
class LoopMsg:
    """Topic ``loop``: a loop closed between keyframes ``cur_kf`` and ``loop_kf``."""

    cur_kf: int
    loop_kf: int
    stamp: Stamp
    loop_stamp: Stamp
    scale: float
    n_matches: int

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "cur_kf": self.cur_kf, "loop_kf": self.loop_kf,
                "stamp": self.stamp.to_dict(), "loop_stamp": self.loop_stamp.to_dict(),
                "scale": self.scale, "n_matches": self.n_matches}

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> LoopMsg:
        return cls(_int(d, "cur_kf"), _int(d, "loop_kf"),
                   Stamp.from_dict(_field(d, "stamp", _MISSING, "")),
                   Stamp.from_dict(_field(d, "loop_stamp", _MISSING, ""), "loop_stamp"),
                   _num(d, "scale"), _int(d, "n_matches"))


@dataclass
class StatusMsg:
    """Topic ``status`` (1 Hz). ``queue_depth`` = {frames, mapping, loop}; ``drops``
    frames dropped by the bounded frame queue; ``errors`` frames skipped (unreadable,
    refused at ingestion or failed in tracking), ``refused`` those refused at ingestion;
    ``rss_mb`` the server's resident memory (MB); ``poses_dropped`` poses that left the
    bounded trajectory; ``stamps_skipped`` frames skipped because their timestamp did not
    increase."""

    fps: float
    frames: int
    tracked_frames: int
    state: str
    keyframes: int
    map_points: int
    loops_closed: int
    relocalisations: int
    maps: int
    queue_depth: dict[str, int]
    drops: int
    paused: bool
    finished: bool
    subscribers: int | None = None
    errors: int = 0
    refused: int = 0
    rss_mb: float | None = None
    poses_dropped: int = 0
    stamps_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {"v": SCHEMA_VERSION, **{k: getattr(self, k) for k in self.__dataclass_fields__}}
        if self.subscribers is None:
            d.pop("subscribers")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> StatusMsg:
        depth = _map(d, "queue_depth")
        subscribers = _int(d, "subscribers", None)
        queues = {str(k): _int(depth, k, 0, "queue_depth") for k in depth
                  if isinstance(k, str)}
        queues.setdefault("frames", 0)
        queues.setdefault("mapping", 0)
        return cls(_num(d, "fps"), _int(d, "frames"), _int(d, "tracked_frames"), _state(d),
                   _int(d, "keyframes"), _int(d, "map_points"), _int(d, "loops_closed"),
                   _int(d, "relocalisations"), _int(d, "maps"), queues,
                   _int(d, "drops"), _bool(d, "paused"), _bool(d, "finished"), subscribers,
                   _int(d, "errors", 0), _int(d, "refused", 0), _num(d, "rss_mb", None),
                   _int(d, "poses_dropped", 0), _int(d, "stamps_skipped", 0))


@dataclass(eq=False)
class ImageMsg:
    """Topic ``image`` (<= 5 Hz): JPEG of the frame of pose ``seq`` (<= 640 px wide) and
    ``uv`` (K, 2) float32 pixels of the tracked keypoints in the JPEG."""

    seq: int
    stamp: Stamp
    jpeg: bytes
    width: int
    height: int
    uv: NDArray[np.float32]

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "seq": self.seq, "stamp": self.stamp.to_dict(),
                "jpeg": self.jpeg, "width": self.width, "height": self.height,
                "uv": pack_array(np.asarray(self.uv, np.float32).reshape(-1, 2))}

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> ImageMsg:
        return cls(_int(d, "seq"), Stamp.from_dict(_field(d, "stamp", _MISSING, "")),
                   _bytes(d, "jpeg"), _int(d, "width"), _int(d, "height"),
                   unpack_array(_bytes(d, "uv"), np.float32, (2,)))


# --- commands ---------------------------------------------------------------------
@dataclass
class Command:
    """A request on the command socket: ``cmd`` and its arguments (``name``, a map
    name, for ``save_map``/``load_map``)."""

    cmd: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "cmd": self.cmd, **self.args}

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> Command:
        cmd = _str(d, "cmd")
        if cmd not in COMMANDS:
            raise ProtocolError(f"unknown command {cmd[:64]!r}; expected one of "
                                f"{', '.join(COMMANDS)}")
        args: dict[str, Any] = {}
        if cmd in ("save_map", "load_map"):
            if "path" in d:
                raise ProtocolError(f"{cmd} takes 'name' (a map in the server's map "
                                    "directory), not 'path'")
            name = _str(d, "name")
            if not MAP_NAME_RE.fullmatch(name):
                raise ProtocolError("field 'name' must be a map name: 1-64 letters, digits, "
                                    "'_' or '-' (starting with a letter or digit), optionally "
                                    "followed by '.map'")
            args["name"] = name
        return cls(cmd, args)


@dataclass
class Reply:
    """A command reply: ``ok``, ``error`` when not ok, and the command's fields."""

    ok: bool
    error: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": SCHEMA_VERSION, **self.fields, "ok": self.ok}
        if not self.ok:
            d["error"] = self.error or "failed"
        return d

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> Reply:
        ok = _bool(d, "ok")
        error = None if ok else _str(d, "error", "failed")
        rest = {k: v for k, v in d.items() if k not in ("v", "ok", "error")}
        return cls(ok, error, rest)


# --- ingestion --------------------------------------------------------------------
@dataclass(eq=False)
class IngestFrame:
    """A frame pushed by a client. ``image``: JPEG/PNG bytes, or raw uint8 of ``shape``
    ([h, w] grey or [h, w, 3] BGR). ``depth``: 16-bit PNG (``depth_scale`` units per
    metre, default 5000) or, with ``raw``, float32 metres (h, w). ``right``: the
    rectified right image, same encoding as ``image``."""

    seq: int
    stamp: Stamp
    encoding: str
    image: bytes
    shape: tuple[int, ...] | None = None
    depth: bytes | None = None
    depth_scale: float | None = None
    right: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": SCHEMA_VERSION, "seq": self.seq,
                             "stamp": self.stamp.to_dict(), "encoding": self.encoding,
                             "image": self.image}
        for key in ("depth", "depth_scale", "right"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.shape is not None:
            d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> IngestFrame:
        encoding = _str(d, "encoding")
        if encoding not in ENCODINGS:
            raise ProtocolError(f"field 'encoding' must be one of {list(ENCODINGS)}, "
                                f"got {encoding[:32]!r}")
        shape = _shape(_field(d, "shape", None, "")) if encoding == "raw" else None
        scale = _num(d, "depth_scale", None)
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ProtocolError("field 'depth_scale' must be a positive number")
        return cls(_int(d, "seq"), Stamp.from_dict(_field(d, "stamp", _MISSING, "")),
                   encoding, _bytes(d, "image"), shape, _bytes(d, "depth", None), scale,
                   _bytes(d, "right", None))


def _shape(x: Any) -> tuple[int, ...]:
    if (not isinstance(x, list) or len(x) not in (2, 3) or not all(_is_int(c) for c in x)
            or not all(0 < c <= MAX_IMAGE_SIDE for c in x[:2])
            or (len(x) == 3 and x[2] != 3)):
        raise ProtocolError(f"field 'shape' must be [h, w] or [h, w, 3] with sides in "
                            f"1..{MAX_IMAGE_SIDE} (raw encoding)")
    return tuple(x)


@dataclass
class IngestReply:
    """The server's answer to one pushed frame: ``pose`` once tracked, ``error`` when
    malformed, ``dropped`` when the bounded queue dropped it. ``seq`` is the client's
    (:data:`NO_SEQ` when the message could not be read)."""

    seq: int
    ok: bool
    error: str | None = None
    dropped: bool = False
    pose: PoseMsg | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": SCHEMA_VERSION, "seq": self.seq, "ok": self.ok}
        if self.error is not None:
            d["error"] = self.error
        if self.dropped:
            d["dropped"] = True
        if self.pose is not None:
            d["pose"] = self.pose.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> IngestReply:
        pose = d.get("pose")
        if pose is not None and not isinstance(pose, dict):
            raise _bad("pose", "a map", pose)
        return cls(_int(d, "seq"), _bool(d, "ok"), _str(d, "error", None),
                   _bool(d, "dropped", False), None if pose is None else PoseMsg.from_dict(pose))
