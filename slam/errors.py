"""The domain's exception hierarchy.

Every error a user can cause (bad files, bad calibration, wrong sensor) is a
``SlamError``; the CLI turns these into a one-line message and an exit code.
"""

from __future__ import annotations


class SlamError(Exception):
    """Base class of all errors this package raises on purpose."""

    exit_code: int = 1


class ConfigError(SlamError):
    """A configuration value or file is invalid."""

    exit_code = 2


class CalibrationError(ConfigError):
    """A calibration file is missing, malformed or inconsistent."""


class DataSourceError(SlamError):
    """A data source URI, folder or file is missing or malformed."""

    exit_code = 3


class ImageError(DataSourceError):
    """An image could not be decoded or has the wrong size or type."""


class SensorError(SlamError):
    """The requested sensor does not fit the source (e.g. stereo on a mono video)."""

    exit_code = 4


class GeometryError(SlamError):
    """A geometric estimation failed (degenerate configuration, too few points)."""

    exit_code = 5


class TrackingError(SlamError):
    """Tracking could not initialise or recover."""

    exit_code = 6


class EvaluationError(SlamError):
    """Trajectory evaluation failed (no overlap with ground truth, bad file)."""

    exit_code = 7


class MapFileError(SlamError):
    """A map file is missing, corrupt, truncated, of another version or another camera."""

    exit_code = 8


class VocabularyError(SlamError):
    """A place-recognition vocabulary file is missing, corrupt or of the wrong kind."""

    exit_code = 9
