"""Loop candidate consistency with a scripted place recogniser."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from numpy.typing import NDArray

from slam.loop.detection import LoopDetector
from slam.map.keyframe import KeyFrame
from slam.map.map import Map
from slam.place.recognizer import PlaceDescriptor, PlaceRecognizer
from tests.map.factories import make_frame, make_keyframe


class _Desc(PlaceDescriptor):
    def __init__(self, kf_id: int) -> None:
        self.kf_id = kf_id


class ScriptedRecognizer(PlaceRecognizer):
    """Answers queries from a table: query keyframe id -> [(candidate, score)]."""

    def __init__(self, answers: dict[int, list[tuple[int, float]]]) -> None:
        self.answers = answers

    def describe(self, descriptors: NDArray[np.uint8],
                 image: NDArray[np.uint8] | None = None) -> PlaceDescriptor:
        return _Desc(-1)

    def add(self, kf_id: int, desc: PlaceDescriptor) -> None:
        pass

    def erase(self, kf_id: int) -> None:
        pass

    def clear(self) -> None:
        pass

    def query(self, desc: PlaceDescriptor, max_results: int | None = None,
              exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        assert isinstance(desc, _Desc)
        return [(k, s) for k, s in self.answers.get(desc.kf_id, []) if k not in exclude]

    def similarity(self, a: PlaceDescriptor, b: PlaceDescriptor) -> float:
        return 0.1  # every neighbour is a weak match: the bar is low

    def __len__(self) -> int:
        return 0

    def __contains__(self, kf_id: object) -> bool:
        return False


def _map(n: int) -> Map:
    """``n`` keyframes in a chain: each covisible with its neighbours."""
    m = Map()
    rng = np.random.default_rng(0)
    for k in range(n):
        make_keyframe(m, make_frame(rng.uniform(0, 300, (5, 2)), frame_id=k, rng=rng), np.eye(4))
    for k in range(n):
        kf: KeyFrame = m.keyframes[k]
        kf.covisible = {j: 50 for j in (k - 1, k + 1) if 0 <= j < n}
        kf.ordered_covisible = list(kf.covisible)
    return m


def _detect(det: LoopDetector, m: Map, kf_id: int) -> list[int]:
    kf = m.keyframes[kf_id]
    descs: dict[int, PlaceDescriptor] = {k: _Desc(k) for k in m.keyframes}
    return det.detect(kf, _Desc(kf_id), descs)[0]


def test_a_candidate_is_accepted_after_consistent_consecutive_keyframes() -> None:
    m = _map(30)
    answers = {20: [(2, 0.5)], 21: [(3, 0.5)], 22: [(3, 0.6)], 23: [(4, 0.5)]}
    det = LoopDetector(m, ScriptedRecognizer(answers), consistency=3)
    assert _detect(det, m, 20) == []
    assert _detect(det, m, 21) == []  # group {3, 2, 4} overlaps {2, 1, 3}: count 2
    assert _detect(det, m, 22) == [3]
    assert _detect(det, m, 23) == [4]


def test_inconsistent_candidates_and_a_break_reset_the_count() -> None:
    m = _map(40)
    answers = {20: [(2, 0.5)], 21: [(15, 0.5)], 22: [(2, 0.5)], 23: [(3, 0.5)], 24: []}
    det = LoopDetector(m, ScriptedRecognizer(answers), consistency=3)
    for k in (20, 21, 22, 23):  # 2 and 15 are far apart: the chain restarts at 22
        assert _detect(det, m, k) == []
    assert _detect(det, m, 24) == []


def test_candidates_below_the_neighbour_score_are_ignored() -> None:
    m = _map(30)
    answers = {k: [(2, 0.05)] for k in range(20, 26)}  # below the 0.1 of the neighbours
    det = LoopDetector(m, ScriptedRecognizer(answers), consistency=1)
    assert all(_detect(det, m, k) == [] for k in range(20, 26))


def test_covisible_neighbours_are_never_candidates() -> None:
    m = _map(30)
    answers = {20: [(19, 0.9), (21, 0.9)]}
    det = LoopDetector(m, ScriptedRecognizer(answers), consistency=1)
    assert _detect(det, m, 20) == []
