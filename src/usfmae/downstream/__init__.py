"""Downstream use of an encoder: benchmark grids, feature extraction, export."""
