"""Distillery common library: the contracts and plumbing every service shares."""

__version__ = "0.1.0"
