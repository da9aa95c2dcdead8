"""The wire protocol of the SLAM service (schema v1), shared by ``server`` and ``clients``.

Every message is one msgpack map with ``v`` (the schema version); arrays travel as
msgpack ``bin`` values of little-endian raw bytes whose dtype and shape the field
documents. Never pickle. This package imports only the standard library, numpy and
msgpack (:mod:`slam_protocol.curve`, the CurveZMQ key handling, also ZeroMQ): a client
uses it without the SLAM package or OpenCV. Reference: ``docs/protocol.md``.

>>> from slam_protocol import PoseMsg, Stamp
>>> msg = PoseMsg(0, Stamp(12, 500), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0, 1.0), "tracking", 4.2)
>>> PoseMsg.decode(msg.encode()) == msg
True

Modules: :mod:`~slam_protocol.wire` (bytes, versions, arrays, stamps),
:mod:`~slam_protocol.names` (topics, sensors, states, commands, encodings, map names),
:mod:`~slam_protocol.endpoints` (default host and ports), :mod:`~slam_protocol.codec`
(the field specs and the generic codec), :mod:`~slam_protocol.messages` (one dataclass
per message) and :mod:`~slam_protocol.curve` (client keys).
"""

from slam_protocol.codec import Message
from slam_protocol.endpoints import (
    CMD_PORT,
    DEFAULT_CMD_ENDPOINT,
    DEFAULT_HOST,
    DEFAULT_INGEST_ENDPOINT,
    DEFAULT_PORTS,
    DEFAULT_PUB_ENDPOINT,
    INGEST_PORT,
    PUB_PORT,
)
from slam_protocol.messages import (
    TOPIC_TYPES,
    Command,
    ImageMsg,
    IngestFrame,
    IngestReply,
    KeyframeMsg,
    LoopMsg,
    MapUpdateMsg,
    PoseMsg,
    Reply,
    StatusMsg,
)
from slam_protocol.names import (
    COMMANDS,
    ENCODINGS,
    MAP_COMMANDS,
    MAP_NAME_RE,
    MAP_SUFFIX,
    MAX_IMAGE_SIDE,
    NO_SEQ,
    SENSORS,
    STATES,
    TOPIC_IMAGE,
    TOPIC_KEYFRAME,
    TOPIC_LOOP,
    TOPIC_MAP,
    TOPIC_POSE,
    TOPIC_STATUS,
    TOPICS,
    Sensor,
)
from slam_protocol.wire import (
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    ProtocolError,
    Stamp,
    check_version,
    decode,
    encode,
    pack_array,
    seconds_from_stamp,
    stamp_from_seconds,
    unpack_array,
)

__all__ = [
    "CMD_PORT",
    "COMMANDS",
    "DEFAULT_CMD_ENDPOINT",
    "DEFAULT_HOST",
    "DEFAULT_INGEST_ENDPOINT",
    "DEFAULT_PORTS",
    "DEFAULT_PUB_ENDPOINT",
    "ENCODINGS",
    "INGEST_PORT",
    "MAP_COMMANDS",
    "MAP_NAME_RE",
    "MAP_SUFFIX",
    "MAX_IMAGE_SIDE",
    "MAX_MESSAGE_BYTES",
    "NO_SEQ",
    "PUB_PORT",
    "SCHEMA_VERSION",
    "SENSORS",
    "STATES",
    "TOPICS",
    "TOPIC_IMAGE",
    "TOPIC_KEYFRAME",
    "TOPIC_LOOP",
    "TOPIC_MAP",
    "TOPIC_POSE",
    "TOPIC_STATUS",
    "TOPIC_TYPES",
    "Command",
    "ImageMsg",
    "IngestFrame",
    "IngestReply",
    "KeyframeMsg",
    "LoopMsg",
    "MapUpdateMsg",
    "Message",
    "PoseMsg",
    "ProtocolError",
    "Reply",
    "Sensor",
    "Stamp",
    "StatusMsg",
    "check_version",
    "decode",
    "encode",
    "pack_array",
    "seconds_from_stamp",
    "stamp_from_seconds",
    "unpack_array",
]
