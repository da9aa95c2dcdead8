"""Fuzzed map files: every mutant of a real map is loaded or refused with exit code 8,
and loading one never takes much more memory than loading the real map.

Usage: ``python -m benchmarks.fuzz_maps [--n 10000] [--map FILE] [--workers 2]
[--seed 0] [--cli-sample 20] [--out results/fuzz_maps.json]``.

The real map is ``--map`` or, by default, the map of the bundled TUM sample
(``slam run --source tum:datasets/sample/rgbd_dataset_freiburg1_rpy --sensor rgbd
--save-map``). Mutants (``tests.map.map_edit.mutate``: bit flips, byte runs, cuts,
insertions and deletions, msgpack-level edits of header fields, scalars, array
elements, dtypes, shapes, array data and whole sections; checksums recomputed so that
most mutations reach the validation behind them) are loaded in ``--workers`` worker
processes (each replaced after 200 loads). Each load is one of:

- ``loaded``: a valid map came back;
- ``refused``: :class:`~slam.errors.MapFileError` (exit code 8) from a check;
- ``internal``: MapFileError from the loader's safety net (an unexpected exception,
  still exit 8, but a check is missing);
- ``other``: any other exception (a bug: the CLI would print a traceback).

Memory: before each load the worker gives freed memory back (``malloc_trim``) and
resets its peak resident set size (``/proc/self/clear_refs``), after it reads the
peak (``VmHWM``), so every load has its own peak RSS (``growth``: the peak minus the
RSS before the load). The real map is loaded the same way (``--legit-loads`` times, the
largest peak counts); target: every mutant's peak <= 2x that. ``--cli-sample N`` runs
``slam run --load-map`` on N refused mutants to check the exit code end to end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import json
import logging
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
PEAK_RATIO_TARGET = 2.0
WORKER_LOADS = 200  # loads per worker process before it is replaced
log = logging.getLogger("benchmarks.fuzz_maps")

_data: bytes = b""  # the real map, in each worker


def _status_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def _reset_peak() -> float:
    """Give freed memory back to the system, reset the peak RSS; the RSS now (MB)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") / 1024


def _init(path: str) -> None:
    global _data
    logging.disable(logging.CRITICAL)
    _data = Path(path).read_bytes()


def _load(data: bytes) -> tuple[str, str, float, float]:
    """(outcome, message, RSS before and peak RSS while loading ``data`` in MB)."""
    from slam.errors import MapFileError
    from slam.map.persistence import load_map_bytes

    before = _reset_peak()
    try:
        load_map_bytes(data, "mutant.map", sensor="rgbd")
        outcome, msg = "loaded", ""
    except MapFileError as exc:
        internal = "internal error" in str(exc)
        outcome, msg = ("internal" if internal else "refused"), str(exc)
        assert exc.exit_code == 8
    except Exception as exc:  # a bug: reported, not raised
        outcome, msg = "other", f"{type(exc).__name__}: {exc}"
    return outcome, msg[:300], before, _status_kb("VmHWM") / 1024


def _one(job: tuple[int, str, int]) -> dict[str, Any]:
    from tests.map.map_edit import mutate

    i, kind, seed = job
    mutant = _data if kind == "legit" else mutate(_data, kind, np.random.default_rng(seed))
    outcome, msg, before, peak = _load(mutant)
    return {"i": i, "kind": kind, "seed": seed, "outcome": outcome, "msg": msg,
            "before_mb": before, "peak_mb": peak, "bytes": len(mutant)}


def make_sample_map(out: Path) -> Path:
    """The map of the bundled TUM sample (RGB-D), made by ``slam run``."""
    cmd = [sys.executable, "-m", "slam.cli.main", "-q", "run", "--source", f"tum:{SAMPLE}",
           "--sensor", "rgbd", "--out", str(out.with_suffix(".txt")), "--no-progress",
           "--save-map", str(out)]
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


def run_jobs(map_path: Path, jobs: list[tuple[int, str, int]], workers: int
             ) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    results = []
    t0 = time.monotonic()
    with ctx.Pool(workers, initializer=_init, initargs=(str(map_path),),
                  maxtasksperchild=WORKER_LOADS) as pool:
        for n, r in enumerate(pool.imap_unordered(_one, jobs, chunksize=4), 1):
            results.append(r)
            if n % 500 == 0:
                log.warning("%d/%d loads (%.0f s)", n, len(jobs), time.monotonic() - t0)
    return results


