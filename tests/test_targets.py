"""jaxcam.targets on plain arrays: each score against an independent NumPy hand
computation (float64), its gradient against central differences, the pytree design
(traced leaves, static configuration: one compilation per configuration), ``prepare``'s
broadcasting and every error it raises."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxcam import targets

RNG = np.random.default_rng(0)


def _spec(tree):
    return jax.eval_shape(lambda t: t, tree)


def _prepared(target, outputs):
    return target.prepare(_spec(outputs))


# one compiled program per configuration and shapes (cheaper than op-by-op dispatch)
_call = jax.jit(lambda t, o: t(o))
_grad = jax.jit(jax.grad(lambda o, t: jnp.sum(t(o)), allow_int=True))
_iou = jax.jit(targets.box_iou)


def _is_float(v) -> bool:
    return np.issubdtype(np.asarray(v).dtype, np.floating)


def _fd_check(target, outputs, eps=1e-6, rtol=1e-6):
    """d/dt sum(target(outputs + t u)) at 0 along random directions u of every float
    leaf: the gradient against central differences (float64)."""
    leaves, tree = jax.tree_util.tree_flatten(outputs)

    def total(o):
        return jnp.sum(_call(target, o))

    grads = jax.tree_util.tree_leaves(_grad(outputs, target))
    for _ in range(2):
        dirs = [RNG.normal(size=np.shape(v)) if _is_float(v) else None for v in leaves]

        def shift(s, dirs=dirs):
            return jax.tree_util.tree_unflatten(
                tree, [v + s * d if d is not None else v for v, d in zip(leaves, dirs)])

        along = sum(float(np.sum(np.asarray(g, np.float64) * d))
                    for g, d in zip(grads, dirs) if d is not None)
        fd = (float(total(shift(eps))) - float(total(shift(-eps)))) / (2 * eps)
        np.testing.assert_allclose(along, fd, rtol=rtol, atol=1e-9)


def _log_softmax(s, axis=-1):
    m = s.max(axis, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis, keepdims=True))


# --- class scores

@pytest.mark.parametrize("link", targets.CLASS_LINKS)
def test_class_scores_against_numpy(link, x64):
    s = RNG.normal(size=(3, 5)) * 3
    c = np.array([0, 4, 2])
    logp = _log_softmax(s)
    table = {"logit": s, "softmax": np.exp(logp), "log_softmax": logp, "rest": s + logp}
    t = _prepared(targets.ClassScore(c, link), s)
    np.testing.assert_allclose(_call(t, jnp.asarray(s)), table[link][np.arange(3), c], rtol=1e-12)
    _fd_check(t, jnp.asarray(s))
    # one class for every image, broadcast by prepare (and by an unprepared call)
    one = targets.ClassScore(3, link)
    np.testing.assert_allclose(_prepared(one, s)(jnp.asarray(s)), table[link][:, 3],
                               rtol=1e-12)
    np.testing.assert_allclose(_call(one, jnp.asarray(s)), table[link][:, 3], rtol=1e-12)


def test_class_constructors_and_output_selection(x64):
    assert (targets.class_logit(1).link, targets.class_probability(1).link,
            targets.rest(1).link) == ("logit", "softmax", "rest")
    s = RNG.normal(size=(2, 4))
    logp = _log_softmax(s)
    by_key = {"logits": jnp.asarray(s), "aux": jnp.zeros((2, 7))}
    t = _prepared(targets.class_probability(np.array([1, 3]), output="logits"), by_key)
    np.testing.assert_allclose(t(by_key), np.exp(logp)[[0, 1], [1, 3]], rtol=1e-12)
    by_index = (jnp.zeros((2, 7)), jnp.asarray(s))
    t = _prepared(targets.rest(2, output=1), by_index)
    np.testing.assert_allclose(t(by_index), (s + logp)[:, 2], rtol=1e-12)
    t = _prepared(targets.class_logit(2, output=-1), list(by_index))
    np.testing.assert_allclose(t(list(by_index)), s[:, 2], rtol=1e-12)


# --- segmentation

def test_segmentation_with_a_given_mask(x64):
    s = RNG.normal(size=(2, 4, 5, 3))
    c = np.array([1, 2])
    mask = RNG.random((4, 5)) > 0.5                                   # bool, (H, W)
    t = _prepared(targets.segmentation(c, mask), s)
    want = [(mask * s[b, :, :, c[b]]).sum() for b in range(2)]
    np.testing.assert_allclose(_call(t, jnp.asarray(s)), want, rtol=1e-12)
    _fd_check(t, jnp.asarray(s))
    weights = RNG.random((2, 4, 5))                                   # float, (B, H, W)
    t = _prepared(targets.segmentation(c, weights), s)
    want = [(weights[b] * s[b, :, :, c[b]]).sum() for b in range(2)]
    np.testing.assert_allclose(_call(t, jnp.asarray(s)), want, rtol=1e-12)


def test_segmentation_softmax(x64):
    s = RNG.normal(size=(2, 3, 3, 4)) * 2
    mask = RNG.random((2, 3, 3))
    t = _prepared(targets.segmentation(3, mask, softmax=True), s)
    p = np.exp(_log_softmax(s))
    want = [(mask[b] * p[b, :, :, 3]).sum() for b in range(2)]
    np.testing.assert_allclose(_call(t, jnp.asarray(s)), want, rtol=1e-12)
    _fd_check(t, jnp.asarray(s))


def test_segmentation_over_the_predicted_pixels(x64):
    # logits whose argmax is known: class 2 wins on the left half, class 0 elsewhere
    b, h, w, n = 2, 4, 6, 3
    s = RNG.normal(size=(b, h, w, n)) * 0.1
    s[:, :, :3, 2] += 5.0
    s[:, :, 3:, 0] += 5.0
    left = np.zeros((h, w))
    left[:, :3] = 1.0
    for softmax in (False, True):
        t = _prepared(targets.segmentation(np.array([2, 0]), softmax=softmax), s)
        assert t.predicted and t.mask is None
        p = np.exp(_log_softmax(s)) if softmax else s
        want = [(left * p[0, :, :, 2]).sum(), ((1 - left) * p[1, :, :, 0]).sum()]
        np.testing.assert_allclose(_call(t, jnp.asarray(s)), want, rtol=1e-12)
        _fd_check(t, jnp.asarray(s))
    # the selection is held fixed: d Y / d S is the mask on class c, nothing elsewhere
    raw = _prepared(targets.segmentation(np.array([2, 1])), s)
    g = np.asarray(_grad(jnp.asarray(s), raw))
    want = np.zeros_like(s)
    want[0, :, :, 2] = left
    np.testing.assert_array_equal(g, want)          # class 1 is predicted nowhere
    # the mask follows the outputs the target is called on
    moved = s.copy()
    moved[0, :, :, 2] -= 10.0
    assert float(_call(raw, jnp.asarray(moved))[0]) == 0.0


# --- boxes

def _np_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_iou_by_hand():
    a = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    b = jnp.array([[1.0, 1.0, 3.0, 3.0],      # 1 / (4 + 4 - 1)
                   [2.0, 2.0, 3.0, 3.0],      # touching at a corner
                   [0.0, 0.0, 2.0, 2.0],      # the same box
                   [0.5, 0.0, 1.5, 4.0],      # 2 / (4 + 4 - 2)
                   [5.0, 5.0, 5.0, 6.0]])     # no area, disjoint
    np.testing.assert_allclose(_iou(a, b), [1 / 7, 0.0, 1.0, 1 / 3, 0.0],
                               rtol=1e-6)
    # two boxes with no area: 0, not 0 / 0
    z = jnp.array([[1.0, 1.0, 1.0, 1.0]])
    assert float(_iou(z, z)[0]) == 0.0
    # broadcast (M, 1, 4) against (1, N, 4), symmetric
    p = RNG.random((3, 4)) * 5
    q = np.sort(RNG.random((5, 4)) * 5, axis=-1)[:, [0, 1, 2, 3]]
    p = np.concatenate([p[:, :2], p[:, :2] + 1 + p[:, 2:]], -1)
    q = np.concatenate([q[:, :2], q[:, :2] + 1 + q[:, 2:]], -1)
    got = np.asarray(_iou(jnp.asarray(p)[:, None], jnp.asarray(q)[None]))
    want = np.array([[_np_iou(u, v) for v in q] for u in p])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.T, _iou(jnp.asarray(q)[:, None],
                                                      jnp.asarray(p)[None]), rtol=1e-6)


# predictions P0 [0,0,10,10] label 0, P1 [0,0,10,5] label 1, P2 [20,20,30,30] label 1
PRED = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]]], np.float64)
# references: R0 [0,0,10,8]: IoU .8 with P0, 50/80 = .625 with P1; R1: 81/100 with P2;
# R2 = P0 exactly; R3 [5,0,15,10]: 50/150 with P0
REF = np.array([[[0, 0, 10, 8], [21, 21, 30, 30], [0, 0, 10, 10], [5, 0, 15, 10]]],
               np.float64)


def _per_box_labels():
    return {"boxes": jnp.asarray(PRED), "scores": jnp.array([[0.9, 0.6, 0.7]]),
            "labels": jnp.array([[0, 1, 1]])}


def test_box_matching_with_predicted_labels_by_hand(x64):
    out = _per_box_labels()
    labels = np.array([[1, 1, 2, 0]])

    def score(**kw):
        return float(_call(_prepared(targets.box_score(REF, labels, **kw), out), out)[0])

    # R0 (label 1): P0 overlaps most but has label 0, so P1 (IoU .625 > .5) matches;
    # R1: P2 (.81); R2 (label 2): no prediction of that label, although P0 is the same
    # box; R3 (label 0): P0 at IoU 1/3, below the threshold
    np.testing.assert_allclose(score(), (0.6 + 0.625) + (0.7 + 0.81), rtol=1e-12)
    np.testing.assert_allclose(score(add_iou=False), 0.6 + 0.7, rtol=1e-12)
    np.testing.assert_allclose(score(valid=np.array([1, 0, 1, 1])), 0.6 + 0.625,
                               rtol=1e-12)
    np.testing.assert_allclose(score(iou_threshold=0.3),
                               (0.6 + 0.625) + (0.7 + 0.81) + (0.9 + 1 / 3), rtol=1e-12)
    np.testing.assert_allclose(score(iou_threshold=0.7), 0.7 + 0.81, rtol=1e-12)
    # strictly above: an IoU equal to the threshold does not match
    np.testing.assert_allclose(score(iou_threshold=0.625), 0.7 + 0.81, rtol=1e-12)


def test_box_matching_with_per_class_scores_by_hand(x64):
    scores = np.array([[[0.1, 0.5, 0.2], [0.3, 0.4, 0.6], [0.05, 0.8, 0.15]]])
    out = {"boxes": jnp.asarray(PRED), "scores": jnp.asarray(scores)}
    labels = np.array([1, 1, 2, 0])                   # one box set for every image

    def score(**kw):
        return float(_call(_prepared(targets.box_score(REF[0], labels, **kw), out), out)[0])

    # every prediction is compatible: R0 -> P0 (.8) at class 1; R1 -> P2 (.81);
    # R2 -> P0 (1) at class 2; R3 -> P0 at 1/3, below
    np.testing.assert_allclose(score(), (0.5 + 0.8) + (0.8 + 0.81) + (0.2 + 1.0),
                               rtol=1e-12)
    np.testing.assert_allclose(score(add_iou=False), 0.5 + 0.8 + 0.2, rtol=1e-12)
    np.testing.assert_allclose(score(valid=np.array([True, True, False, True])),
                               (0.5 + 0.8) + (0.8 + 0.81), rtol=1e-12)
    np.testing.assert_allclose(score(iou_threshold=0.3),
                               (0.5 + 0.8) + (0.8 + 0.81) + (0.2 + 1.0) + (0.1 + 1 / 3),
                               rtol=1e-12)


def _np_box_score(ref, labels, valid, thr, pred, scores, plabels, add_iou):
    """The matching rule, one loop per image, reference box and prediction."""
    total = np.zeros(ref.shape[0])
    for b in range(ref.shape[0]):
        for m in range(ref.shape[1]):
            if not valid[b, m]:
                continue
            best, pick = -1.0, None
            for n in range(pred.shape[1]):
                if plabels is not None and plabels[b, n] != labels[b, m]:
                    continue
                iou = _np_iou(ref[b, m], pred[b, n])
                if iou > best:
                    best, pick = iou, n
            if pick is not None and best > thr[b]:
                s = scores[b, pick, labels[b, m]] if plabels is None else scores[b, pick]
                total[b] += s + (best if add_iou else 0.0)
    return total


def _random_boxes(shape):
    lo = RNG.random((*shape, 2)) * 6
    return np.concatenate([lo, lo + 1 + RNG.random((*shape, 2)) * 4], -1)


@pytest.mark.parametrize("per_class", [True, False])
@pytest.mark.parametrize("add_iou", [True, False])
def test_box_score_against_the_loop_and_central_differences(per_class, add_iou, x64):
    b, m, n, c = 3, 4, 6, 3
    pred = _random_boxes((b, n))
    ref = pred[:, :m] + RNG.normal(size=(b, m, 4)) * 0.3       # near some predictions
    labels = RNG.integers(0, c, (b, m))
    valid = RNG.random((b, m)) > 0.2
    thr = np.array([0.3, 0.5, 0.4])
    if per_class:
        out = {"boxes": pred, "scores": RNG.random((b, n, c))}
        plabels = None
    else:
        plabels = RNG.integers(0, c, (b, n))
        out = {"boxes": pred, "scores": RNG.random((b, n)), "labels": plabels}
    out = jax.tree_util.tree_map(jnp.asarray, out)
    t = _prepared(targets.box_score(ref, labels, iou_threshold=thr, valid=valid,
                                    add_iou=add_iou), out)
    want = _np_box_score(ref, labels, valid, thr, pred, np.asarray(out["scores"]), plabels,
                         add_iou)
    assert np.count_nonzero(want) >= 2
    np.testing.assert_allclose(_call(t, out), want, rtol=1e-12)
    _fd_check(t, out, eps=1e-7)
    g = _grad(out, t)
    assert (float(np.abs(g["boxes"]).max()) > 0) == add_iou    # the IoU carries d/d boxes


def test_box_score_with_nothing_to_match(x64):
    out = {"boxes": jnp.zeros((2, 0, 4)), "scores": jnp.zeros((2, 0, 3))}
    t = _prepared(targets.box_score(np.array([[0, 0, 1, 1.0]]), [1]), out)
    np.testing.assert_array_equal(t(out), [0.0, 0.0])
    out = {"boxes": jnp.asarray(_random_boxes((2, 3))), "scores": jnp.ones((2, 3, 3))}
    t = _prepared(targets.box_score(np.zeros((0, 4)), np.zeros((0,), int)), out)
    np.testing.assert_array_equal(t(out), [0.0, 0.0])


# --- embeddings

def test_embedding_similarity_equals_torch_and_numpy(x64):
    torch = pytest.importorskip("torch")
    cos = torch.nn.functional.cosine_similarity
    e = RNG.normal(size=(5, 6))
    e[2] = 0.0                      # a zero embedding: cosine 0
    e[3] *= 1e-10                   # norm below eps = 1e-8: the clamped norm
    r = RNG.normal(size=6)
    t = _prepared(targets.embedding_similarity(r), e)
    got = np.asarray(_call(t, jnp.asarray(e)))
    want = cos(torch.from_numpy(e), torch.from_numpy(r)[None]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    normal = [0, 1, 4]
    np.testing.assert_allclose(got[normal], e[normal] @ r / (
        np.linalg.norm(e[normal], axis=-1) * np.linalg.norm(r)), rtol=1e-12)
    assert got[2] == 0.0
    np.testing.assert_allclose(got[3], e[3] @ r / (1e-8 * np.linalg.norm(r)), rtol=1e-12)
    # a reference per image, and a zero reference
    refs = RNG.normal(size=(5, 6))
    refs[1] = 0.0
    t = _prepared(targets.embedding_similarity(refs), e)
    np.testing.assert_allclose(_call(t, jnp.asarray(e)),
                               cos(torch.from_numpy(e), torch.from_numpy(refs)).numpy(),
                               rtol=1e-12, atol=1e-15)
    # gradients: central differences away from zero; at a zero embedding finite,
    # r / (eps |r|), as torch's
    ok = _prepared(targets.embedding_similarity(refs[[0, 2, 4]]), e[normal])
    _fd_check(ok, jnp.asarray(e[normal]))
    g = np.asarray(_grad(jnp.asarray(e), t))
    x = torch.from_numpy(e).requires_grad_(True)
    cos(x, torch.from_numpy(refs)).sum().backward()
    np.testing.assert_allclose(g[[0, 2, 4]], x.grad.numpy()[[0, 2, 4]], rtol=1e-10)
    np.testing.assert_allclose(g[2], refs[2] / (1e-8 * np.linalg.norm(refs[2])), rtol=1e-10)
    assert np.all(np.isfinite(g))


# --- the pytree design

def _examples():
    """(outputs, two targets of one configuration) for every kind of target."""
    logits = jnp.asarray(RNG.normal(size=(2, 5)), jnp.float32)
    pixels = jnp.asarray(RNG.normal(size=(2, 4, 4, 3)), jnp.float32)
    det = {"boxes": jnp.asarray(_random_boxes((2, 3)), jnp.float32),
           "scores": jnp.asarray(RNG.random((2, 3, 4)), jnp.float32)}
    emb = jnp.asarray(RNG.normal(size=(2, 6)), jnp.float32)
    return [
        (logits, targets.class_probability(1), targets.class_probability(np.array([3, 0]))),
        (pixels, targets.segmentation(0, np.ones((4, 4))),
         targets.segmentation(np.array([2, 1]), np.eye(4, dtype=bool))),
        (pixels, targets.segmentation(0, softmax=True), targets.segmentation(2, softmax=True)),
        (det, targets.box_score(np.asarray(det["boxes"][0, :2]), [1, 2]),
         targets.box_score(np.asarray(det["boxes"][:, 1:]), np.array([[0, 3], [3, 3]]),
                           iou_threshold=np.array([0.2, 0.9]), valid=np.array([1, 0]))),
        (emb, targets.embedding_similarity(np.ones(6)),
         targets.embedding_similarity(RNG.normal(size=(2, 6)))),
    ]


@pytest.mark.parametrize("case", range(5))
def test_one_compilation_for_targets_of_one_configuration(case):
    outputs, first, second = _examples()[case]
    traces = []

    @jax.jit
    def score(t, o):
        traces.append(1)
        return t(o)

    a, b = _prepared(first, outputs), _prepared(second, outputs)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    first, second = score(a, outputs), score(b, outputs)
    assert len(traces) == 1
    assert not np.allclose(first, second)                     # really another target


def test_static_configuration_is_not_traced():
    t = targets.segmentation(1, np.ones((4, 4)), softmax=True, output="seg")
    assert len(jax.tree_util.tree_leaves(t)) == 2              # classes, mask
    assert len(jax.tree_util.tree_leaves(targets.segmentation(1))) == 1
    assert (jax.tree_util.tree_structure(targets.segmentation(1, softmax=True))
            != jax.tree_util.tree_structure(targets.segmentation(1)))
    box = targets.box_score(np.zeros((2, 4)), [0, 1], add_iou=False, scores_key="s")
    assert len(jax.tree_util.tree_leaves(box)) == 4            # boxes, labels, valid, thr
    assert len(jax.tree_util.tree_leaves(targets.rest(1, output=0))) == 1


def test_a_user_target_follows_the_protocol():
    @struct.dataclass
    class Mean(targets.Target):
        weight: jax.Array

        def __call__(self, outputs):
            return self.weight * outputs.mean(-1)

    t = Mean(jnp.array([1.0, 2.0]))
    assert t.prepare(jax.ShapeDtypeStruct((2, 3), jnp.float32)) is t
    np.testing.assert_allclose(t(jnp.ones((2, 3))), [1.0, 2.0])
    with pytest.raises(NotImplementedError):
        targets.Target()(jnp.ones((2, 3)))


# --- prepare: broadcasting and checks

F32 = jnp.float32


def test_prepare_broadcasts_every_leaf_to_the_batch():
    logits = jax.ShapeDtypeStruct((3, 5), F32)
    t = targets.class_logit(np.int64(2)).prepare(logits)
    assert t.classes.shape == (3,) and t.classes.dtype == jnp.int32
    t = targets.segmentation(1, np.ones((4, 4), bool)).prepare(
        jax.ShapeDtypeStruct((3, 4, 4, 2), jnp.bfloat16))
    assert t.classes.shape == (3,) and t.mask.shape == (3, 4, 4)
    assert t.mask.dtype == jnp.bfloat16                        # the outputs' float dtype
    det = {"boxes": jax.ShapeDtypeStruct((3, 7, 4), F32),
           "scores": jax.ShapeDtypeStruct((3, 7), F32),
           "labels": jax.ShapeDtypeStruct((3, 7), jnp.int32)}
    t = targets.box_score(np.zeros((2, 4), np.float64), [1, 2], valid=[1, 0]).prepare(det)
    assert (t.boxes.shape, t.labels.shape, t.valid.shape, t.iou_threshold.shape) == (
        (3, 2, 4), (3, 2), (3, 2), (3,))
    assert (t.boxes.dtype, t.labels.dtype, t.valid.dtype, t.iou_threshold.dtype) == (
        F32, jnp.int32, jnp.bool_, F32)
    np.testing.assert_array_equal(t.valid, [[True, False]] * 3)
    t = targets.box_score(np.zeros((2, 4)), 1).prepare(det)   # one label for every box
    np.testing.assert_array_equal(t.labels, np.ones((3, 2)))
    t = targets.embedding_similarity(np.ones(6)).prepare(jax.ShapeDtypeStruct((3, 6), F32))
    assert t.reference.shape == (3, 6) and t.reference.dtype == F32


def test_prepare_under_a_callers_jit():
    s = jnp.asarray(RNG.normal(size=(2, 5)), F32)

    @jax.jit
    def score(c, o):
        return targets.class_logit(c).prepare(o)(o)

    # a traced class cannot be range-checked: no error (the lead's program decides)
    score(jnp.int32(7), s)
    np.testing.assert_allclose(score(jnp.array([1, 4]), s), np.asarray(s)[[0, 1], [1, 4]])
    with pytest.raises(ValueError, match=r"target class has shape \(3,\); expected"):
        score(jnp.array([1, 2, 3]), s)                        # shapes are still checked

    @jax.jit
    def seg(mask, o):
        return targets.segmentation(0, mask).prepare(_spec(o))(o)

    pixels = jnp.ones((2, 4, 4, 3))
    np.testing.assert_allclose(seg(jnp.ones((4, 4)), pixels), [16.0, 16.0])
    with pytest.raises(ValueError, match=r"mask has shape \(4, 3\)"):
        seg(jnp.ones((4, 3)), pixels)

    @jax.jit
    def box(ref, labels, thr, o):
        return targets.box_score(ref, labels, iou_threshold=thr).prepare(o)(o)

    det = {"boxes": jnp.array([[[0.0, 0.0, 2.0, 2.0]]] * 2), "scores": jnp.ones((2, 1, 3))}
    ref = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(box(ref, jnp.array([2]), jnp.float32(0.5), det), [2.0, 2.0])
    # a traced label cannot be range-checked: out of range, the gather fills with NaN
    assert np.isnan(box(ref, jnp.array([9]), jnp.float32(0.5), det)).all()
    with pytest.raises(ValueError, match=r"box label has shape \(2,\)"):
        box(jnp.zeros((1, 4)), jnp.array([0, 1]), jnp.float32(0.5), det)

    @jax.jit
    def emb(ref, o):
        return targets.embedding_similarity(ref).prepare(o)(o)

    np.testing.assert_allclose(emb(jnp.ones(3), jnp.ones((2, 3))), [1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"reference embedding has shape \(4,\)"):
        emb(jnp.ones(4), jnp.ones((2, 3)))


SEG = jax.ShapeDtypeStruct((2, 4, 4, 3), F32)
LOGITS = jax.ShapeDtypeStruct((2, 5), F32)
EMB = jax.ShapeDtypeStruct((2, 8), F32)
DET = {"boxes": jax.ShapeDtypeStruct((2, 5, 4), F32),
       "scores": jax.ShapeDtypeStruct((2, 5, 3), F32)}
BOX = np.zeros((1, 4))

ERRORS = [
    # wrong output kind
    (lambda: targets.segmentation(1).prepare(LOGITS), ValueError,
     (r"segmentation needs per-pixel logits \(B, H, W, C\); the head returns shape \(2, 5\)"
      r".*use an int class target")),
    (lambda: targets.class_logit(1).prepare(SEG), ValueError,
     r"class logits \(B, C\); the head returns shape \(2, 4, 4, 3\).*targets.segmentation"),
    (lambda: targets.class_logit(1).prepare({"a": LOGITS}), ValueError,
     r"class logits \(B, C\); the head returns a dict with keys 'a'.*output='key'"),
    (lambda: targets.class_logit(1).prepare(jax.ShapeDtypeStruct((2, 5), jnp.int32)),
     TypeError, r"needs float class logits"),
    (lambda: targets.embedding_similarity(np.ones(3)).prepare(SEG), ValueError,
     r"embedding_similarity needs embeddings \(B, D\); the head returns shape"),
    (lambda: targets.box_score(BOX, [0]).prepare(SEG), ValueError,
     r"box_score needs detector outputs, a dict with predicted boxes 'boxes' \(B, N, 4\)"),
    # classes
    (lambda: targets.segmentation(3).prepare(SEG), ValueError,
     r"segmentation class 3 is out of range: the logits have 3 classes.*\[0, 2\]"),
    (lambda: targets.class_logit(np.array([0, -1])).prepare(LOGITS), ValueError,
     r"target class -1 is out of range.*\[0, 4\]"),
    (lambda: targets.class_logit(2**32 + 1).prepare(LOGITS), ValueError,
     r"target class 4294967297 is out of range"),
    (lambda: targets.class_logit(np.array([0, 2**32 + 1])).prepare(LOGITS), ValueError,
     r"target class 4294967297 is out of range"),
    (lambda: targets.segmentation(1.5).prepare(SEG), TypeError,
     r"segmentation class must be ints.*got 1.5"),
    (lambda: targets.class_logit(np.array([True, False])).prepare(LOGITS), TypeError,
     r"must be ints.*dtype bool"),
    (lambda: targets.class_logit(np.array([0, 1, 2])).prepare(LOGITS), ValueError,
     r"target class has shape \(3,\); expected \(\) or \(2,\)"),
    (lambda: targets.ClassScore(1, "exp"), ValueError,
     r"unknown link 'exp'; expected one of \('logit', 'softmax', 'log_softmax', 'rest'\)"),
    # masks
    (lambda: targets.segmentation(1, np.ones((5, 4))).prepare(SEG), ValueError,
     (r"mask has shape \(5, 4\); expected \(H, W\) = \(4, 4\) or \(B, H, W\) = \(2, 4, 4\)"
      r".*resize the mask to \(4, 4\)")),
    (lambda: targets.segmentation(1, np.ones((3, 4, 4))).prepare(SEG), ValueError,
     r"mask has shape \(3, 4, 4\)"),
    (lambda: targets.segmentation(1, np.array([["a"]])).prepare(SEG), TypeError,
     r"mask must be numbers"),
    # output selection
    (lambda: targets.segmentation(1, output="logits").prepare({"out": SEG, "aux": LOGITS}),
     ValueError, r"no key 'logits'; available keys: 'out', 'aux'. Pass output="),
    (lambda: targets.class_logit(1, output="logits").prepare(LOGITS), ValueError,
     r"output='logits' selects a dict key, but the head returns shape \(2, 5\)"),
    (lambda: targets.class_logit(1, output=2).prepare((LOGITS, LOGITS)), ValueError,
     r"output index 2 is out of range: the head returns 2 outputs"),
    (lambda: targets.class_logit(1, output=0).prepare({"a": LOGITS}), ValueError,
     r"output=0 selects an item of a tuple.*dict with keys 'a'"),
    (lambda: targets.class_logit(1, output=1.0).prepare(LOGITS), TypeError,
     r"output must be None, a str \(a dict key\) or an int"),
    # embeddings
    (lambda: targets.embedding_similarity(np.ones(5)).prepare(EMB), ValueError,
     (r"reference embedding has shape \(5,\) \(dimension 5\), but the head returns "
      r"embeddings \(B, D\) = \(2, 8\): pass a reference of shape \(8,\) or \(2, 8\)")),
    (lambda: targets.embedding_similarity(np.ones((3, 8))).prepare(EMB), ValueError,
     r"reference embedding has shape \(3, 8\)"),
    # boxes
    (lambda: targets.box_score(BOX, [4]).prepare(DET), ValueError,
     r"box label 4 is out of range: the detector scores 3 classes.*\[0, 2\]"),
    (lambda: targets.box_score(BOX, [0], scores_key="logits").prepare(DET), ValueError,
     r"no key 'logits'; available keys: 'boxes', 'scores'"),
    (lambda: targets.box_score(BOX, [0]).prepare(
        {"boxes": DET["boxes"], "scores": jax.ShapeDtypeStruct((2, 5), F32)}), ValueError,
     (r"scores \(B, N\) need the predicted labels.*no key 'labels'; available keys: "
      r"'boxes', 'scores'")),
    (lambda: targets.box_score(BOX, [0]).prepare(
        {"boxes": DET["boxes"], "scores": jax.ShapeDtypeStruct((2, 5), F32),
         "labels": jax.ShapeDtypeStruct((2, 5), F32)}), TypeError,
     r"outputs\['labels'\] must be int labels"),
    (lambda: targets.box_score(BOX, [0]).prepare(
        {"boxes": jax.ShapeDtypeStruct((2, 5, 5), F32), "scores": DET["scores"]}),
     ValueError, r"outputs\['boxes'\] must be predicted boxes \(B, N, 4\)"),
    (lambda: targets.box_score(BOX, [0]).prepare(
        {"boxes": DET["boxes"], "scores": jax.ShapeDtypeStruct((2, 4, 3), F32)}),
     ValueError, r"outputs\['scores'\] must be scores \(B, N\) = \(2, 5\)"),
    (lambda: targets.box_score(np.zeros((1, 3)), [0]).prepare(DET), ValueError,
     r"reference boxes have shape \(1, 3\); expected \(M, 4\) or \(B, M, 4\)"),
    (lambda: targets.box_score(np.zeros((3, 1, 4)), [0]).prepare(DET), ValueError,
     (r"reference boxes has shape \(3, 1, 4\); expected \(M, 4\) or \(B, M, 4\) = "
      r"\(2, M, 4\)")),
    (lambda: targets.box_score(np.zeros((2, 4)), [0]).prepare(DET), ValueError,
     r"box label has shape \(1,\); expected \(\) or \(2,\) or \(2, 2\)"),
    (lambda: targets.box_score(BOX, [0], valid=[1, 1]).prepare(DET), ValueError,
     r"valid has shape \(2,\); expected \(M,\) = \(1,\) or \(B, M\) = \(2, 1\)"),
    (lambda: targets.box_score(BOX, [0], iou_threshold=[0.5, 0.5, 0.5]).prepare(DET),
     ValueError, r"iou_threshold has shape \(3,\); expected a number or \(B,\) = \(2,\)"),
    (lambda: targets.box_score(BOX, [0], output="det").prepare((DET,)), ValueError,
     r"output='det' selects a dict key, but the head returns a tuple of 1 outputs"),
]


@pytest.mark.parametrize("make, error, match", ERRORS,
                         ids=[str(i) for i in range(len(ERRORS))])
def test_every_error_names_the_problem(make, error, match):
    with pytest.raises(error, match=match):
        make()
