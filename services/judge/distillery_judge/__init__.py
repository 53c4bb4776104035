"""Judge service: rule floor, reference checks, ranking and a pool for every candidate."""

__version__ = "0.1.0"
