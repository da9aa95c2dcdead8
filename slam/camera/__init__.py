"""Camera models: pinhole with radial-tangential distortion, stereo and RGB-D calibration."""

from slam.camera.pinhole import Calibration, PinholeCamera

__all__ = ["Calibration", "PinholeCamera"]
