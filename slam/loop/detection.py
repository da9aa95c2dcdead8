"""Loop candidates: place-recognition queries filtered by covisibility consistency.

For a new keyframe, ORB-SLAM's rule: the lowest similarity between the keyframe and
its covisible neighbours sets the bar; database keyframes above the bar that are not
its neighbours are candidates; candidates are grouped with their own covisible
neighbours, the groups are scored by accumulated similarity and only groups within
75 % of the best survive. A candidate is accepted once groups overlapping its group
were found for ``consistency`` consecutive keyframes. The others are returned as
*early* candidates with the number of consecutive keyframes that support them so far;
the loop closer accepts one when the loop also shows in enough covisible neighbours
of the current keyframe to make up the rest (as ORB-SLAM3 does, so that a loop need
not wait for new keyframes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.place.recognizer import PlaceDescriptor, PlaceRecognizer

log = logging.getLogger(__name__)


@dataclass
class _Group:
    members: frozenset[int]
    count: int


class LoopDetector:
    """Keeps the consistent candidate groups between consecutive keyframes."""

    def __init__(
        self, slam_map: Map, recognizer: PlaceRecognizer, consistency: int,
        max_candidates: int = 10,
    ) -> None:
        self.map = slam_map
        self.recognizer = recognizer
        self.consistency = consistency
        self.max_candidates = max_candidates
        self._groups: list[_Group] = []

    def reset(self) -> None:
        """Forget the consistency history (after a loop or a new map)."""
        self._groups = []

    def detect(
        self, kf: KeyFrame, desc: PlaceDescriptor, descriptors: dict[int, PlaceDescriptor],
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Consistent loop candidates for ``kf`` (keyframe ids, best first), and early
        ones as (id, consecutive keyframes supporting it including ``kf``).

        ``descriptors`` holds the place descriptors of keyframes seen so far (for the
        similarity to the covisible neighbours).
        """
        with self.map.lock:
            neighbours = [k for k in kf.covisible if k in self.map.keyframes]
        min_score = 1.0
        for k in neighbours:
            d = descriptors.get(k)
            if d is not None:
                min_score = min(min_score, self.recognizer.similarity(desc, d))
        if not neighbours:
            min_score = 0.0
        exclude = set(neighbours) | {kf.id}
        hits = self.recognizer.query(desc, 5 * self.max_candidates, exclude)
        scores = {k: s for k, s in hits if s >= min_score}
        candidates = self._best_groups(scores)
        counts = self._update_consistency(candidates)
        accepted = [k for k, c in counts.items() if c >= self.consistency]
        early = sorted(((k, c) for k, c in counts.items() if c < self.consistency),
                       key=lambda kc: -scores[kc[0]])
        if accepted:
            log.debug("keyframe %d: loop candidates %s (min score %.3f)", kf.id, accepted,
                      min_score)
        accepted.sort(key=lambda k: -scores[k])
        return accepted, early

    def _best_groups(self, scores: dict[int, float]) -> dict[int, frozenset[int]]:
        """Candidates whose covisibility group scores within 75 % of the best group."""
        groups: dict[int, tuple[float, frozenset[int]]] = {}
        with self.map.lock:
            for k, s in scores.items():
                kf = self.map.keyframes.get(k)
                if kf is None or kf.bad:
                    continue
                members = {k} | set(kf.best_covisible(10))
                acc = s + sum(scores.get(m, 0.0) for m in members if m != k)
                groups[k] = (acc, frozenset(members))
        if not groups:
            return {}
        best = max(acc for acc, _ in groups.values())
        return {k: g for k, (acc, g) in groups.items() if acc >= 0.75 * best}

    def _update_consistency(self, candidates: dict[int, frozenset[int]]) -> dict[int, int]:
        """Consecutive keyframes (this one included) supporting each candidate."""
        counts: dict[int, int] = {}
        new_groups: list[_Group] = []
        for k, members in candidates.items():
            count = 0
            for g in self._groups:
                if g.members & members:
                    count = max(count, g.count + 1)
            new_groups.append(_Group(members, count))
            counts[k] = count + 1
        self._groups = new_groups
        return counts
