"""Culled keyframes: what the map keeps of them, and when it lets them go.

A culled keyframe stays in the map only as a link in a pose chain: frames tracked
against it hold their pose relative to it, and it holds its pose relative to its
parent (``T_cam_parent``). Its features, pixels and covisibility links are dropped at
once (:meth:`slam.map.frame.Frame.released`), and the whole keyframe goes when no
logged pose needs it any more and it was culled long enough ago that no thread still
holds its id. The caller (:class:`slam.map.map.Map`) holds the map lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from slam.map.keyframe import KeyFrame

# A culled keyframe may be dropped only after this many later culls, so that a thread
# still holding its id (loop closing verifies candidates from the place database
# without pausing mapping) finds it; the loop closer's queue holds at most 64 keyframes.
HUSK_GRACE_CULLS = 256


class CulledKeyframes:
    """The culled keyframes still in the map, with the order they were culled in."""

    def __init__(self) -> None:
        self._culls = 0  # keyframes culled so far
        self._when: dict[int, int] = {}  # culled keyframe id -> its cull number

    def __len__(self) -> int:
        return len(self._when)

    def add(self, kf: KeyFrame) -> None:
        """Strip a keyframe just culled down to its pose chain and remember it."""
        kf.frame = kf.frame.released()
        kf.covisible, kf.ordered_covisible = {}, []
        self._when[kf.id] = self._culls
        self._culls += 1

    def adopt(self, keyframes: dict[int, KeyFrame]) -> None:
        """Take the culled keyframes of a loaded map (older files kept their features);
        they may go at the next :meth:`prune`."""
        for kf in keyframes.values():
            if kf.bad and kf.id not in self._when:
                self.add(kf)
                self._when[kf.id] = self._culls - 1 - HUSK_GRACE_CULLS

    def prune(self, keyframes: dict[int, KeyFrame], needed: Iterable[int],
              grace: int = HUSK_GRACE_CULLS) -> int:
        """Delete from ``keyframes`` the culled keyframes neither in ``needed`` nor on
        the parent chain of one that is, culled at least ``grace`` culls ago. Returns
        how many went."""
        keep: set[int] = set()
        for kf_id in needed:
            kf = keyframes.get(kf_id)
            while kf is not None and kf.bad and kf.id not in keep:
                keep.add(kf.id)
                kf = keyframes.get(kf.parent_id)
        old = [k for k, n in self._when.items() if k not in keep and self._culls - n >= grace]
        for kf_id in old:
            keyframes.pop(kf_id, None)
            del self._when[kf_id]
        return len(old)

    def clear(self) -> None:
        self._when.clear()
