"""Data access for the training stages: labels, splits, memory-mapped bags, tile features."""
