"""Heads with any output: per-pixel logits, embeddings, detector outputs, explained
through the targets of ``jaxcam.targets`` (traced: a new mask, box or reference never
recompiles), against hand computations of the gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam import targets

CLOSE = dict(rtol=1e-5, atol=1e-6)


def _x(seed=0, batch=2, size=16):
    return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def _conv(x, k, stride=1):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _params(seed, k=6, out=4):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {"k1": 0.5 * jax.random.normal(keys[0], (3, 3, 3, k)),
            "w": jax.random.normal(keys[1], (k, out)),
            "b": 0.1 * jax.random.normal(keys[2], (out,))}


def features(v, x):
    return _conv(x, v["k1"], 2)                                     # (B, 8, 8, K)


def seg_head(v, a):
    return jax.nn.relu(a) @ v["w"] + v["b"][None, None, None]       # (B, 8, 8, C)


def emb_head(v, a):
    return jax.nn.relu(a).mean((1, 2)) @ v["w"] + v["b"][None]      # (B, D)


def _grad_cam_by_hand(a, g):
    weights = g.mean((1, 2))                                        # (B, K)
    return np.maximum(np.einsum("bhwk,bk->bhw", a, weights), 0)


def _raw(method, split, x, target, **options):
    return np.asarray(method(split, x, target, upsample=False, normalize=False, **options))


# --- segmentation

@pytest.fixture
def seg_split():
    return jaxcam.Split(variables=_params(1), features=features, head=seg_head,
                        layer="conv", piecewise_linear_head=True)


def test_segmentation_target_over_a_mask_equals_the_hand_computation(seg_split):
    x = _x(1)
    v = seg_split.variables
    a = np.asarray(seg_split.activations(x), np.float64)
    mask = np.zeros((2, 8, 8), np.float32)
    mask[0, 2:6, 1:4] = 1
    mask[1, 4:, 4:] = 1
    classes = np.array([2, 0])
    # Y_b = sum_ij m_ij S_ijc, S = relu(A) W + b: dY/dA_ijk = m_ij 1[A_ijk > 0] W_kc
    w = np.asarray(v["w"], np.float64)
    g = mask[..., None] * (a > 0) * w.T[classes][:, None, None, :]
    maps = _raw(jaxcam.grad_cam, seg_split, x, targets.segmentation(classes, mask))
    np.testing.assert_allclose(maps, _grad_cam_by_hand(a, g), rtol=1e-5, atol=1e-6)
    assert maps.max() > 0


def test_segmentation_target_over_the_predicted_pixels(seg_split):
    x = _x(2)
    v = seg_split.variables
    a = np.asarray(seg_split.activations(x), np.float64)
    logits = np.asarray(seg_split.logits(x))
    c = 1
    mask = (logits.argmax(-1) == c).astype(np.float64)
    assert 0 < mask.sum() < mask.size
    g = mask[..., None] * (a > 0) * np.asarray(v["w"], np.float64)[:, c]
    maps = _raw(jaxcam.grad_cam, seg_split, x, targets.segmentation(c))
    np.testing.assert_allclose(maps, _grad_cam_by_hand(a, g), rtol=1e-5, atol=1e-6)


def test_a_new_mask_never_recompiles(seg_split):
    traces = []

    def counting(v, x):
        traces.append(1)
        return features(v, x)

    split = seg_split.replace(features=counting)
    x = _x(3)
    masks = np.zeros((3, 2, 8, 8), np.float32)
    for i in range(3):
        masks[i, :, i:i + 4, i:i + 4] = 1
    jaxcam.grad_cam(split, x, targets.segmentation(np.array([0, 1]), masks[0]))
    first = len(traces)
    outs = [jaxcam.grad_cam(split, x, targets.segmentation(np.array([c, 3 - c]), m))
            for c, m in zip(range(3), masks)]
    assert len(traces) == first
    assert not np.allclose(outs[0], outs[1])


def test_exact_grad_cam_pp_with_a_segmentation_target_both_engines_agree(seg_split, x64):
    """The linearised engine (columns of the per-pixel output Jacobian, flattened) and the
    generic one (nested jvp of the score) give the same pure derivatives (float64)."""
    seg_split = seg_split.astype(jnp.float64)
    x = _x(4).astype(jnp.float64)
    target = targets.segmentation(np.array([3, 1]), softmax=True)
    maps = {engine: jaxcam.grad_cam_pp(seg_split, x, target, derivatives="exact",
                                       engine=engine, link="logit", upsample=False,
                                       normalize=False)
            for engine in ("linearised", "generic")}
    np.testing.assert_allclose(maps["linearised"], maps["generic"], rtol=1e-9, atol=1e-12)
    a = seg_split.activations(x)
    d_lin = jaxcam.derivatives.head_derivatives(seg_split, a, target, link="logit",
                                                engine="linearised")
    d_gen = jaxcam.derivatives.head_derivatives(seg_split, a, target, link="logit",
                                                engine="generic")
    for dl, dg in zip(d_lin, d_gen):
        np.testing.assert_allclose(dl, dg, rtol=1e-9, atol=1e-14)
    assert float(jnp.abs(d_gen[1]).max()) > 0   # the per-pixel softmax is curved


def test_class_targets_on_per_pixel_logits_are_refused(seg_split):
    with pytest.raises(ValueError, match=r"logits \(B, C\).*jaxcam.targets"):
        jaxcam.grad_cam(seg_split, _x(), 0)


# --- embeddings

@pytest.fixture
def emb_split():
    return jaxcam.Split(variables=_params(5, out=8), features=features, head=emb_head,
                        layer="conv", piecewise_linear_head=True, gap_linear_head=False)


def _cosine(e, r):
    return jnp.sum(e * r, -1) / (jnp.linalg.norm(e, axis=-1) * jnp.linalg.norm(r, axis=-1))


def test_embedding_similarity_equals_grad_cam_of_the_cosine_by_hand(emb_split):
    x = _x(6)
    reference = jax.random.normal(jax.random.key(7), (2, 8))
    got = _raw(jaxcam.grad_cam, emb_split, x, targets.embedding_similarity(reference))
    by_callable = _raw(jaxcam.grad_cam, emb_split, x, lambda e: _cosine(e, reference))
    np.testing.assert_allclose(got, by_callable, **CLOSE)
    # and fully by hand: d cos / d e = r / (|e||r|) - cos e / |e|^2, e = mean(relu A) W + b
    v = jax.tree_util.tree_map(lambda t: np.asarray(t, np.float64), emb_split.variables)
    a = np.asarray(emb_split.activations(x), np.float64)
    r = np.asarray(reference, np.float64)
    e = np.maximum(a, 0).mean((1, 2)) @ v["w"] + v["b"]
    ne, nr = np.linalg.norm(e, axis=-1, keepdims=True), np.linalg.norm(r, axis=-1, keepdims=True)
    cos = np.sum(e * r, -1, keepdims=True) / (ne * nr)
    de = r / (ne * nr) - cos * e / ne**2                          # (B, D)
    g = (a > 0) * (de @ v["w"].T)[:, None, None, :] / (a.shape[1] * a.shape[2])
    np.testing.assert_allclose(got, _grad_cam_by_hand(a, g), rtol=1e-4, atol=1e-6)
    assert got.max() > 0


def test_one_reference_embedding_is_broadcast(emb_split):
    x = _x(8)
    r = jax.random.normal(jax.random.key(9), (8,))
    np.testing.assert_allclose(
        jaxcam.grad_cam(emb_split, x, targets.embedding_similarity(r)),
        jaxcam.grad_cam(emb_split, x, targets.embedding_similarity(jnp.stack([r, r]))),
        **CLOSE)
    with pytest.raises(ValueError, match="8"):
        jaxcam.grad_cam(emb_split, x, targets.embedding_similarity(jnp.ones(5)))


# --- a detector head: boxes and per-class scores

def det_head(v, a):
    pooled = jax.nn.relu(a).reshape(a.shape[0], 4, -1, a.shape[-1]).mean(2)   # (B, 4, K)
    boxes = 8.0 * jax.nn.sigmoid(pooled @ v["w"])                            # (B, 4, 4)
    lo, hi = jnp.minimum(boxes[..., :2], boxes[..., 2:]), jnp.maximum(boxes[..., :2],
                                                                        boxes[..., 2:])
    return {"boxes": jnp.concatenate([lo, hi], -1),
            "scores": jax.nn.softmax(pooled @ v["w"] + v["b"][None, None], -1)}  # (B, 4, C)


def test_box_score_equals_the_matching_rule_by_hand():
    split = jaxcam.Split(variables=_params(10), features=features, head=det_head,
                         layer="conv")
    x = _x(11)
    out = jax.tree_util.tree_map(np.asarray, split.logits(x))
    # reference boxes: each image's predicted box 1 (perfect match), label 2
    ref = out["boxes"][:, 1:2]
    labels = np.full((2, 1), 2)
    target = targets.box_score(ref, labels, iou_threshold=0.5)

    def by_hand(o):   # box 1 matches (IoU 1 with itself; the others are taken as below)
        ious = targets.box_iou(jnp.asarray(ref)[:, :, None], o["boxes"][:, None])[:, 0]
        best = jnp.argmax(jax.lax.stop_gradient(ious), -1)
        iou = jnp.take_along_axis(ious, best[:, None], -1)[:, 0]
        score = jnp.take_along_axis(o["scores"][..., 2], best[:, None], -1)[:, 0]
        return jnp.where(iou > 0.5, score + iou, 0.0)

    np.testing.assert_allclose(target(split.logits(x)), by_hand(split.logits(x)), **CLOSE)
    np.testing.assert_allclose(_raw(jaxcam.grad_cam, split, x, target),
                               _raw(jaxcam.grad_cam, split, x, by_hand), **CLOSE)
    # a reference box far from every prediction explains nothing
    far = targets.box_score(np.full((2, 1, 4), [100.0, 100.0, 101.0, 101.0]), labels)
    assert float(jnp.abs(far(split.logits(x))).max()) == 0.0
