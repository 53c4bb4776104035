"""Where converted models live, without importing torch (distillery.domain.models converts them)."""

from __future__ import annotations

import os
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"


def model_cache_dir() -> Path:
    """Folder holding converted teachers; kept outside the repo because copies are 0.5-2 GB."""
    return Path(os.environ.get("DISTILLERY_MODEL_CACHE", "~/.cache/distillery/models")).expanduser()
