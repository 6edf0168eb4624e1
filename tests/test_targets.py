"""jaxcam.targets on plain arrays: each score against a NumPy hand computation (float64),
its gradient against central differences, checks and broadcasting, and one compilation
for every target of one configuration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcam import targets

RNG = np.random.default_rng(0)


def _spec(tree):
    return jax.eval_shape(lambda t: t, tree)


def _prepared(target, outputs):
    return target.prepare(_spec(outputs))


def _fd_check(fn, outputs, eps=1e-6):
    """Central differences of sum(fn(outputs)) along a random direction, in float64."""
    leaves, tree = jax.tree_util.tree_flatten(outputs)
    dirs = [RNG.normal(size=np.shape(v)) if np.issubdtype(np.asarray(v).dtype, np.floating)
            else np.zeros(np.shape(v)) for v in leaves]
    shift = lambda s: jax.tree_util.tree_unflatten(tree, [  # noqa: E731
        v + s * d if np.issubdtype(np.asarray(v).dtype, np.floating) else v
        for v, d in zip(leaves, dirs)])
    total = lambda o: jnp.sum(fn(o))  # noqa: E731
    grads = jax.tree_util.tree_leaves(jax.grad(total, allow_int=True)(outputs))
    along = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(grads, dirs)
                if np.issubdtype(np.asarray(g).dtype, np.floating))
    fd = (float(total(shift(eps))) - float(total(shift(-eps)))) / (2 * eps)
    np.testing.assert_allclose(along, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("link", targets.CLASS_LINKS)
def test_class_scores(link, x64):
    s = RNG.normal(size=(3, 5))
    c = np.array([0, 4, 2])
    t = _prepared(targets.ClassScore(c, link), s)
    logp = s - np.log(np.exp(s).sum(-1, keepdims=True))
    table = {"logit": s, "softmax": np.exp(logp), "log_softmax": logp, "rest": s + logp}
    np.testing.assert_allclose(t(jnp.asarray(s)), table[link][np.arange(3), c], rtol=1e-12)
    _fd_check(t, jnp.asarray(s))
    assert targets.class_probability(1).link == "softmax" and targets.rest(1).link == "rest"


def test_segmentation_with_a_mask_and_predicted_pixels(x64):
    s = RNG.normal(size=(2, 4, 5, 3))
    mask = (RNG.random((4, 5)) > 0.5).astype(np.float64)
    c = np.array([1, 2])
    t = _prepared(targets.segmentation(c, mask), s)
    want = np.array([(mask * s[b, :, :, c[b]]).sum() for b in range(2)])
    np.testing.assert_allclose(t(jnp.asarray(s)), want, rtol=1e-12)
    _fd_check(t, jnp.asarray(s))
    soft = _prepared(targets.segmentation(c, mask, softmax=True), s)
    p = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    want = np.array([(mask * p[b, :, :, c[b]]).sum() for b in range(2)])
    np.testing.assert_allclose(soft(jnp.asarray(s)), want, rtol=1e-12)
    _fd_check(soft, jnp.asarray(s))
    pred = _prepared(targets.segmentation(c), s)
    want = np.array([((s[b].argmax(-1) == c[b]) * s[b, :, :, c[b]]).sum() for b in range(2)])
    np.testing.assert_allclose(pred(jnp.asarray(s)), want, rtol=1e-12)
    _fd_check(pred, jnp.asarray(s))


def test_box_iou_by_hand():
    a = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    b = jnp.array([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0],
                   [5.0, 5.0, 5.0, 6.0]])
    np.testing.assert_allclose(targets.box_iou(a, b), [1 / 7, 0.0, 1.0, 0.0], rtol=1e-6)


def _detections(per_class: bool):
    boxes = np.array([[[0, 0, 4, 4], [10, 10, 14, 14], [0, 0, 3, 4]]], np.float64)
    if per_class:
        return {"boxes": boxes, "scores": np.array([[[0.1, 0.7], [0.2, 0.6], [0.3, 0.5]]])}
    return {"boxes": boxes, "scores": np.array([[0.9, 0.8, 0.4]]),
            "labels": np.array([[0, 1, 1]])}


@pytest.mark.parametrize("per_class", [True, False])
def test_box_matching_rule(per_class, x64):
    out = jax.tree_util.tree_map(jnp.asarray, _detections(per_class))
    ref = np.array([[[0, 0, 4, 4], [10, 10, 14, 15], [30, 30, 31, 31]]], np.float64)
    labels = np.array([[1, 1, 0]])
    t = _prepared(targets.box_score(ref, labels, iou_threshold=0.5), out)
    # ref 0 (label 1): per class, box 0 matches (IoU 1), score 0.7; per box label, box 0
    # has label 0, so box 2 (IoU 12/16 = 0.75, label 1) matches, score 0.4.
    # ref 1: box 1 (IoU 16/20 = 0.8), label 1 in both. ref 2 overlaps nothing.
    want = (0.7 + 1.0 + 0.6 + 0.8) if per_class else (0.4 + 0.75 + 0.8 + 0.8)
    np.testing.assert_allclose(t(out), [want], rtol=1e-12)
    no_iou = _prepared(targets.box_score(ref, labels, add_iou=False), out)
    np.testing.assert_allclose(no_iou(out), [want - (1.0 + 0.8 if per_class else 0.75 + 0.8)],
                               rtol=1e-12)
    strict = _prepared(targets.box_score(ref, labels, iou_threshold=0.79), out)
    np.testing.assert_allclose(strict(out), [(0.7 + 1.0 + 0.6 + 0.8) if per_class
                                             else (0.8 + 0.8)], rtol=1e-12)
    masked = _prepared(targets.box_score(ref, labels, valid=np.array([[0, 1, 1]])), out)
    np.testing.assert_allclose(masked(out), [0.6 + 0.8 if per_class else 0.8 + 0.8],
                               rtol=1e-12)
    _fd_check(t, out)


def test_embedding_similarity_equals_torch(x64):
    e = RNG.normal(size=(3, 6))
    e[2] = 0.0
    r = RNG.normal(size=6)
    t = _prepared(targets.embedding_similarity(r), e)
    want = torch.nn.functional.cosine_similarity(torch.from_numpy(e),
                                                 torch.from_numpy(np.tile(r, (3, 1))))
    np.testing.assert_allclose(t(jnp.asarray(e)), want.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t(jnp.asarray(e))[:2], (e[:2] @ r) / (
        np.linalg.norm(e[:2], axis=-1) * np.linalg.norm(r)), rtol=1e-12)
    _fd_check(_prepared(targets.embedding_similarity(r), e[:2]), jnp.asarray(e[:2]))
    # at a zero embedding the cosine is 0 and its gradient finite (r / (1e-8 |r|))
    g = jax.grad(lambda v: jnp.sum(t(v)))(jnp.asarray(e))[2]
    np.testing.assert_allclose(g, r / (1e-8 * np.linalg.norm(r)), rtol=1e-6)


def test_one_compilation_for_targets_of_one_configuration():
    traces = []

    @jax.jit
    def score(t, o):
        traces.append(1)
        return t(o)

    s = jnp.asarray(RNG.normal(size=(2, 4, 4, 3)), jnp.float32)
    for c, lo in ((0, 0), (2, 1), (1, 2)):
        mask = jnp.zeros((4, 4)).at[lo:, lo:].set(1.0)
        score(_prepared(targets.segmentation(c, mask), s), s)
    assert len(traces) == 1


def test_prepare_broadcasts_and_checks():
    s = jax.ShapeDtypeStruct((2, 4, 4, 3), jnp.float32)
    t = targets.segmentation(1, np.ones((4, 4))).prepare(s)
    assert t.classes.shape == (2,) and t.mask.shape == (2, 4, 4) and t.mask.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"per-pixel logits \(B, H, W, C\).*int target"):
        targets.segmentation(1).prepare(jax.ShapeDtypeStruct((2, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"mask has shape \(5, 4\); expected \(4, 4\)"):
        targets.segmentation(1, np.ones((5, 4))).prepare(s)
    with pytest.raises(ValueError, match=r"class 3 is out of range.*\[0, 2\]"):
        targets.segmentation(3).prepare(s)
    with pytest.raises(TypeError, match="ints"):
        targets.segmentation(1.5).prepare(s)
    with pytest.raises(ValueError, match=r"no key 'logits'; available keys: 'out'"):
        targets.segmentation(1, output="logits").prepare({"out": s})
    with pytest.raises(ValueError, match=r"embeddings \(B, D\)"):
        targets.embedding_similarity(np.ones(3)).prepare(s)
    with pytest.raises(ValueError, match=r"reference embedding has shape \(5,\); expected \(3,\)"):
        targets.embedding_similarity(np.ones(5)).prepare(jax.ShapeDtypeStruct((2, 3), jnp.float32))
    with pytest.raises(ValueError, match="detector outputs"):
        targets.box_score(np.zeros((1, 4)), [0]).prepare(s)
    with pytest.raises(ValueError, match="box label 4 is out of range"):
        targets.box_score(np.zeros((1, 4)), [4]).prepare(
            {"boxes": jax.ShapeDtypeStruct((2, 5, 4), jnp.float32),
             "scores": jax.ShapeDtypeStruct((2, 5, 3), jnp.float32)})
    with pytest.raises(ValueError, match=r"no key 'labels'"):
        targets.box_score(np.zeros((1, 4)), [0]).prepare(
            {"boxes": jax.ShapeDtypeStruct((2, 5, 4), jnp.float32),
             "scores": jax.ShapeDtypeStruct((2, 5), jnp.float32)})
