"""Evaluator service: held-out evaluation per capability unit, teacher baseline, ROI, report."""

__version__ = "0.1.0"
