"""The system's face: its events rebuild the map, status and snapshot tell the truth,
reset and close leave nothing behind."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from slam.config import load_config
from slam.events import Event, MapDelta, MapReset
from slam.synthetic.source import make_synthetic_source
from slam.system import SlamSystem

N_FRAMES = 80


def _apply(events: list[Event]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Points (id -> xyz) and keyframes (id -> T_world_cam) the events describe."""
    points: dict[int, np.ndarray] = {}
    keyframes: dict[int, np.ndarray] = {}
    for e in events:
        if isinstance(e, MapReset):
            points.clear()
            keyframes.clear()
        elif isinstance(e, MapDelta):
            for pid in e.removed_ids.tolist():
                del points[pid]  # a removed point was announced before
            points.update(zip(e.added_ids.tolist(), e.added_xyz, strict=True))
            points.update(zip(e.moved_ids.tolist(), e.moved_xyz, strict=True))
            for info in e.keyframes_added + e.keyframes_moved:
                keyframes[info.id] = info.T_world_cam
            for kf_id in e.keyframes_culled.tolist():
                del keyframes[kf_id]
    return points, keyframes


@pytest.mark.timeout(600)
@pytest.mark.parametrize("threads", [True, False])
def test_events_rebuild_the_map_exactly(threads: bool) -> None:
    source = make_synthetic_source("loop", "rgbd", n_frames=N_FRAMES)
    assert source.calibration is not None
    cfg = load_config(overrides={"system.threads": threads})
    with SlamSystem(cfg, source.calibration, "rgbd") as system:
        sub = system.events.subscribe(maxsize=100_000)
        for frame in source:
            system.process(frame)
        system.finish()
        events = []
        while (e := sub.get(0.0)) is not None:
            events.append(e)
        assert not sub.overflowed
        snap = system.snapshot(points=True)
        status = system.status()
    points, keyframes = _apply(events)
    # Inline mapping sends tracking's keyframe along with mapping's own changes.
    assert "mapping" in {e.source for e in events if isinstance(e, MapDelta)}
    assert sorted(points) == snap.point_ids.tolist()
    np.testing.assert_array_equal(np.array([points[p] for p in sorted(points)]),
                                  snap.point_xyz)
    assert sorted(keyframes) == [k.id for k in snap.keyframes]
    for info in snap.keyframes:
        np.testing.assert_allclose(keyframes[info.id], info.T_world_cam, atol=1e-12)
    assert status.keyframes == len(snap.keyframes) and status.map_points == len(points)
    assert len(snap.trajectory) == N_FRAMES


@pytest.mark.timeout(600)
def test_reset_announces_itself_and_close_stops_every_thread() -> None:
    source = make_synthetic_source("sideways", "rgbd", n_frames=20)
    assert source.calibration is not None
    before = set(threading.enumerate())
    system = SlamSystem(load_config(), source.calibration, "rgbd")
    sub = system.events.subscribe()
    for frame in source:
        system.process(frame)
    system.flush()
    assert system.status().keyframes > 0
    system.reset()
    assert system.status().keyframes == 0 and len(system.trajectory()) == 0
    kinds = []
    while (e := sub.get(0.0)) is not None:
        kinds.append(type(e).__name__)
    assert "MapReset" in kinds and kinds.index("MapReset") > kinds.index("MapDelta")
    system.close()
    system.close()  # idempotent
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []
