"""``slam run`` stopped early (SIGTERM, Ctrl-C, a corrupt frame) still writes what it
computed, says so in one line and exits with its code; timestamps that do not increase
are reported (issue 12, finding 7). Runs on the bundled 140-frame TUM RGB-D sample."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from slam.cli.main import main
from slam.io.trajectory_io import read_tum_trajectory

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
PROGRESS = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "17/140 [" on stderr
STOPPED = re.compile(r"^slam: stopped by (SIGINT|SIGTERM) after (\d+) of (\d+) frames; "
                     r"wrote (\d+) poses to (\S+)$")
RUN_DEADLINE_S = 300.0  # a generous bound for one run of the sample on a slow, shared CPU


class SlamRun:
    """``slam -q run`` on the sample in a subprocess; a thread reads its stderr and notes
    how many frames the progress bar has shown."""

    def __init__(self, out: Path, *argv: str) -> None:
        self.out = out
        cmd = [sys.executable, "-m", "slam.cli.main", "-q", "run", "--source", f"tum:{SAMPLE}",
               "--sensor", "rgbd", "--out", str(out / "traj.txt"), "--stats",
               str(out / "stats.json"), *argv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._err = bytearray()
        self._frames = 0
        self._progress = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := os.read(self.proc.stderr.fileno(), 4096):
            with self._progress:
                self._err += chunk
                found = PROGRESS.findall(self._err[-200:].decode(errors="replace"))
                if found:
                    self._frames = max(self._frames, int(found[-1][0]))
                self._progress.notify_all()
        with self._progress:
            self._frames = -1  # stderr closed: the process ended
            self._progress.notify_all()

    def wait_for_frame(self, n: int) -> None:
        """Block until the progress bar shows at least ``n`` frames (fails if it ends first)."""
        with self._progress:
            ok = self._progress.wait_for(lambda: self._frames >= n or self._frames < 0,
                                         RUN_DEADLINE_S)
            assert ok and self._frames >= n, f"run ended before frame {n}: {self.stderr}"

    def finish(self) -> int:
        """Wait for the process and its stderr; its exit status."""
        code = self.proc.wait(RUN_DEADLINE_S)
        self._reader.join(RUN_DEADLINE_S)
        return code

    @property
    def stderr(self) -> str:
        return self._err.decode(errors="replace")

    def lines(self) -> list[str]:
        """Non-blank stderr lines, the progress bar's carriage returns as line breaks."""
        return [ln.strip() for ln in re.split(r"[\r\n]", self.stderr) if ln.strip()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(RUN_DEADLINE_S)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def slam_run(tmp_path: Path) -> Iterator[type[SlamRun]]:
    runs: list[SlamRun] = []

    class Tracked(SlamRun):
        def __init__(self, out: Path, *argv: str) -> None:
            super().__init__(out, *argv)
            runs.append(self)

    try:
        yield Tracked
    finally:
        for run in runs:
            run.close()


def check_stopped(run: SlamRun, sig: str, code: int) -> int:
    """Exit code, the one stop line, the poses file and the stats of a stopped run;
    the number of poses written."""
    assert run.finish() == code, run.stderr
    assert "Traceback" not in run.stderr and "SystemError" not in run.stderr, run.stderr
    match = STOPPED.match(run.lines()[-1])
    assert match is not None, run.stderr
    assert match.group(1) == sig
    read, total, wrote = (int(match.group(i)) for i in (2, 3, 4))
    assert 0 < wrote <= read < total
    traj = read_tum_trajectory(Path(match.group(5)))
    assert len(traj) == wrote and np.all(np.diff(traj.stamps) > 0)
    stats = json.loads((run.out / "stats.json").read_text())
    assert stats["stopped"] == sig.lower() and stats["completed"] is False
    assert stats["frames"] == wrote
    return wrote


@pytest.mark.timeout(600)
def test_sigterm_mid_run_writes_the_poses_so_far(tmp_path: Path, slam_run: type[SlamRun]) -> None:
    run = slam_run(tmp_path)
    run.wait_for_frame(20)
    run.proc.send_signal(signal.SIGTERM)
    assert check_stopped(run, "SIGTERM", 128 + signal.SIGTERM) >= 20


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ctrl_c_ten_times_never_gives_a_traceback(
    tmp_path: Path, slam_run: type[SlamRun]
) -> None:
    """Once in six tries a SIGINT used to end in a Numba ``SystemError`` traceback."""
    for i in range(10):
        out = tmp_path / f"try{i}"
        run = slam_run(out)
        run.wait_for_frame(2 + 3 * i)
        run.proc.send_signal(signal.SIGINT)
        check_stopped(run, "SIGINT", 128 + signal.SIGINT)


@pytest.mark.timeout(600)
def test_a_second_signal_aborts_at_once(tmp_path: Path, slam_run: type[SlamRun]) -> None:
    run = slam_run(tmp_path)
    run.wait_for_frame(5)
    run.proc.send_signal(signal.SIGTERM)
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()
    assert code in (-signal.SIGINT, -signal.SIGTERM), run.stderr  # died of the second one
    assert "Traceback" not in run.stderr
    assert re.match(r"slam: aborted by a second SIG(INT|TERM); nothing more written$",
                    run.lines()[-1]), run.stderr


def copy_sample(root: Path, corrupt: int | None = None, duplicate: tuple[int, ...] = ()) -> Path:
    """The sample under ``root``, images linked; the rgb image of frame ``corrupt`` replaced
    by garbage; the lines of frames ``duplicate`` repeated in rgb.txt and depth.txt."""
    folder = root / SAMPLE.name
    folder.mkdir(parents=True)
    (folder / "depth").symlink_to(SAMPLE / "depth")
    (folder / "rgb").mkdir()
    shutil.copy(SAMPLE / "groundtruth.txt", folder)
    for name in ("rgb.txt", "depth.txt"):
        lines = (SAMPLE / name).read_text().splitlines()
        head = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if not ln.startswith("#")]
        body = [x for i, ln in enumerate(body) for x in [ln] * (2 if i in duplicate else 1)]
        (folder / name).write_text("\n".join(head + body) + "\n")
    rgb_body = [ln for ln in (SAMPLE / "rgb.txt").read_text().splitlines()
                if not ln.startswith("#")]
    for i, ln in enumerate(rgb_body):
        rel = ln.split()[1]
        if i == corrupt:
            (folder / rel).write_bytes(b"\xff\xd8\xff\xe0 garbage, not a JPEG")
        else:
            (folder / rel).symlink_to(SAMPLE / rel)
    return folder


