"""Loop closing: detection, Sim(3)/SE(3) alignment, essential-graph optimisation."""
