"""``slam vocab``: train a place-recognition vocabulary (``build``) or describe one (``info``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = logging.getLogger(__name__)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``vocab`` subparser (``build``, ``info``) to ``commands``."""
    p = commands.add_parser(
        "vocab",
        parents=list(parents),
        help="train or inspect a place-recognition vocabulary",
        description="Bag-of-binary-words vocabulary of ORB descriptors (k-majority tree).",
    )
    sub = p.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build",
        parents=list(parents),
        help="train a vocabulary on the ORB features of image sources",
        description="Extract ORB on every N-th frame of each source, cluster the "
        "descriptors into a k-majority tree (k branches, depth levels) and save it.",
    )
    b.add_argument("--data", required=True, nargs="+", metavar="URI",
                   help="sources to read (tum:DIR, kitti:DIR, images:DIR, ...)")
    b.add_argument("--out", required=True, type=Path, metavar="FILE", help="vocabulary file")
    b.add_argument("--k", type=_positive, default=10, help="branching factor (default 10)")
    b.add_argument("--depth", type=_positive, default=4, help="tree depth L (default 4)")
    b.add_argument("--every", type=_positive, default=1, metavar="N",
                   help="use every N-th frame of each source")
    b.add_argument("--max-images", type=_positive, metavar="M",
                   help="at most M images from each source")
    b.add_argument("--features", type=_positive, default=1000, help="ORB features per image")
    b.add_argument("--seed", type=int, default=0, help="seed of the clustering")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=execute_build)
    i = sub.add_parser("info", parents=list(parents), help="check a vocabulary file and "
                       "print its header", description="Load a vocabulary file (checksum "
                       "included) and print what it holds.")
    i.add_argument("file", type=Path, metavar="FILE")
    i.set_defaults(func=execute_info)


def image_descriptors(uri: str, every: int, max_images: int | None, n_features: int,
                      progress: bool = True) -> Iterator[NDArray[np.uint8]]:
    """ORB descriptors (N, 32) uint8 of every ``every``-th frame of the source ``uri``."""
    from tqdm import tqdm

    from slam.config import FeatureConfig
    from slam.features.orb import OrbExtractor
    from slam.io.sources import open_source

    source = open_source(uri, "mono")
    extractor = OrbExtractor(FeatureConfig.model_validate({}), n_features)
    used = 0
    try:
        frames = tqdm(source, total=source.length, desc=source.name, unit="frame",
                      disable=not progress, leave=False)
        for frame in frames:
            if frame.index % every:
                continue
            yield extractor.extract(frame.image).descriptors
            used += 1
            if max_images is not None and used >= max_images:
                break
    finally:
        source.close()
    log.info("%s: %d images", uri, used)


def execute_build(args: argparse.Namespace) -> int:
    """Run ``slam vocab build``; see :func:`register` for the options."""
    import time

    from slam.place.vocabulary import Vocabulary

    t0 = time.perf_counter()
    per_image: list[NDArray[np.uint8]] = []
    for uri in args.data:
        per_image.extend(image_descriptors(uri, args.every, args.max_images, args.features,
                                           progress=not args.no_progress))
    n_desc = sum(len(d) for d in per_image)
    vocab = Vocabulary.train(per_image, k=args.k, depth=args.depth, seed=args.seed)
    metadata = {"sources": list(args.data), "every": args.every, "max_images": args.max_images,
                "features": args.features, "seed": args.seed, "n_images": len(per_image),
                "n_descriptors": n_desc}
    vocab.save(args.out, metadata)
    print(f"wrote {args.out}: k={vocab.k} depth={vocab.depth}, {vocab.n_words} words, "
          f"{vocab.n_nodes} nodes, from {n_desc} descriptors of {len(per_image)} images "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def execute_info(args: argparse.Namespace) -> int:
    """Run ``slam vocab info``: load the file (all checks) and print its header."""
    from slam.place.vocabulary import Vocabulary

    vocab = Vocabulary.load(args.file)
    header = Vocabulary.read_header(args.file)
    print(f"{args.file}: {header['kind']} v{header['version']}, k={vocab.k} "
          f"depth={vocab.depth}, {vocab.n_words} words, {vocab.n_nodes} nodes")
    for key, value in sorted(header.get("metadata", {}).items()):
        print(f"  {key}: {value}")
    return 0
