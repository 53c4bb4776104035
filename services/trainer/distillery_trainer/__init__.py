"""Trainer service: dataset snapshots at fixed offsets, recipes, student artifacts with lineage."""

__version__ = "0.1.0"
