"""Trajectory evaluation (evo metrics) and plots.

``slam.eval.metrics`` holds the numbers, ``slam.eval.plot`` the figures; evo and
matplotlib are imported only when a function needs them.
"""

from slam.eval.metrics import AteResult, ErrorStats, RpeResult, ate, rpe

__all__ = ["AteResult", "ErrorStats", "RpeResult", "ate", "rpe"]
