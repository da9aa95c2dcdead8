"""Numba optimisation kernels (pose-only, local bundle adjustment) and the g2o reference."""

from slam.optim.pose_only import optimize_pose

__all__ = ["optimize_pose"]
