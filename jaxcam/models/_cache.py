"""Where jaxcam keeps what it makes once: converted checkpoints and trained networks."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The folder of jaxcam's cache (converted checkpoints, trained shapes networks):
    ``$JAXCAM_CACHE`` if set, else ``~/.cache/jaxcam``."""
    return Path(os.environ.get("JAXCAM_CACHE") or Path.home() / ".cache" / "jaxcam")
