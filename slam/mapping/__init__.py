"""The local mapping thread: new points, culling, fusion, local bundle adjustment."""
