"""Numba optimisation kernels (pose-only, local bundle adjustment) and the g2o reference.

``slam.optim.g2o_ba`` (the g2opy reference solver) is imported on demand, not here.
"""

from slam.optim.local_ba import BAProblem, BAResult, problem_with_estimate, solve_local_ba
from slam.optim.pose_only import optimize_pose

__all__ = ["BAProblem", "BAResult", "optimize_pose", "problem_with_estimate", "solve_local_ba"]
