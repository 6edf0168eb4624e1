"""The compiled programs themselves (jaxcam/methods/_pipeline.py): the temporary memory
of Score-CAM and Smooth Grad-CAM++ bounded by their chunks, Smooth Grad-CAM++'s noisy
copies split across two devices (an all-reduce in the HLO); and the rank statistics of
jaxcam/_compare.py, by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam


@pytest.fixture(scope="module")
def deep_head():
    return jaxcam.models.load("resnet18", layer="layer3", weights="random")


def test_smooth_chunk_size_bounds_memory(deep_head):
    from jaxcam.methods._smoothing import build_smooth_grad_cam_pp
    from jaxcam.methods._pipeline import run

    x = jnp.zeros((1, 128, 128, 3))

    def temp_bytes(chunk):
        built = build_smooth_grad_cam_pp(
            deep_head, x, 1, key=jax.random.key(0), n_samples=32, chunk_size=chunk)
        compiled = run.lower(built.program, deep_head, x, built.classes, built.key).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(1), temp_bytes(32)
    assert small * 2 < large, (small, large)


_TWO_DEVICES = """
import jax, numpy as np, jaxcam
jax.config.update("jax_numpy_rank_promotion", "raise")
from jaxcam.methods._smoothing import build_smooth_grad_cam_pp
from jaxcam.methods._pipeline import run
assert len(jax.devices()) == 2, jax.devices()
split = jaxcam.models.load("resnet18", layer="layer3", weights="random")
x = jax.random.normal(jax.random.key(10), (1, 48, 48, 3))
options = dict(key=jax.random.key(1), n_samples=5, upsample=False, normalize=False)
one = jaxcam.smooth_grad_cam_pp(split, x, 1, **options)
two = jaxcam.smooth_grad_cam_pp(split, x, 1, devices=jax.devices(), **options)
assert np.abs(one).max() > 0
np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
# the copies are split across the devices: one chunk of 6 (5 padded to a multiple of 2),
# 3 per device, summed across devices by an all-reduce
built = build_smooth_grad_cam_pp(split, x, 1, devices=jax.devices(), **options)
assert built.program.measure.chunk == 6
hlo = run.lower(built.program, split, x, built.classes, built.key).compile().as_text()
assert "all-reduce" in hlo
assert "f32[3,1,48,48,3]" in hlo and "f32[6,1,48,48,3]" not in hlo
print("ok")
"""


def test_smooth_split_across_devices_gives_the_same_map():
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                          + " --xla_force_host_platform_device_count=2").strip())
    run = subprocess.run([sys.executable, "-c", _TWO_DEVICES], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_rank_statistics_hand_computed():
    from jaxcam._compare import relative_l2, spearman, top_iou

    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(spearman(x, jnp.array([1.0, 3.0, 2.0, 4.0])), 0.8, rtol=1e-6)
    # ties share their mean rank: ranks (0.5, 0.5, 2, 3) and (0, 1.5, 1.5, 3)
    rx, ry = np.array([0.5, 0.5, 2, 3]), np.array([0, 1.5, 1.5, 3])
    np.testing.assert_allclose(spearman(jnp.array([0.0, 0, 1, 2]), jnp.array([0.0, 1, 1, 2])),
                               np.corrcoef(rx, ry)[0, 1], rtol=1e-6)
    assert float(spearman(jnp.zeros(4), jnp.zeros(4))) == 1.0
    assert float(spearman(jnp.zeros(4), x)) == 0.0
    a = jnp.arange(10.0)
    np.testing.assert_allclose(top_iou(a, a[::-1]), 0.0)
    np.testing.assert_allclose(top_iou(a, a), 1.0)
    np.testing.assert_allclose(relative_l2(jnp.array([3.0, 4.0]), jnp.array([0.0, 4.0])), 0.75)


def test_chunk_size_bounds_score_cam_memory(tiny_split):
    from jaxcam.methods._perturbation import _build
    from jaxcam.methods._pipeline import run

    x = jnp.zeros((2, 64, 64, 3))

    def temp_bytes(chunk):
        built = _build(tiny_split, x, 1, variant="paper", mode="plain", chunk_size=chunk)
        return run.lower(built.program, tiny_split, x, built.classes).compile() \
            .memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(1), temp_bytes(6)
    assert small * 2 < large, (small, large)
