"""``slam export``: a map file's sparse points and dense mesh as PLY, and a picture."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slam.errors import ConfigError, SlamError

log = logging.getLogger(__name__)


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``export`` subparser to ``commands`` (an argparse subparsers action)."""
    p = commands.add_parser(
        "export",
        parents=list(parents),
        help="export a map's points and dense mesh as PLY (mesh: RGB-D/stereo maps, Open3D)",
        description="Write the sparse map points (colours, normals) as a PLY point cloud "
        "and/or fuse the depth keyframes at their optimised poses into a TSDF mesh (PLY, "
        "with a PNG picture beside it). Meshes need the 'dense' extra (Open3D) and a map "
        "saved with depth images (RGB-D or stereo, map format 2).",
    )
    p.add_argument("--map", required=True, type=Path, metavar="MAP",
                   help="map file, or a run's output folder holding one .map file")
    p.add_argument("--points", type=Path, metavar="PLY", help="write the map points here")
    p.add_argument("--mesh", type=Path, metavar="PLY",
                   help="write the TSDF mesh here (and a picture, <name>.png)")
    p.add_argument("--voxel", type=float, metavar="M",
                   help="TSDF voxel size in metres (default 0.01); also down-samples "
                   "the points to one per voxel when given")
    p.add_argument("--depth-max", type=float, default=4.0, metavar="M",
                   help="ignore depth beyond this (metres; default 4)")
    p.add_argument("--no-clean", action="store_true",
                   help="keep the points' statistical outliers")
    p.add_argument("--no-picture", action="store_true", help="no PNG beside the mesh")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    """Run ``slam export``; see :func:`register` for the options."""
    from slam.dense import require_open3d
    from slam.dense.export import export_mesh, export_points, find_map_file
    from slam.dense.tsdf import TsdfParams
    from slam.map.persistence import load_map

    if args.points is None and args.mesh is None:
        raise ConfigError("nothing to export: give --points and/or --mesh")
    if args.voxel is not None and not args.voxel > 0:
        raise ConfigError(f"--voxel must be positive, got {args.voxel}")
    params = TsdfParams(voxel_m=args.voxel or 0.01, depth_max_m=args.depth_max)
    if args.mesh is not None or args.voxel is not None:
        require_open3d("--mesh" if args.mesh is not None else "--voxel")
    path = find_map_file(args.map)
    loaded = load_map(path)
    for out in (args.points, args.mesh):
        if out is not None and not out.parent.is_dir():
            raise SlamError(f"cannot write {out}: folder {out.parent} does not exist")
    if args.points is not None:
        n = export_points(loaded.map, loaded.calibration.camera, args.points, args.voxel,
                          clean=not args.no_clean)
        print(f"{args.points}: {n} map points", flush=True)
    if args.mesh is not None:
        what = (f"map file {path} ({loaded.sensor}, format version "
                f"{loaded.info.format_version})")
        report = export_mesh(loaded.map, loaded.calibration, args.mesh, params,
                             picture=not args.no_picture, what=what)
        line = (f"{report.path}: {report.n_vertices} vertices, {report.n_triangles} "
                f"triangles from {report.n_keyframes} keyframes")
        if report.png is not None:
            line += f"; picture {report.png} ({report.renderer})"
        print(line, flush=True)
    return 0
