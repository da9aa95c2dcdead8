"""What the SLAM system tells the outside world: events, and a bus to hear them on.

The threads of the system emit events as they change the map (local mapping after each
keyframe, with what tracking added for it; tracking itself only where no mapping runs;
loop closing after a correction): a
:class:`MapDelta` says what changed since the previous one, a :class:`LoopClosed` that a
loop was closed, a :class:`MapReset` that the map was replaced or cleared. Applying the
deltas in order to an empty map rebuilds the map's points and keyframes. Every event
carries the data it describes, so a consumer never reads the map.

Consumers (the service's publisher, a recorder) subscribe to the :class:`EventBus` with
a bounded queue: a consumer that falls behind loses the oldest events and is told so
(:attr:`Subscription.overflowed`), then catches up from a snapshot. Publishing never
blocks the SLAM threads.

This module is a leaf: it imports only numpy, so every layer may emit events.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

DEFAULT_QUEUE_EVENTS = 256  # events a subscriber may fall behind before losing the oldest


@dataclass(frozen=True)
class KeyframeInfo:
    """A keyframe as a consumer sees it: ``T_world_cam`` (4, 4), ``stamp`` seconds,
    ``n_points`` live map points it observes."""

    id: int
    stamp: float
    T_world_cam: NDArray[np.float64]
    n_points: int


def _ids() -> NDArray[np.int64]:
    return np.zeros(0, np.int64)


def _xyz() -> NDArray[np.float64]:
    return np.zeros((0, 3))


@dataclass(frozen=True)
class MapDelta:
    """The map's changes since the previous delta. Points: ``*_ids`` (N,) int64,
    ``*_xyz`` (N, 3) metres in the map frame, ``added_rgb`` (N, 3) uint8 (the colour
    the point shows in its first keyframe, grey without colour). Keyframes added,
    moved (their new pose) and culled (ids). ``source`` names the thread that emitted
    it (``tracking``, ``mapping``, ``loop closing``)."""

    source: str
    added_ids: NDArray[np.int64] = field(default_factory=_ids)
    added_xyz: NDArray[np.float64] = field(default_factory=_xyz)
    added_rgb: NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    moved_ids: NDArray[np.int64] = field(default_factory=_ids)
    moved_xyz: NDArray[np.float64] = field(default_factory=_xyz)
    removed_ids: NDArray[np.int64] = field(default_factory=_ids)
    keyframes_added: tuple[KeyframeInfo, ...] = ()
    keyframes_moved: tuple[KeyframeInfo, ...] = ()
    keyframes_culled: NDArray[np.int64] = field(default_factory=_ids)

    def is_empty(self) -> bool:
        return not (len(self.added_ids) or len(self.moved_ids) or len(self.removed_ids)
                    or self.keyframes_added or self.keyframes_moved
                    or len(self.keyframes_culled))


@dataclass(frozen=True)
class LoopClosed:
    """A loop was closed: the keyframe that closed it, the old keyframe it matched,
    their timestamps (s), the Sim(3) scale of the correction (1 for stereo and RGB-D)
    and the number of matched points. The keyframes and points it moved follow as a
    :class:`MapDelta`."""

    cur_kf_id: int
    loop_kf_id: int
    stamp: float
    loop_stamp: float
    scale: float
    n_matches: int


@dataclass(frozen=True)
class MapReset:
    """The map was cleared or replaced (``reason``: ``reset``, ``new map``, ``loaded``):
    forget every point and keyframe; the new map's content follows as deltas."""

    reason: str


Event = MapDelta | LoopClosed | MapReset


class Subscription:
    """A bounded queue of events for one consumer (thread-safe). When it is full the
    oldest event is dropped and :attr:`overflowed` set: the consumer has missed changes
    and should rebuild its state from a snapshot (then :meth:`clear_overflow`)."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._items: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition()
        self.maxsize = maxsize
        self.overflowed = False
        self.dropped = 0

    def put(self, event: Event) -> None:
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                self.overflowed = True
            self._items.append(event)
            self._cond.notify()

    def get(self, timeout: float) -> Event | None:
        """The oldest event, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear_overflow(self) -> None:
        with self._cond:
            self.overflowed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._bus.unsubscribe(self)


class EventBus:
    """Fans events out to subscriptions; :meth:`publish` never blocks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def subscribe(self, maxsize: int = DEFAULT_QUEUE_EVENTS) -> Subscription:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        sub = Subscription(self, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def has_subscribers(self) -> bool:
        with self._lock:
            return bool(self._subs)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.put(event)
