"""The SLAM service engine: one tracking thread fed by a source or by the ingestion
socket, a publisher, the command socket and a ticker for status, map and images.

Threads: ``slam-track`` takes frames from the bounded :class:`FrameQueue` and
publishes a pose per frame; ``slam-ticker`` publishes map diffs, keyframes, loops
and images (5 Hz) and the status (1 Hz); ``slam-commands`` and ``slam-ingest``
serve their ROUTER sockets; ``slam-source`` reads a replayed source. The
:class:`SlamSystem` is swapped (``reset``, ``load_map``) under ``_system_lock``,
which the tracking thread holds while it tracks a frame.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

import slam_protocol as proto
from server.commands import CommandServer
from server.frames import FrameQueue, Job, SourceFeeder
from server.ingest import FrameError, IngestServer, reply_body
from server.map_relay import MapRelay, pose_fields, snapshot_fields
from server.maps import (
    DEFAULT_MAX_MAP_BYTES,
    DEFAULT_MAX_MAPS,
    DEFAULT_SAVE_INTERVAL_S,
    ServiceMaps,
)
from server.publisher import Publisher, encode_image
from server.security import CurveServerKeys, refuse_unversioned_peers, start_authenticator
from slam.camera import Calibration
from slam.config import SlamConfig
from slam.errors import ConfigError
from slam.io.timestamps import TimestampGuard
from slam.io.types import SensorFrame
from slam.system import SlamSystem, TrackResult

log = logging.getLogger(__name__)

RELAY_QUEUE_EVENTS = 1024  # system events the map relay may fall behind before a resync


@dataclass
class ServiceOptions:
    """How to run the service. Endpoints may use port ``*`` (an ephemeral port; read
    the bound one from :attr:`SlamService.endpoints`)."""

    sensor: str
    calibration: Calibration
    config: SlamConfig = field(default_factory=SlamConfig)
    pub_endpoint: str = proto.DEFAULT_PUB_ENDPOINT
    cmd_endpoint: str = proto.DEFAULT_CMD_ENDPOINT
    ingest_endpoint: str = proto.DEFAULT_INGEST_ENDPOINT
    realtime: bool = False
    paused: bool = False
    max_message_bytes: int = proto.MAX_MESSAGE_BYTES
    curve: CurveServerKeys | None = None
    pub_hwm: int = 100
    live_queue_size: int = 2  # drop-oldest queue of pushed, camera and realtime frames
    source_queue_size: int = 8  # read-ahead of a replay at full speed (back-pressure)
    map_period_s: float = 0.2
    status_period_s: float = 1.0
    image_period_s: float = 0.2
    # Map files (docs/protocol.md, "Map files"): the directory of save_map/load_map/list_maps
    # (None: default_map_dir(), opened at the first map command), the largest map loaded,
    # the most maps kept, the minimum time between the starts of two saves.
    map_dir: Path | None = None
    max_map_bytes: int = DEFAULT_MAX_MAP_BYTES
    max_maps: int = DEFAULT_MAX_MAPS
    map_save_interval_s: float = DEFAULT_SAVE_INTERVAL_S


@dataclass
class _Counters:
    frames: int = 0
    tracked: int = 0
    errors: int = 0
    seq: int = 0
    state: str = "initializing"
    latencies_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=10000))


class SlamService:
    """The service. ``source``: a frame source to replay (iterable of SensorFrame with a
    ``length``), or None to take frames from the ingestion socket only.

    >>> with SlamService(options, source) as svc:   # doctest: +SKIP
    ...     svc.wait()                               # until ``shutdown`` or stop()
    """

    def __init__(self, options: ServiceOptions, source: Any | None = None) -> None:
        self.opts = options
        self.source = source
        self.ctx: zmq.Context[Any] = zmq.Context()
        self._auth: Any = None
        o = options
        self._system = SlamSystem(o.config, o.calibration, o.sensor)  # type: ignore[arg-type]
        self._system_lock = threading.Lock()
        self._events = self._system.events.subscribe(RELAY_QUEUE_EVENTS)
        self._stop = threading.Event()
        self._shutdown = threading.Event()
        self._running = threading.Event()
        if not options.paused:
            self._running.set()
        self._finished = False
        self._counters = _Counters()
        self._relay = MapRelay(self._events, lambda: self._system.snapshot(points=True))
        self._relay_lock = threading.Lock()
        self._latest_image: tuple[int, float, Any, Any] | None = None
        self._fps = 0.0
        self._subscribers = 0
        live = source is None or options.realtime or getattr(source, "length", None) is None
        size = options.live_queue_size if live else options.source_queue_size
        self._queue = FrameQueue(size, drop_oldest=live)
        self._feeder: SourceFeeder | None = None
        self.pub: Publisher | None = None
        self.commands: CommandServer | None = None
        self.ingest: IngestServer | None = None
        self._threads: list[threading.Thread] = []
        self._started = False
        self._maps = ServiceMaps(options.map_dir, options.max_map_bytes, options.max_maps,
                                 options.map_save_interval_s)
        self._stamps = TimestampGuard("frames")  # replaced on reset and load_map

    # --- life cycle -------------------------------------------------------------
    def start(self) -> SlamService:
        """Bind the sockets and start the threads (raises ConfigError when a bind fails)."""
        if self._started:
            return self
        self._started = True
        o = self.opts
        setup = o.curve.apply if o.curve is not None else refuse_unversioned_peers
        try:
            if o.curve is not None:
                self._auth = start_authenticator(self.ctx, o.curve)
            self.pub = Publisher(self.ctx, o.pub_endpoint, o.pub_hwm, setup)
            self.commands = CommandServer(self.ctx, o.cmd_endpoint, self._handlers(),
                                          o.max_message_bytes, setup, self._after_reply)
            refusal = f"this server replays {getattr(self.source, 'name', 'a source')}; " \
                      "start it with --source zmq: to push frames"
            self.ingest = IngestServer(self.ctx, o.ingest_endpoint,
                                       self._queue if self.source is None else None,
                                       o.calibration, o.sensor, o.max_message_bytes, setup,
                                       refusal)
        except zmq.ZMQError as exc:
            if self.commands is not None:
                self.commands.stop()
            self._close_sockets()
            raise ConfigError(f"cannot bind the service sockets: {exc} (is another server "
                              "running on these ports?)") from exc
        self.commands.start()
        self.ingest.start()
        self._spawn(self._track_loop, "slam-track")
        self._spawn(self._tick_loop, "slam-ticker")
        if self.source is not None:
            self._feeder = SourceFeeder(self.source, self._queue, o.realtime,
                                        self._on_source_error, running=self._running)
            self._feeder.start()
        log.info("serving: pub %s, commands %s, ingest %s%s", *self.endpoints.values(),
                 " (paused)" if o.paused else "")
        return self

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def endpoints(self) -> dict[str, str]:
        """The bound endpoints: ``pub``, ``cmd``, ``ingest``."""
        assert self.pub and self.commands and self.ingest, "start() the service first"
        return {"pub": self.pub.endpoint, "cmd": self.commands.endpoint,
                "ingest": self.ingest.endpoint}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``shutdown`` is requested (True) or ``timeout`` passes (False)."""
        return self._shutdown.wait(timeout)

    def request_shutdown(self) -> None:
        self._shutdown.set()

    def stop(self) -> None:
        """Stop every thread, close the sockets and the SLAM system (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._shutdown.set()
        self._running.set()
        if self._feeder is not None:
            self._feeder.stop()
        self._queue.close()
        for t in self._threads:
            t.join(10.0)
        if self.commands is not None:
            self.commands.stop()
        if self.ingest is not None:
            self.ingest.stop()
        self._close_sockets()
        self._events.close()
        try:
            self._system.close()
        except Exception:
            log.exception("stopping the SLAM threads failed")
        self._maps.close()
        log.info("service stopped")

    def _close_sockets(self) -> None:
        if self.ctx.closed:
            return
        if self.pub is not None:
            self.pub.close()
        if self._auth is not None:
            self._auth.stop()
        self.ctx.destroy(linger=0)  # any socket left open (a thread that did not stop)

    def __enter__(self) -> SlamService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the tracking thread ------------------------------------------------------
    def _track_loop(self) -> None:
        assert self.ingest is not None
        replies = self.ingest.reply_channel()
        try:
            while not self._stop.is_set():
                if not self._running.wait(0.1):
                    continue
                job = self._queue.get(0.1)
                try:
                    if job is not None:
                        self._track(job, replies)
                    elif self._queue.finished and not self._finished:
                        self._finish_replay()
                except Exception:  # publishing or replying failed: keep tracking
                    log.exception("tracking thread: unexpected error (carrying on)")
        finally:
            replies.close(linger=0)

    def _track(self, job: Job, replies: zmq.Socket[Any]) -> None:
        c = self._counters
        if not self._queue.drop_oldest:
            # A replay at full speed reads ahead: time spent waiting in the read-ahead
            # queue is throughput buffering, not latency; count from here.
            job.t_arrival = time.perf_counter()
        t_taken = time.perf_counter()
        try:
            frame = job.sensor_frame()
        except FrameError as exc:
            c.errors += 1
            log.debug("pushed frame %s could not be decoded: %s", job.client_seq, exc)
            self._reply_error(replies, job, str(exc))
            return
        if not self._stamps.admit(frame.timestamp, frame.index):
            skipped = self._stamps.counts.total
            if skipped & (skipped - 1) == 0:  # 1, 2, 4, ...: the log says so, not at 30 Hz
                log.warning("%s", self._stamps.summary())
            self._reply_error(replies, job, f"skipped: timestamp {frame.timestamp:.6f} s is "
                              "not after the last frame's")
            return
        with self._system_lock:
            system = self._system
            try:
                res = system.process(frame)
            except Exception as exc:
                c.errors += 1
                log.exception("frame %d could not be tracked (skipped)", frame.index)
                self._reply_error(replies, job, f"tracking failed: {exc}")
                return
            uv = res.uv_tracked
            seq = c.seq
            c.seq += 1
        c.frames += 1
        c.tracked += res.T_world_cam is not None
        c.state = res.state.value
        msg = self._pose_message(seq, res, job, frame, (t_taken - job.t_arrival) * 1e3)
        assert self.pub is not None
        self.pub.send(proto.TOPIC_POSE, msg.to_dict())
        c.latencies_ms.append(msg.latency_ms)
        if job.sender is not None:
            seq_c = job.client_seq if job.client_seq is not None else proto.NO_SEQ
            _push(replies, job.envelope, reply_body(seq_c, True, pose=msg))
        image = frame.color if frame.color is not None else frame.image
        self._latest_image = (seq, frame.timestamp, image, uv)

    def _reply_error(self, replies: zmq.Socket[Any], job: Job, error: str) -> None:
        if job.sender is not None:
            _push(replies, job.envelope, reply_body(
                proto.NO_SEQ if job.client_seq is None else job.client_seq, False, error))

    def _pose_message(self, seq: int, res: TrackResult, job: Job, frame: SensorFrame,
                      queued_ms: float) -> proto.PoseMsg:
        position, orientation = pose_fields(res.T_world_cam)
        sender = job.sender.hex() if job.sender is not None else None
        index = job.client_seq if job.client_seq is not None else frame.index
        latency_ms = (time.perf_counter() - job.t_arrival) * 1e3
        stamp = proto.Stamp.from_seconds(frame.timestamp)
        return proto.PoseMsg(seq, stamp, position, orientation, res.state.value, latency_ms,
                             bool(res.is_keyframe), int(index), sender, queued_ms=queued_ms)

    def _finish_replay(self) -> None:
        """The source is exhausted: let mapping catch up; keep serving."""
        with self._system_lock:
            try:
                self._system.flush()
            except Exception:
                log.exception("mapping failed while finishing the replay")
        self._finished = True
        c = self._counters
        log.info("replay finished: %d frames, %d tracked, %d skipped; still serving",
                 c.frames, c.tracked, c.errors)

    def _on_source_error(self, index: int, exc: BaseException) -> None:
        self._counters.errors += 1
        where = f"frame {index}" if index >= 0 else "the source"
        log.error("%s could not be read (skipped): %s", where, exc)

    # --- the ticker thread --------------------------------------------------------
    def _tick_loop(self) -> None:
        o = self.opts
        period = min(o.map_period_s, o.image_period_s, o.status_period_s)
        next_status = time.monotonic()
        last_frames, last_t = 0, time.monotonic()
        fps = 0.0
        while not self._stop.wait(period):
            try:
                self._publish_map_updates()
                self._publish_image()
                now = time.monotonic()
                if now >= next_status:
                    fps = (self._counters.frames - last_frames) / max(now - last_t, 1e-6)
                    last_frames, last_t = self._counters.frames, now
                    self._fps = fps
                    self._subscribers = self.pub.subscribers() if self.pub else 0
                    assert self.pub is not None
                    self.pub.send(proto.TOPIC_STATUS, self.status().to_dict())
                    next_status = now + o.status_period_s
            except Exception:
                log.exception("publishing failed (carrying on)")

    def _publish_map_updates(self) -> None:
        """Messages from the system's events since the last turn (loops first, then the
        map changes they made, then keyframes)."""
        assert self.pub is not None
        with self._relay_lock:
            out = self._relay.turn()
        for loop in out.loops:
            self.pub.send(proto.TOPIC_LOOP, loop.to_dict())
        if out.map is not None:
            self.pub.send(proto.TOPIC_MAP, out.map.to_dict())
        for kf in out.keyframes:
            self.pub.send(proto.TOPIC_KEYFRAME, kf.to_dict())

    def _publish_image(self) -> None:
        latest, self._latest_image = self._latest_image, None
        if latest is None:
            return
        seq, stamp, image, uv = latest
        jpeg, w, h, uv_jpeg = encode_image(image, uv)
        assert self.pub is not None
        msg = proto.ImageMsg(seq, proto.Stamp.from_seconds(stamp), jpeg, w, h, uv_jpeg)
        self.pub.send(proto.TOPIC_IMAGE, msg.to_dict())

    # --- queries ------------------------------------------------------------------
    def status(self) -> proto.StatusMsg:
        """The status message now."""
        st = self._system.status()
        c = self._counters
        refused = self.ingest.rejected if self.ingest is not None else 0
        return proto.StatusMsg(
            fps=float(self._fps), frames=c.frames, tracked_frames=c.tracked, state=c.state,
            keyframes=st.keyframes, map_points=st.map_points, loops_closed=st.loops_closed,
            relocalisations=st.relocalisations, maps=st.maps,
            queue_depth={"frames": len(self._queue), "mapping": st.mapping_queue,
                         "loop": st.loop_queue},
            drops=self._queue.drops, paused=not self._running.is_set(),
            finished=self._finished, subscribers=self._subscribers,
            errors=c.errors + refused, refused=refused, rss_mb=_rss_mb(),
            poses_dropped=st.poses_dropped, stamps_skipped=self._stamps.counts.total)

    def stats(self) -> dict[str, Any]:
        """The ``stats`` reply fields (the status plus latency percentiles)."""
        st = self.status().to_dict()
        st.pop("v", None)
        lat = np.array(self._counters.latencies_ms)
        st["latency_ms_median"] = float(np.median(lat)) if len(lat) else None
        st["latency_ms_p99"] = float(np.percentile(lat, 99)) if len(lat) else None
        st["publish_failures"] = self.pub.failed if self.pub is not None else 0
        st["last_seq"] = self._counters.seq - 1
        st["map_save"] = self._maps.save_status()
        return st

    def snapshot(self) -> dict[str, Any]:
        """The ``snapshot`` reply fields: keyframes, published points, trajectory, loops."""
        with self._relay_lock:
            published = self._relay.published()
        return snapshot_fields(self._system.snapshot(), published, self._counters.seq - 1)

    # --- commands -----------------------------------------------------------------
    def _handlers(self) -> dict[str, Any]:
        return {
            "stats": lambda c: self.stats(), "snapshot": lambda c: self.snapshot(),
            "pause": lambda c: self.pause(), "resume": lambda c: self.resume(),
            "reset": lambda c: self.reset(), "shutdown": lambda c: {},
            "save_map": lambda c: self.save_map(c.args["name"]),
            "load_map": lambda c: self.load_map(c.args["name"]),
            "list_maps": lambda c: self._maps.list(),
        }

    def _after_reply(self, cmd: str) -> None:
        if cmd == "shutdown":
            log.info("shutdown requested by a client")
            self.request_shutdown()

    def pause(self) -> dict[str, Any]:
        self._running.clear()
        return {}

    def resume(self) -> dict[str, Any]:
        self._running.set()
        return {}

    def reset(self) -> dict[str, Any]:
        """Start again with an empty map (tracking re-initialises on the next frame)."""
        with self._system_lock:
            self._system.reset()
            self._swap_guard()
        log.info("map reset by a client")
        return {}

    def save_map(self, name: str) -> dict[str, Any]:
        """Start saving the map as ``name`` in the background (tracking goes on); returns
        ``{name, state: "saving"}`` at once, the outcome is ``stats``' ``map_save``."""
        o = self.opts
        return self._maps.save(self._system, name, o.calibration, o.sensor)

    def load_map(self, name: str) -> dict[str, Any]:
        """Replace the map by map ``name`` (same camera and sensor); tracking relocalises."""
        loaded = self._maps.load(name, self.opts.calibration, self.opts.sensor)
        with self._system_lock:
            self._system.load_map(loaded.map)
            self._swap_guard()
        st = self._system.status()
        return {"name": loaded.info.path.stem, "keyframes": st.keyframes,
                "map_points": st.map_points}

    def _swap_guard(self) -> None:
        """A new map may start a new clock: frames are judged against it alone."""
        self._stamps = TimestampGuard("frames")


def _rss_mb() -> float:
    """This process's resident memory, MB."""
    return float(psutil.Process().memory_info().rss) / 1e6


def _push(sock: zmq.Socket[Any], envelope: list[bytes], body: bytes) -> None:
    try:
        sock.send_multipart([*envelope, body], flags=zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        log.debug("ingestion reply dropped: %s", exc)
