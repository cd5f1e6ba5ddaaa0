"""Anomaly maps, post-processing, sliding-window ensembles."""
