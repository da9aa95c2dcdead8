"""The service's map directory: remote peers name maps, they never give paths.

Every map of ``slam serve`` lives in one directory (``--map-dir``, by default
``$XDG_DATA_HOME/slam/maps``, created with mode 0700). A map name is a short word
(:data:`slam_protocol.MAP_NAME_RE`; the file is ``<name>.map``), so no name can
reach outside the directory: no ``/``, ``\\``, ``..``, NUL or leading dot.

* Reading (:meth:`MapDirectory.read`) opens the name relative to the directory's
  descriptor with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink is refused, a FIFO does not
  block), requires a regular file (``fstat``) no larger than ``max_bytes`` *before*
  reading, and reads from the descriptor it checked. Missing, a directory, a
  symlink, a FIFO, a device, unreadable: all get the same answer, "no map named
  'x'", so the replies are no oracle for the file system. A regular ``<name>.map``
  that is too large or not a valid map is reported as such: ``list_maps`` shows
  these files anyway.
* Writing (:meth:`MapDirectory.write`) goes through a temporary file created with
  ``O_EXCL | O_NOFOLLOW`` inside the directory, renamed over ``<name>.map``: it never
  follows a link or writes into an existing file. At most ``max_maps`` maps.
* :class:`MapSaver` runs one save at a time in a background thread, the next one
  starting at least ``min_interval_s`` after the last one ended (so saves never
  occupy the disk more than a fraction of the time), and keeps the outcome for
  ``stats``.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slam.errors import ConfigError, MapFileError, SlamError
from slam.io import files as file_io
from slam_protocol import MAP_NAME_RE, MAP_SUFFIX

if TYPE_CHECKING:
    from slam.camera import Calibration
    from slam.system import EncodedMap, LoadedMap, MapSnapshot, SlamSystem

log = logging.getLogger(__name__)

DEFAULT_MAX_MAP_BYTES = 256 << 20  # about 800 RGB-D keyframes of 640x480
DEFAULT_MAX_MAPS = 100  # maps in the directory (a save of a new name beyond is refused)
DEFAULT_SAVE_INTERVAL_S = 10.0  # minimum time from the end of one save to the next start
MAX_LISTED = 1000  # maps in a ``list_maps`` reply
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))


def default_map_dir() -> Path:
    """``$XDG_DATA_HOME/slam/maps`` (``~/.local/share/slam/maps`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "slam" / "maps"


def map_file_name(name: str) -> str:
    """``<name>.map`` of a valid map name (a trailing ``.map`` is accepted and dropped);
    MapFileError for anything else."""
    if not isinstance(name, str) or not MAP_NAME_RE.fullmatch(name):
        raise MapFileError(f"invalid map name {str(name)[:80]!r}: use 1-64 letters, digits, "
                           "'_' or '-' (starting with a letter or digit), optionally "
                           "followed by '.map'")
    return name if name.endswith(MAP_SUFFIX) else name + MAP_SUFFIX


def _stem(file_name: str) -> str:
    return file_name[: -len(MAP_SUFFIX)]


class MapDirectory:
    """The maps of one directory, addressed by name. ``root`` is created (mode 0700)
    when missing; ConfigError when it cannot be created or opened."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_MAP_BYTES,
                 max_maps: int = DEFAULT_MAX_MAPS) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self.max_maps = max_maps
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = file_io.open_directory(self.root)
        except OSError as exc:
            raise ConfigError(f"cannot use the map directory {self.root}: "
                              f"{exc.strerror or exc}") from exc
        self._write_lock = threading.Lock()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MapDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------
    def read(self, name: str) -> tuple[str, bytearray]:
        """(file name, content) of map ``name``; MapFileError "no map named" for
        anything but a readable regular file, "too large" beyond ``max_bytes``."""
        file_name = map_file_name(name)
        missing = MapFileError(f"no map named {_stem(file_name)!r}")
        try:
            fd = os.open(file_name, _OPEN_FLAGS, dir_fd=self._fd)
        except OSError as exc:
            log.info("load_map %r: %s", file_name, exc)
            raise missing from None
        try:
            return file_name, file_io.read_regular(fd, self.max_bytes)
        except OverflowError as exc:
            raise MapFileError(f"map {_stem(file_name)!r} is too large ({exc}; the limit is "
                               "--max-map-bytes)") from None
        except OSError as exc:
            log.info("load_map %r: %s", file_name, exc)
            raise missing from None
        finally:
            os.close(fd)

    def load(self, name: str, calibration: Calibration, sensor: str) -> LoadedMap:
        """Map ``name``, validated and checked against the camera and sensor."""
        from slam.system import load_map_bytes

        file_name, data = self.read(name)
        return load_map_bytes(data, file_name, calibration=calibration, sensor=sensor)

    def list(self) -> list[dict[str, Any]]:
        """``{name, bytes, modified}`` (ISO 8601 UTC) of each map, by name (regular
        ``<name>.map`` files only; at most :data:`MAX_LISTED`)."""
        out = []
        with os.scandir(self._fd) as entries:
            for entry in entries:
                if not (entry.name.endswith(MAP_SUFFIX) and MAP_NAME_RE.fullmatch(entry.name)):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append({"name": _stem(entry.name), "bytes": int(st.st_size),
                                "modified": datetime.fromtimestamp(st.st_mtime, UTC)
                                .isoformat(timespec="seconds")})
        return sorted(out, key=lambda m: str(m["name"]))[:MAX_LISTED]

    # --- writing ----------------------------------------------------------------
    def write(self, name: str, encoded: EncodedMap) -> int:
        """Write map ``name`` atomically (mode 0600); returns its size in bytes.
        MapFileError when the directory already holds ``max_maps`` other maps."""
        file_name = map_file_name(name)
        with self._write_lock:
            names = {m["name"] for m in self.list()}
            if _stem(file_name) not in names and len(names) >= self.max_maps:
                raise MapFileError(f"the map directory holds {len(names)} maps, the limit "
                                   "(--max-maps); overwrite one or remove some")
            file_io.write_atomically(self._fd, file_name, encoded.chunks, mode=0o600)
        return encoded.size


@dataclass
class SaveStatus:
    """The last save: ``state`` is ``saving``, ``saved`` or ``failed``; ``bytes`` and
    ``seconds`` once saved, ``error`` (one line) when failed."""

    name: str
    state: str
    bytes: int | None = None
    seconds: float | None = None
    error: str | None = None


class MapSaver:
    """Saves maps in a background thread: one at a time, a save starting at least
    ``min_interval_s`` after the previous one ended. ``clock`` is monotonic seconds."""

    def __init__(self, directory: Callable[[], MapDirectory], min_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._directory = directory
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._status: SaveStatus | None = None
        self._last_end: float | None = None
        self._thread: threading.Thread | None = None

    def start(self, name: str, snapshot: Callable[[], MapSnapshot],
              encode: Callable[[MapSnapshot, str], EncodedMap]) -> dict[str, Any]:
        """Start saving map ``name``: ``snapshot()`` copies the map (under its lock),
        ``encode(snapshot, file_name)`` compresses it, then the file is written. Returns
        ``{name, state: "saving"}`` at once; MapFileError when a save is in progress, the
        last one ended less than ``min_interval_s`` ago, or the name is invalid."""
        stem = _stem(map_file_name(name))
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                current = self._status.name if self._status else "?"
                raise MapFileError(f"a save of map {current!r} is in progress; try again "
                                   "when stats says it is done")
            now = self._clock()
            if self._last_end is not None and now - self._last_end < self.min_interval_s:
                wait = self.min_interval_s - (now - self._last_end)
                raise MapFileError(f"saves are limited to one every {self.min_interval_s:g} s;"
                                   f" try again in {wait:.1f} s")
            self._status = SaveStatus(stem, "saving")
            self._thread = threading.Thread(target=self._run, args=(stem, snapshot, encode),
                                            name="slam-map-save", daemon=True)
            self._thread.start()
        return {"name": stem, "state": "saving"}

    def _run(self, stem: str, snapshot: Callable[[], MapSnapshot],
             encode: Callable[[MapSnapshot, str], EncodedMap]) -> None:
        t0 = time.perf_counter()
        status = SaveStatus(stem, "failed")
        try:
            encoded = encode(snapshot(), stem + MAP_SUFFIX)
            status = SaveStatus(stem, "saved", self._directory().write(stem, encoded),
                                round(time.perf_counter() - t0, 3))
            log.info("saved map %r: %d bytes in %.2f s", stem, status.bytes, status.seconds)
        except (SlamError, OSError) as exc:
            status.error = " ".join(str(exc).split())
            log.warning("saving map %r failed: %s", stem, status.error)
        except Exception as exc:
            status.error = f"internal error ({type(exc).__name__})"
            log.exception("saving map %r failed", stem)
        with self._lock:
            self._status, self._last_end = status, self._clock()

    def status(self) -> dict[str, Any]:
        """The last save's :class:`SaveStatus` fields, or ``{"state": "idle"}``."""
        with self._lock:
            return {"state": "idle"} if self._status is None else asdict(self._status)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a save in progress; True when none is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


class ServiceMaps:
    """The map commands of ``slam serve``: a :class:`MapDirectory` opened (and created)
    at the first use, and a :class:`MapSaver`. ``root`` None: :func:`default_map_dir`."""

    def __init__(self, root: Path | None, max_bytes: int = DEFAULT_MAX_MAP_BYTES,
                 max_maps: int = DEFAULT_MAX_MAPS,
                 save_interval_s: float = DEFAULT_SAVE_INTERVAL_S) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_maps = max_maps
        self._dir: MapDirectory | None = None
        self._lock = threading.Lock()
        self.saver = MapSaver(self.directory, save_interval_s)

    def directory(self) -> MapDirectory:
        with self._lock:
            if self._dir is None:
                self._dir = MapDirectory(self.root or default_map_dir(), self.max_bytes,
                                         self.max_maps)
            return self._dir

    def save(self, system: SlamSystem, name: str, calibration: Calibration, sensor: str
             ) -> dict[str, Any]:
        """Start saving ``system``'s map as ``name`` (:meth:`MapSaver.start`): the copy is
        taken in the background (:meth:`SlamSystem.map_snapshot`: local mapping paused
        between keyframes, the map lock held); tracking never waits for the compression
        or the write."""
        from slam.system import encode_snapshot

        self.directory()  # a directory that cannot be used is refused at once
        return self.saver.start(name, system.map_snapshot, lambda snap, file_name:
                                encode_snapshot(snap, calibration, sensor, name=file_name))

    def load(self, name: str, calibration: Calibration, sensor: str) -> LoadedMap:
        return self.directory().load(name, calibration, sensor)

    def list(self) -> dict[str, Any]:
        """The ``list_maps`` reply: ``{maps: [{name, bytes, modified}, ...]}``."""
        return {"maps": self.directory().list()}

    def save_status(self) -> dict[str, Any]:
        return self.saver.status()

    def close(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` s for a save in progress, then close the directory."""
        if not self.saver.join(timeout):
            log.warning("a map save was still running at shutdown")
        with self._lock:
            if self._dir is not None:
                self._dir.close()
