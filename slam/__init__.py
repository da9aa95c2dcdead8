"""Real-time visual SLAM: tracking, local mapping and bundle adjustment in Python."""

__version__ = "0.1.0"
