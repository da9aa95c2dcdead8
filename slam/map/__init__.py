"""The map: frames, keyframes, map points, covisibility graph and spanning tree."""
