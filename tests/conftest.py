"""Shared fixtures. Tests run on the CPU in float32 unless they enable x64 themselves."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

# Broadcasting that silently promotes ranks hides shape bugs in the maths.
jax.config.update("jax_numpy_rank_promotion", "raise")

ASSETS = Path(__file__).resolve().parents[1] / "jaxcam" / "assets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted-weights cache in a temporary folder, never the user's ~/.cache."""
    monkeypatch.setenv("JAXCAM_CACHE", str(tmp_path_factory.getbasetemp() / "jaxcam-cache"))


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


def pytest_report_header(config):
    return f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs"
