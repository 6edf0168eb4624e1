"""The clone's test stand-in of torchvision (``tests/_torchvision_standin``), for the peers
that import it at import time (pytorch-grad-cam) where the real torchvision cannot be loaded
beside the CPU build of torch."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "_torchvision_standin"


@contextlib.contextmanager
def torchvision_standin():
    """Within the block, ``import torchvision`` finds the stand-in if the real one fails;
    the block gets whether it does (modules imported inside it stay imported)."""
    try:
        importlib.import_module("torchvision")
    except Exception:                    # noqa: BLE001 - missing or unloadable
        sys.path.insert(0, str(STANDIN))
        try:
            yield True
        finally:
            sys.path.remove(str(STANDIN))
        return
    yield False
