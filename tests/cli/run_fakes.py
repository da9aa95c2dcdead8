"""What the ``slam run`` tests share: a fake source and a fake system (frames are
indices, poses the ground truth in another world), and how to call ``main``."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import slam
import slam.io.sources
import slam.replay
from slam.cli.main import main
from slam.config import SlamConfig
from slam.geometry.lie import se3_exp, se3_inv
from slam.io.types import Trajectory

REPO = Path(__file__).resolve().parents[2]
G = se3_exp(np.array([0.5, -1.0, 2.0, 0.1, 0.7, -0.2]))  # world of the estimate -> gt world


def ground_truth(n: int = 40) -> Trajectory:
    poses = [
        se3_exp(np.array([0.1 * i, np.sin(0.3 * i), 0.02 * i, 0.05 * i, 0.1, 0.0]))
        for i in range(n)
    ]
    return Trajectory(1000.0 + np.arange(n) / 30.0, np.stack(poses))


class FakeSource:
    """Just the FrameSource surface the CLI uses; frames are their indices."""

    def __init__(
        self,
        gt: Trajectory | None,
        sensors: tuple[str, ...] = ("mono", "rgbd"),
        calibration: object | None = "calibration",
    ) -> None:
        self.name = "fake:seq"
        self.sensors = frozenset(sensors)
        self.calibration = calibration
        self.stamps = ground_truth().stamps
        self._gt = gt
        self.closed = False

    @property
    def length(self) -> int:
        return len(self.stamps)

    def __len__(self) -> int:
        return len(self.stamps)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.stamps)))

    def ground_truth(self) -> Trajectory | None:
        return self._gt

    def close(self) -> None:
        self.closed = True


class FakeSystem:
    """Stands in for ``slam.replay.run_offline``: 'tracks' every frame at the gt pose in
    another world."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.track_ms = np.linspace(10.0, 50.0, 40)

    def run_offline(
        self,
        source: Any,
        sensor: str,
        calibration: Any,
        config: SlamConfig,
        *,
        realtime: bool = False,
        progress: bool = True,
        initial_map: Any = None,
        localization_only: bool = False,
        save_map: Any = None,
        **options: Any,
    ) -> Any:
        frames = list(source)
        self.calls.append(
            dict(
                sensor=sensor,
                calibration=calibration,
                config=config,
                realtime=realtime,
                progress=progress,
                frames=len(frames),
                initial_map=initial_map,
                localization_only=localization_only,
                save_map=save_map,
            )
        )
        gt = ground_truth()
        poses = se3_inv(G)[None] @ gt.T_world_cam[: len(frames)]
        if sensor == "mono":
            poses[:, :3, 3] *= 0.5
        stats = dict(
            frames=len(frames),
            tracked_frames=len(frames),
            keyframes=4,
            map_points=900,
            wall_s=2.0,
            fps=len(frames) / 2.0,
            track_ms_median=0.0,
            track_ms_p95=0.0,
        )
        return types.SimpleNamespace(
            trajectory=Trajectory(gt.stamps[: len(frames)], poses),
            stats=stats,
            track_ms=self.track_ms[: len(frames)],
            loops=[],
        )


def use_source(monkeypatch: pytest.MonkeyPatch, source: FakeSource) -> None:
    monkeypatch.setattr(slam.io.sources, "open_source", lambda uri, sensor, calib, fps: source)


def run_fake(tmp_path: Path, sensor: str, *extra: str) -> int:
    return main(
        [
            "-q",
            "run",
            "--source",
            "fake:seq",
            "--sensor",
            sensor,
            "--out",
            str(tmp_path / "traj.txt"),
            "--stats",
            str(tmp_path / "stats.json"),
            "--no-progress",
            *extra,
        ]
    )


def assert_one_error_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("slam: error: "), err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def fake_error_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: FakeSource, *argv: str
) -> int:
    use_source(monkeypatch, source)
    return main(
        [
            "-q",
            "run",
            "--source",
            "fake:seq",
            "--out",
            str(tmp_path / "t.txt"),
            "--no-progress",
            *argv,
        ]
    )


def real_run(tmp_path: Path, source: str, sensor: str, *argv: str) -> int:
    return main(
        [
            "-q",
            "run",
            "--source",
            source,
            "--sensor",
            sensor,
            "--out",
            str(tmp_path / "out" / "t.txt"),
            "--no-progress",
            *argv,
        ]
    )
