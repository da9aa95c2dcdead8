"""Pure geometry: Lie groups, pose conventions, two-view geometry, PnP, alignment."""
