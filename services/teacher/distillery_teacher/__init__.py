"""Teacher service: one deployment per teacher_id, turning generation requests into candidates."""

__version__ = "0.1.0"
