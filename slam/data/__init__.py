"""Runtime data shipped inside the package, found with :mod:`importlib.resources`.

============================  =========================================================
``vocab/orb_k10_L4.npz``      the bag-of-binary-words vocabulary (``place.vocabulary``
                              empty); ``vocab/README.md`` says how it was built and its
                              licence
``models/descriptor.onnx``    the learned binary descriptor (``features.descriptor_model``
                              empty), its ``.json`` beside it
``models/embedding.onnx``     the learned place embedding (``place.embedding_model``
                              empty), its ``.json`` beside it; ``models/MODEL_CARD.md``
                              and the training logs ``models/*.metrics.jsonl``
============================  =========================================================

``pyproject.toml`` lists these files as package data, so an installed wheel has them
inside ``slam/data/`` just as a checkout does: nothing is looked up relative to the
checkout or the working directory.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from importlib import resources
from pathlib import Path

VOCAB_DIR = "vocab"
MODELS_DIR = "models"

_extracted = contextlib.ExitStack()  # temporary copies, when the package is not on disk
_extracted_lock = threading.Lock()
atexit.register(_extracted.close)


def data_file(*parts: str) -> Path:
    """Path on disk of the shipped file ``parts`` under ``slam/data`` (say ``("vocab",
    "orb_k10_L4.npz")``); it may not exist (callers report a missing file their way).

    A package installed from a wheel or a checkout is a folder on disk and the path points
    into it; a package imported from a zip archive gets a temporary copy of the file that
    lasts until the process exits.
    """
    resource = resources.files(__name__).joinpath(*parts)
    if isinstance(resource, Path):
        return resource
    with _extracted_lock:
        return _extracted.enter_context(resources.as_file(resource))
