"""Segmentation and reconstruction metrics, exact and mergeable histogram forms, protocols."""
