"""Input and output: data sources, calibration files, trajectories."""
