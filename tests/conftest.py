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


@pytest.fixture
def x64():
    """float64 enabled for the test (reference-precision oracles), restored afterwards."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


def pytest_report_header(config):
    return f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs"


# --- a tiny user-defined network, split by hand (fast, and exercises the public Split)

def _conv(x, k, stride=1):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def tiny_features(v, x, relu=jax.nn.relu):
    h = relu(_conv(x, v["k1"], 2))
    return relu(_conv(h, v["k2"]))


def tiny_head(v, a):
    return a.mean(axis=(1, 2)) @ v["w"] + v["b"][None, :]


def tiny_guided(v, x):
    from jaxcam import guided_relu

    return tiny_head(v, tiny_features(v, x, relu=guided_relu))


def tiny_variables(seed=0, classes=5):
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"k1": rng.normal(size=(3, 3, 3, 4)).astype("float32") * 0.5,
            "k2": rng.normal(size=(3, 3, 4, 6)).astype("float32") * 0.5,
            "w": rng.normal(size=(6, classes)).astype("float32"),
            "b": rng.normal(size=(classes,)).astype("float32")}


@pytest.fixture
def tiny_split():
    import jaxcam

    return jaxcam.Split(variables=tiny_variables(), features=tiny_features, head=tiny_head,
                        layer="k2", piecewise_linear_head=True, gap_linear_head=True,
                        guided=tiny_guided)


@pytest.fixture
def tiny_x():
    return jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
