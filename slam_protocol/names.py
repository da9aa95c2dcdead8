"""The wire's vocabulary: topics, sensors, tracking states, commands, image encodings,
map names. Every name the service and its clients exchange is defined here once."""

from __future__ import annotations

import enum
import re

# --- published topics (the first frame of every PUB message) -------------------------
TOPIC_POSE = "pose"
TOPIC_KEYFRAME = "keyframe"
TOPIC_MAP = "map"
TOPIC_LOOP = "loop"
TOPIC_STATUS = "status"
TOPIC_IMAGE = "image"
TOPICS = (TOPIC_POSE, TOPIC_KEYFRAME, TOPIC_MAP, TOPIC_LOOP, TOPIC_STATUS, TOPIC_IMAGE)


class Sensor(enum.StrEnum):
    """The camera set-ups the service tracks (``slam serve --sensor``, ``slam-client push
    --sensor``). A ``StrEnum``: ``Sensor.RGBD == "rgbd"``; the SLAM core keeps its own
    ``slam.config.Sensor`` literal with the same values."""

    MONO = "mono"
    STEREO = "stereo"
    RGBD = "rgbd"


SENSORS: tuple[str, ...] = tuple(s.value for s in Sensor)
"""The sensor names, for ``argparse`` choices."""

STATES = ("initializing", "tracking", "lost")
"""``state`` of ``pose`` and ``status`` messages."""
COMMANDS = ("stats", "snapshot", "pause", "resume", "reset", "save_map", "load_map",
            "list_maps", "shutdown")
"""``cmd`` of a request on the command socket."""
MAP_COMMANDS = ("save_map", "load_map")
"""Commands that take a map ``name``."""
ENCODINGS = ("jpeg", "png", "raw")
"""``encoding`` of a pushed frame."""
MAX_IMAGE_SIDE = 16384
"""Largest height or width (pixels) of a raw pushed frame's ``shape``."""
NO_SEQ = -1
"""``seq`` of an ingestion reply to a message that could not be read."""

# A map name (``save_map``/``load_map``): 1-64 letters, digits, '_' or '-', starting with a
# letter or digit, optionally followed by ".map"; the file is <name>.map in the server's map
# directory (docs/protocol.md, "Map files").
MAP_SUFFIX = ".map"
MAP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?:\.map)?")