def run_copy(tmp_path: Path, folder: Path, *argv: str) -> int:
    return main(["-q", "run", "--source", f"tum:{folder}", "--sensor", "rgbd", "--out",
                 str(tmp_path / "traj.txt"), "--stats", str(tmp_path / "stats.json"),
                 "--no-progress", *argv])


@pytest.mark.timeout(600)
def test_a_corrupt_frame_mid_run_exits_3_with_the_poses_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_sample(tmp_path / "data", corrupt=30)
    assert run_copy(tmp_path, folder) == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("slam: error: cannot decode image"), lines
    assert lines[0].endswith(f"stopped after 30 of 140 frames, wrote 30 poses to "
                             f"{tmp_path / 'traj.txt'}")
    assert len(read_tum_trajectory(tmp_path / "traj.txt")) == 30
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["stopped"], stats["completed"], stats["frames"]) == ("data_error", False, 30)
    assert stats["ate_rmse_m"] is not None


@pytest.mark.timeout(600)
def test_duplicated_stamps_are_skipped_with_one_warning_or_refused_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_sample(tmp_path / "data", duplicate=(10, 20))
    assert run_copy(tmp_path, folder, "--max-frames", "40") == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "WARNING" in ln]
    assert len(warnings) == 1 and "2 duplicate, 0 out of order" in warnings[0], warnings
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["frames_duplicate_stamp"], stats["frames_out_of_order"]) == (2, 0)
    assert stats["frames"] == 38 and stats["completed"] is True
    assert np.all(np.diff(read_tum_trajectory(tmp_path / "traj.txt").stamps) > 0)

    assert run_copy(tmp_path, folder, "--max-frames", "40", "--strict") == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "frame 11 repeats the timestamp" in err[0], err
    assert len(read_tum_trajectory(tmp_path / "traj.txt")) == 11
