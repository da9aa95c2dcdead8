"""Dense reconstruction: TSDF meshes of RGB-D and stereo keyframes, map export, pictures.

Open3D is an optional extra (``pip install 'pyslam-service[dense]'``); it is imported
only inside the functions that need it, so the rest of the package (and the sparse
point export) works without it. Asking for a mesh or ``slam run --dense`` without it
raises :class:`Open3DMissingError`, whose message says how to install it.
"""

from __future__ import annotations

from types import ModuleType

from slam.errors import SlamError

INSTALL_HINT = ("pip install 'pyslam-service[dense]' (or pip install open3d); on "
                "Debian/Ubuntu Open3D also needs: apt-get install libusb-1.0-0")


class DenseError(SlamError):
    """Dense reconstruction cannot be done (no depth in the map, Open3D missing)."""

    exit_code = 10


class Open3DMissingError(DenseError):
    """Open3D (the ``dense`` extra) is not installed or cannot be imported."""


class NoDepthError(DenseError):
    """The map has no keyframe with depth (monocular, or a version 1 map file)."""


def require_open3d(what: str = "dense reconstruction") -> ModuleType:
    """The ``open3d`` module, or :class:`Open3DMissingError` naming ``what`` needed it."""
    try:
        import open3d
    except (ImportError, OSError) as exc:  # OSError: a shared library is missing
        raise Open3DMissingError(f"{what} needs Open3D, which cannot be imported ({exc}); "
                                 f"install it with: {INSTALL_HINT}") from exc
    return open3d


def open3d_available() -> bool:
    """Whether Open3D imports (imports it once)."""
    try:
        require_open3d()
    except Open3DMissingError:
        return False
    return True


__all__ = ["INSTALL_HINT", "DenseError", "NoDepthError", "Open3DMissingError",
           "open3d_available", "require_open3d"]
