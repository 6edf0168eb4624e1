"""The shapes networks: optax training beats chance, is deterministic, is cached with its
configuration and accuracy, folds batch normalisation exactly, and loads like any zoo
model."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam import models
from jaxcam.datasets import shapes

TINY = models.TrainConfig(size=32, images=128, steps=6, batch=16, held_out=32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def quick_cache(tmp_path_factory):
    """A cache holding shapes-relu trained with the --quick configuration (about 40 s)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXCAM_CACHE", str(path))
        models.train_shapes("shapes-relu", quick=True)
    return path


@pytest.fixture
def quick_relu(quick_cache, monkeypatch):
    monkeypatch.setenv("JAXCAM_CACHE", str(quick_cache))
    return models.train_shapes("shapes-relu", quick=True)          # read from the cache


def test_quick_training_beats_chance_clearly(quick_relu):
    # 500 steps on 32 px images: about 40 %. Chance is 1/6; its standard error over the
    # 300 held-out images is 2.2 %, so twice chance is 7 standard errors above it.
    chance = 1 / len(shapes.CLASSES)
    assert not quick_relu.trained and quick_relu.config == models.QUICK
    assert quick_relu.accuracy["single"] > 2 * chance, quick_relu.accuracy
    # held-out accuracy recomputed here, from the cached weights through the zoo's load
    split = models.load("shapes-relu", weights=str(quick_relu.path))
    data = shapes.generate(300, size=32, seed=0, start=10**6)
    logits = split.head(split.variables, split.features(split.variables,
                                                        models.preprocess_batch(data.images)))
    accuracy = float(np.mean(np.asarray(logits.argmax(-1)) == data.labels))
    assert accuracy == pytest.approx(quick_relu.accuracy["single"], abs=1e-9)


def test_training_is_deterministic_and_the_seed_matters(cache):
    a = models.train_shapes("shapes-smooth", TINY)
    b = models.train_shapes("shapes-smooth", TINY, force=True)
    c = models.train_shapes("shapes-smooth", dataclasses.replace(TINY, seed=1))
    assert a.trained and b.trained and a.path == b.path and c.path != a.path
    va, vb, vc = (models.load_variables(t.path, model="shapes-smooth") for t in (a, b, c))
    for x, y in zip(jax.tree_util.tree_leaves(va), jax.tree_util.tree_leaves(vb)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(va["params"]["conv1"]["kernel"], vc["params"]["conv1"]["kernel"])


def test_the_cache_is_used_only_for_the_same_configuration(cache):
    first = models.train_shapes("shapes-relu", TINY)
    again = models.train_shapes("shapes-relu", TINY)
    assert first.trained and not again.trained
    assert (again.path, again.accuracy, again.seconds) == (first.path, first.accuracy,
                                                           pytest.approx(first.seconds, abs=0.1))
    other = models.train_shapes("shapes-relu", dataclasses.replace(TINY, steps=7))
    assert other.trained and other.path != first.path
    first.path.write_bytes(first.path.read_bytes()[:-10])        # a damaged entry: retrained
    assert models.train_shapes("shapes-relu", TINY).trained


def test_load_without_trained_weights_names_the_command(cache):
    with pytest.raises(FileNotFoundError, match="jaxcam train-shapes"):
        models.load("shapes-relu")
    with pytest.raises(ValueError, match="unknown shapes network"):
        models.train_shapes("shapes-tanh")


def test_splits_know_their_head_and_grad_cam_runs(quick_relu):
    relu = models.load("shapes-relu", weights=str(quick_relu.path))
    smooth = models.load("shapes-smooth", weights="random", layer="act4")
    assert relu.piecewise_linear_head and relu.gap_linear_head and relu.layer == "act5"
    assert not smooth.piecewise_linear_head and not smooth.gap_linear_head
    data = shapes.generate(4, size=64, seed=0, start=10**6)
    x = models.preprocess_batch(data.images)
    maps = jax.jit(lambda x: jaxcam.grad_cam(relu, x, jnp.asarray(data.labels)))(x)
    assert maps.shape == (4, 64, 64) and bool(jnp.all(jnp.isfinite(maps)))
    assert models.info("shapes-relu").preprocess(data.images[0]).shape == (64, 64, 3)


def test_the_groundtruth_report_scores_methods_against_the_masks(quick_relu, tmp_path):
    """``python -m benchmarks.groundtruth --quick``'s run, on two methods: its structure,
    and its pointing game recomputed from the maps' definition."""
    from benchmarks import groundtruth

    results = groundtruth.run(True, 8, tmp_path, tmp_path, networks=("shapes-relu",),
                              methods="grad_cam,grad_cam_pp:exact", progress=False)
    rows = results["methods"]["shapes-relu"]
    assert [r["method"] for r in rows] == ["grad_cam", "grad_cam_pp-exact"]
    assert results["networks"]["shapes-relu"]["accuracy"] == quick_relu.accuracy
    assert json.loads((tmp_path / "results.json").read_text()) == results
    data = shapes.generate(8, size=32, seed=0, start=10**6)
    split = models.load("shapes-relu", weights=str(quick_relu.path))
    row, maps = groundtruth.score_method(split, groundtruth.method_specs("grad_cam")[0], data)
    hits = [data.target_masks[i][maps[i] == maps[i].max()].any() for i in range(8)]
    assert row["pointing_game"]["mean"] == pytest.approx(np.mean(hits))
    assert row == {**rows[0], "ms_per_image": row["ms_per_image"],
                   "compile_s": row["compile_s"]}
    for r in rows:
        assert r["images"] == 8
        assert 0 <= r["energy_in_mask"]["mean"] <= r["energy_in_box"]["mean"] <= 1
        assert r["pointing_game"]["mean"] <= r["pointing_game_tolerance"]["mean"]
        assert r["pointing_game"]["low"] <= r["pointing_game"]["mean"] <= r["pointing_game"]["high"]
