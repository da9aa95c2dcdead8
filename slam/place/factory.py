"""The place recognizer that ``place.method`` names.

The interface (:mod:`slam.place.recognizer`) knows no implementation; this module knows
them all: the bag of binary words over a vocabulary file, and the learned global
embedding (:mod:`slam.place.learned`, which implements the interface).
"""

from __future__ import annotations

from slam.config import PlaceConfig
from slam.errors import ConfigError
from slam.place.learned import LearnedPlaceRecognizer
from slam.place.recognizer import BowPlaceRecognizer, PlaceRecognizer, load_vocabulary


def make_place_recognizer(cfg: PlaceConfig) -> PlaceRecognizer:
    """The recognizer ``cfg.method`` names (``bow`` over ``cfg.vocabulary``, empty for
    the shipped vocabulary; ``learned`` over ``cfg.embedding_model``, empty for the
    shipped model). Raises ConfigError or VocabularyError."""
    if cfg.method == "bow":
        return BowPlaceRecognizer(load_vocabulary(cfg.vocabulary),
                                  max_candidates=cfg.max_candidates)
    if cfg.method == "learned":
        return LearnedPlaceRecognizer(cfg.embedding_model or None,
                                      max_candidates=cfg.max_candidates)
    raise ConfigError(f"unknown place.method {cfg.method!r}")
