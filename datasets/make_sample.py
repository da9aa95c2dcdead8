"""Cut the bundled sample out of a full TUM RGB-D sequence.

    python datasets/make_sample.py            # defaults: the shared freiburg1_rpy copy

Copies ``count`` consecutive colour frames from ``start`` byte for byte (no
re-encoding), the depth images whose stamps fall in the same span (± 20 ms, so
every colour frame can find its partner), the ground truth in the span ± a
margin, the list files with their original headers, and the settings file.
Fails if the result would exceed ``--max-mb``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger("make_sample")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO / ".." / "shared" / "datasets" / "tum" / "rgbd_dataset_freiburg1_rpy"
DEFAULT_DST = REPO / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
ASSOCIATION_S = 0.02


def split_list(path: Path) -> tuple[list[str], list[tuple[float, str]]]:
    """Header lines and ``(stamp, line)`` data lines of a TUM text file."""
    header: list[str] = []
    rows: list[tuple[float, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            header.append(line)
        else:
            rows.append((float(line.split()[0]), line))
    return header, rows


def write_list(path: Path, header: list[str], lines: list[str]) -> None:
    path.write_text("\n".join([*header, *lines]) + "\n")


def copy_listed(src: Path, dst: Path, lines: list[str]) -> int:
    """Copy the files named in the second column of ``lines``; total bytes."""
    total = 0
    for line in lines:
        rel = line.split()[1]
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
        total += (dst / rel).stat().st_size
    return total


def make_sample(
    src: Path, dst: Path, start: int, count: int, gt_margin_s: float, max_mb: float
) -> int:
    """Write the sample into ``dst`` (replacing an earlier one); total bytes written."""
    rgb_header, rgb_rows = split_list(src / "rgb.txt")
    depth_header, depth_rows = split_list(src / "depth.txt")
    gt_header, gt_rows = split_list(src / "groundtruth.txt")
    rgb = rgb_rows[start : start + count]
    if len(rgb) < count:
        raise SystemExit(f"{src} has only {len(rgb_rows)} colour frames")
    t0, t1 = rgb[0][0], rgb[-1][0]
    depth = [r for r in depth_rows if t0 - ASSOCIATION_S <= r[0] <= t1 + ASSOCIATION_S]
    gt = [r for r in gt_rows if t0 - gt_margin_s <= r[0] <= t1 + gt_margin_s]
    if dst.exists():
        if not (dst / "rgb.txt").is_file():
            raise SystemExit(f"refusing to replace {dst}: it does not look like a sample")
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    total = copy_listed(src, dst, [line for _, line in rgb])
    total += copy_listed(src, dst, [line for _, line in depth])
    write_list(dst / "rgb.txt", rgb_header, [line for _, line in rgb])
    write_list(dst / "depth.txt", depth_header, [line for _, line in depth])
    write_list(dst / "groundtruth.txt", gt_header, [line for _, line in gt])
    shutil.copyfile(src / "TUM1.yaml", dst / "TUM1.yaml")
    total += sum((dst / n).stat().st_size for n in ("rgb.txt", "depth.txt", "groundtruth.txt"))
    log.info(
        "%d colour, %d depth, %d ground-truth rows, %.2f s, %.1f MB",
        len(rgb), len(depth), len(gt), t1 - t0, total / 1e6,
    )
    if total > max_mb * 1e6:
        shutil.rmtree(dst)
        raise SystemExit(f"sample would be {total / 1e6:.1f} MB > {max_mb} MB; lower --count")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--dst", type=Path, default=DEFAULT_DST)
    parser.add_argument("--start", type=int, default=0, help="first colour frame")
    parser.add_argument("--count", type=int, default=140, help="number of colour frames")
    parser.add_argument("--gt-margin", type=float, default=0.1, help="seconds of extra GT")
    parser.add_argument("--max-mb", type=float, default=25.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_sample(args.src, args.dst, args.start, args.count, args.gt_margin, args.max_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