def cli_check(map_path: Path, results: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """``slam run --load-map`` on ``n`` refused mutants: exit codes and stderr lines."""
    from tests.map.map_edit import mutate

    data = map_path.read_bytes()
    codes: collections.Counter[int] = collections.Counter()
    one_line = 0
    refused = [r for r in results if r["outcome"] == "refused"][:n]
    with tempfile.TemporaryDirectory() as tmp:
        for r in refused:
            path = Path(tmp) / "mutant.map"
            path.write_bytes(mutate(data, r["kind"], np.random.default_rng(r["seed"])))
            proc = subprocess.run(
                [sys.executable, "-m", "slam.cli.main", "-q", "run", "--source",
                 f"tum:{SAMPLE}", "--sensor", "rgbd", "--max-frames", "3", "--no-progress",
                 "--out", str(Path(tmp) / "t.txt"), "--load-map", str(path)],
                cwd=REPO, capture_output=True, text=True, timeout=300)
            codes[proc.returncode] += 1
            lines = proc.stderr.strip().splitlines()
            one_line += len(lines) == 1 and lines[0].startswith("slam: error: ")
    return {"runs": len(refused), "exit_codes": dict(codes), "one_line_errors": one_line}


def summarize(results: list[dict[str, Any]], legit: list[dict[str, Any]]) -> dict[str, Any]:
    counts = collections.Counter(r["outcome"] for r in results)
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], collections.Counter())[r["outcome"]] += 1  # type: ignore[index]
    legit_peak = max(r["peak_mb"] for r in legit)
    legit_growth = max(r["peak_mb"] - r["before_mb"] for r in legit)
    worst = max(results, key=lambda r: r["peak_mb"])
    growth = max(r["peak_mb"] - r["before_mb"] for r in results)
    bad = [r for r in results if r["outcome"] in ("internal", "other")]
    return {
        "mutants": len(results), "outcomes": dict(counts),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "legit_peak_rss_mb": round(legit_peak, 1),
        "mutant_peak_rss_mb": {"max": round(worst["peak_mb"], 1),
                               "p99": round(float(np.percentile(
                                   [r["peak_mb"] for r in results], 99)), 1),
                               "median": round(float(np.median(
                                   [r["peak_mb"] for r in results])), 1)},
        "worst_mutant": {k: worst[k] for k in ("kind", "seed", "outcome", "msg")},
        "peak_ratio": round(worst["peak_mb"] / legit_peak, 3),
        "legit_growth_mb": round(legit_growth, 1), "mutant_growth_mb_max": round(growth, 1),
        "peak_ratio_target": PEAK_RATIO_TARGET,
        "pass": not bad and worst["peak_mb"] <= PEAK_RATIO_TARGET * legit_peak,
        "failures": bad[:20],
    }


def main(argv: list[str] | None = None) -> int:
    from tests.map.map_edit import MUTATIONS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="mutants (default %(default)s)")
    p.add_argument("--map", type=Path, help="a real map (default: made from the TUM sample)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legit-loads", type=int, default=8)
    p.add_argument("--cli-sample", type=int, default=0, metavar="N")
    p.add_argument("--out", type=Path, default=REPO / "results" / "fuzz_maps.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        map_path = args.map or make_sample_map(Path(tmp) / "sample.map")
        rng = np.random.default_rng(args.seed)
        jobs = [(i, MUTATIONS[i % len(MUTATIONS)], int(rng.integers(0, 2**32)))
                for i in range(args.n)]
        t0 = time.monotonic()
        legit = run_jobs(map_path, [(-1, "legit", 0)] * args.legit_loads, args.workers)
        results = run_jobs(map_path, jobs, args.workers)
        summary = summarize(results, legit)
        summary["seconds"] = round(time.monotonic() - t0, 1)
        summary["map_bytes"] = map_path.stat().st_size
        if args.cli_sample:
            summary["cli"] = cli_check(map_path, results, args.cli_sample)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("by_kind", "failures")},
                     indent=2))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
