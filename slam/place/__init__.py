"""Place recognition for loop detection and relocalisation.

The system uses :class:`PlaceRecognizer` (made by :func:`make_place_recognizer` from
``cfg.place``); :class:`BowPlaceRecognizer` is the bag of binary words over our own
k-majority :class:`Vocabulary` with a :class:`KeyframeDatabase` inverted index.
"""

from slam.place.database import KeyframeDatabase
from slam.place.factory import make_place_recognizer
from slam.place.recognizer import (
    BowPlaceDescriptor,
    BowPlaceRecognizer,
    PlaceDescriptor,
    PlaceRecognizer,
    default_vocabulary_path,
    load_vocabulary,
)
from slam.place.vocabulary import BowVector, FeatureVector, Vocabulary

__all__ = [
    "BowPlaceDescriptor",
    "BowPlaceRecognizer",
    "BowVector",
    "FeatureVector",
    "KeyframeDatabase",
    "PlaceDescriptor",
    "PlaceRecognizer",
    "Vocabulary",
    "default_vocabulary_path",
    "load_vocabulary",
    "make_place_recognizer",
]
