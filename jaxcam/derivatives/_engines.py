"""Pure (diagonal) derivatives of the explained score in every activation.

Grad-CAM++ (eq. 10) needs, for every element A_i of the activations, the pure partial
derivatives d^k Y / dA_i^k, k = 1, 2, 3: the derivatives of t -> Y(A + t e_i) at t = 0.

Two exact engines compute them and must agree:

* generic: one directional Taylor expansion per basis vector e_i
  (:func:`jaxcam.derivatives.basis_derivatives`): the head's jaxpr is evaluated once at A,
  then the truncated Taylor series of the values that depend on the direction are
  propagated (:mod:`jaxcam.derivatives._lowering`; nested ``jax.jvp`` for primitives without a series
  rule), ``vmap``-ed over chunks of directions under ``lax.map``, so memory is bounded by
  the chunk, not by the element count.
* linearised, for piecewise-linear heads: near almost every A the logits are
  S(A + t e_i) = S(A) + t J e_i, so the derivatives along e_i are those of the link
  along the column u_i = J e_i of the logit Jacobian J (C x n). Links of the target logit
  alone ("logit", "exp") need one row of J (the gradient); the others need all C rows,
  built by min(C, n) vector products. The link's derivatives along each column are tiny.

``derivatives="approx"`` is the closed form every other library uses: D_k = g^k with g = dY/dA.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxcam._checks import check_choice, check_positive_int
from jaxcam.targets import _links as L
from jaxcam.derivatives import _twofloat as TF
from jaxcam.targets._objective import Objective, resolve_for
from jaxcam._chunking import DEFAULT_CHUNKS, chunked_map, chunked_sum
from jaxcam.splitting._split import vmap_examples
from jaxcam.derivatives._taylor import basis_derivatives

Array = jax.Array
DERIVATIVES = ("approx", "exact")
ENGINES = ("auto", "generic", "linearised")
DEFAULT_CHUNK = DEFAULT_CHUNKS["directions"]


def pure_derivatives(fn: Callable[[Array], Array], a: Array, *, order: int = 3,
                     derivatives: str = "exact",
                     chunk_size: int | None = None) -> tuple[Array, ...]:
    """Pure partial derivatives d^k fn / d a_i^k of a scalar function, for every element.

    Args:
      fn: scalar function of an array.
      a: the point, any shape.
      order: the highest derivative (1, 2, 3, ...).
      derivatives: "exact" (the generic engine: a Taylor series along every basis
        vector) or "approx" (the closed form of Grad-CAM++: g, g^2, g^3, ... with g = grad fn; exact
        only for fn = exp(linear)).
      chunk_size: directions evaluated together (``vmap``); memory grows with it. Default
        256.

    Returns:
      A tuple of ``order`` arrays shaped like ``a``: (D1, D2, ...).

    Kinks: where ``fn`` is not differentiable at ``a`` along e_i (a ReLU input exactly at
    its threshold; a max-pool window whose maximum is attained more than once, as every
    all-zero window of post-ReLU activations), the pure derivative does not exist and
    what comes back is JAX's convention: ``jax.nn.relu`` / ``relu6`` have derivative 0
    at their thresholds, ``jnp.maximum`` / ``jnp.minimum`` give each of two equal
    operands half, and a tied max-pool window passes the whole derivative to its first
    tied element (in window order) and none to the others.
    :func:`jaxcam.compare_derivatives` reports the share of activations where this
    happens.

    Example::

        d1, d2, d3 = jaxcam.pure_derivatives(lambda a: jnp.sum(jnp.sin(a)), a)
        # d1 = cos(a), d2 = -sin(a), d3 = -cos(a)
    """
    check_choice("derivatives", derivatives, DERIVATIVES)
    order = check_positive_int("order", order)
    chunk = DEFAULT_CHUNK if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    a = _check_point(fn, a)
    if derivatives == "approx":
        g = jax.grad(fn)(a)
        return tuple(g**k for k in range(1, order + 1))
    return basis_derivatives(fn, a, order, chunk)


def _check_point(fn: Callable[[Array], Array], a) -> Array:
    """``a`` as a float array at which ``fn`` returns a float scalar (checked by shape)."""
    a = a if isinstance(a, jax.Array) else jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"a must be a float array (derivatives need real inputs), got dtype "
                        f"{a.dtype}")
    try:
        out = jax.eval_shape(fn, a)
    except Exception as e:  # a user's function: report it with the shapes
        raise ValueError(f"fn failed on a of shape {a.shape} ({a.dtype}): "
                         f"{type(e).__name__}: {e}") from e
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        got = (f"shape {out.shape} ({out.dtype})" if hasattr(out, "shape")
               else type(out).__name__)
        raise ValueError(f"fn must return a float scalar, shape (); it returned {got} for a "
                         f"of shape {a.shape}")
    return a


# --- the explained score of a split: per-example scalar functions of A


def head_gradient(split, a: Array, objective: Objective, classes: Array):
    """g = dY/dA through the head only (never the trunk, never the parameters).

    Returns:
      (g (B, h, w, K), logits (B, C), classes (B,)): the classes are resolved here when
      the objective explains the predicted class.
    """
    logits, head_vjp = jax.vjp(split.logits_from, a)
    logits_0 = jax.lax.stop_gradient(logits)
    classes = objective.classes(logits_0, classes)
    (g,) = head_vjp(objective.gradient(logits_0, classes))
    return g, logits, classes


def _needs_one_row(objective: Objective) -> bool:
    return objective.by_class and L.LINKS[objective.link].scalar


def _central_moments(deviations, p: Array, chunk: int) -> tuple[Array, Array]:
    """sum_j p_bj d_bj^k for k = 2, 3, from ``deviations(idx)``: the deviations d_bj
    (chunk, B, ...) of the classes ``idx`` (chunk,), ``chunk`` classes at a time (padded
    classes past C are dropped by the chunked sum)."""
    classes = p.shape[-1]

    def moments(idx):
        dev = deviations(idx)
        w = jnp.take(p, jnp.minimum(idx, classes - 1), axis=-1).T               # (chunk, B)
        w_d2 = w.reshape(w.shape + (1,) * (dev.ndim - 2)) * dev * dev
        return w_d2, w_d2 * dev

    return chunked_sum(moments, n=classes, chunk=chunk)


def _jacobian_moments(head_vjp, a: Array, p: Array, chunk: int) -> tuple[Array, Array]:
    """sum_j p_bj d_bj^k for k = 2, 3, every example b and activation, with
    d_bj = J_bj - E_p[J_b] the deviations of the rows of the head's Jacobian
    J_bj = dS_bj/dA_b from their p-weighted mean. Each deviation is one vector-Jacobian
    product of the cotangent onehot_j - p (:func:`jaxcam.targets._links.centring_cotangents`), so
    the moments are central by construction. Built ``chunk`` classes at a time (memory of
    one chunk of rows, never the whole C x n Jacobian)."""
    return _central_moments(
        lambda idx: jax.vmap(lambda e: head_vjp(e)[0])(L.centring_cotangents(p, idx)),
        p, chunk)


def _matrix_moments(w: Array, p: Array, chunk: int) -> tuple[Array, Array]:
    """:func:`_jacobian_moments` of an affine head m -> m W + b on pooled activations
    (B, 1, 1, K), from W (K, C) itself: the deviations W_j - E_p[W] cost B K per class
    instead of a vector-Jacobian product each. The most probable class r's deviation
    takes the exact form sum_{l != r} p_l (W_r - W_l) (one cotangent product), so the
    moments stay accurate when p_r is close to 1."""
    classes = p.shape[-1]
    wt = w.T                                                             # (C, K)
    hp = jax.lax.Precision.HIGHEST
    mean = jnp.matmul(p, wt, precision=hp)                               # (B, K)
    mode = jnp.argmax(p, axis=-1)                                        # (B,)
    is_mode = jax.nn.one_hot(mode, classes, dtype=p.dtype) > 0           # (B, C)
    at_mode = jnp.matmul(L.centred_target(p, is_mode), wt, precision=hp)  # (B, K)

    def deviations(idx):                                                 # (chunk, B, K)
        safe = jnp.minimum(idx, classes - 1)
        dev = wt[safe][:, None, :] - mean[None]
        return jnp.where((safe[:, None] == mode[None])[..., None], at_mode[None], dev)

    m2, m3 = _central_moments(deviations, p, chunk)
    return m2[:, None, None], m3[:, None, None]


def _softmax_family(split, a: Array, logits: Array, classes: Array, link: str, order: int,
                    chunk: int, matrix: Array | None = None) -> tuple[Array, ...]:
    """softmax / log_softmax on a piecewise-linear head, along the straight curves
    S + t J e_i of every activation at once. With d_j = J_j - E_p[J] (every class's
    column entries relative to their mean): h1 = d_c, h2 = -sum_j p_j d_j^2,
    h3 = -sum_j p_j d_j^3 (:mod:`jaxcam.targets._links`). ``matrix``: J itself (K, C), for an
    affine head on pooled activations."""
    _, head_vjp = jax.vjp(split.logits_from, a)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    (h1,) = head_vjp(L.class_gradient("log_softmax", logits, classes))
    p = jnp.exp(log_p)
    m2, m3 = (_jacobian_moments(head_vjp, a, p, chunk) if matrix is None
              else _matrix_moments(matrix, p, chunk))
    h = (h1, -m2, -m3)
    target = jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype)
    if link == "softmax":
        p_c = jnp.exp(jnp.sum(target * log_p, axis=-1))[:, None, None, None]
        h = tuple(p_c * d for d in L.bell(*h))
    elif link == "rest":                       # S_c + log_softmax_c: S_c is linear in t
        (u,) = head_vjp(target)
        h = (h[0] + u, h[1], h[2])
    return h[:order]


def _linearised(split, a: Array, logits: Array, classes: Array, objective: Objective,
                order: int, chunk: int, matrix: Array | None = None) -> tuple[Array, ...]:
    """The linearised engine on a batch: a (B, h, w, K), logits (B, C), classes (B,);
    ``matrix``: the head's Jacobian (K, C) when a is pooled (B, 1, 1, K) and the head
    affine."""
    if _needs_one_row(objective):
        # Y depends on S_c alone: the column entries needed form the gradient row
        # u = dS_c/dA, and the derivatives are those of the link along u, elementwise.
        _, head_vjp = jax.vjp(split.logits_from, a)
        onehot = jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype)
        (u,) = head_vjp(onehot)
        zero = jnp.zeros_like(u)
        d = L.bell(u, zero, zero) if objective.link == "exp" else (u, zero, zero)
        return d[:order]
    if objective.by_class and logits.shape[-1] <= a[0].size:
        return _softmax_family(split, a, logits, classes, objective.link, order, chunk,
                               matrix)
    one = lambda split, a, s0, c: _columns_one(split, a, s0, c, objective, order, chunk)
    return vmap_examples(one, split, a, logits, classes)


def _columns_one(split, a: Array, s0: Array, c: Array, objective: Objective, order: int,
                 chunk: int) -> tuple[Array, ...]:
    """Any objective, ONE example: the whole Jacobian by min(C, n) vector products, then
    the objective's derivatives along each of its columns (straight curves). Outputs of
    any pytree are flattened to one vector of C entries."""
    s0_flat, unravel = ravel_pytree(s0)
    head = lambda a: ravel_pytree(split.logits_from(a[None])[0])[0]
    n, classes = a.size, s0_flat.shape[-1]
    if classes <= n:
        _, head_vjp = jax.vjp(head, a)
        jac = jax.vmap(lambda e: head_vjp(e)[0])(jnp.eye(classes, dtype=s0_flat.dtype))
        columns = jac.reshape(classes, n).T                        # (n, C)
    else:
        basis = jnp.eye(n, dtype=a.dtype).reshape(n, *a.shape)
        columns = jax.vmap(lambda v: jax.jvp(head, (a,), (v,))[1])(basis)  # (n, C)

    def along(idx):
        cols = columns[jnp.minimum(idx, n - 1)]
        line = lambda u: jax.vmap(unravel)(
            jnp.concatenate([u[None], jnp.zeros((order - 1, *u.shape), u.dtype)]))
        return jax.vmap(lambda u: objective.taylor(s0, c, line(u)))(cols)

    d = chunked_map(along, n=n, chunk=chunk)  # (n, order)
    return tuple(d[:, k].reshape(a.shape) for k in range(order))


def pooled_linear_parts(split, a: Array) -> tuple[Array, Array]:
    """(W (K, C), b (C,)) of a split whose head is f(mean_hw A) with f affine
    (``split.gap_linear_head``: ResNet at ``layer4``, EfficientNet-Lite0 at ``_swish``),
    read exactly through the head at activations shaped like ``a`` (B, h, w, K)."""
    if not split.gap_linear_head:
        raise ValueError("pooled_linear_parts needs a head of global average pooling and "
                         "one linear layer (split.gap_linear_head); split a ResNet at "
                         "'layer4' or EfficientNet-Lite0 at '_swish'")
    k = a.shape[-1]
    return TF.affine_parts(lambda m: split.logits_from(m.reshape(-1, 1, 1, k)), k, a.dtype)


def rounded_logits(split, a: Array) -> Array:
    """The logits (B, C) of a pooled linear head at float32 activations ``a``, the exact
    value rounded once to float32 (the plain float32 head is about sqrt(K) roundings off).
    Exact Grad-CAM++ feeds these to its link (see :mod:`jaxcam.derivatives._twofloat`)."""
    if a.dtype != jnp.float32:
        raise ValueError(f"rounded_logits is for float32 activations, got {a.dtype}")
    return TF.pooled_linear_logits(a, *pooled_linear_parts(split, a))


def _pooled_affine(split, a: Array, logits) -> tuple[Array, Array] | None:
    """(W, b) of a float32 head f(mean_hw A) with f affine (``split.gap_linear_head``),
    read exactly (:func:`jaxcam.derivatives._twofloat.affine_parts`); None for any other head."""
    if not (split.gap_linear_head and not split.needs_input and a.dtype == jnp.float32
            and isinstance(logits, jax.Array) and logits.ndim == 2):
        return None
    return pooled_linear_parts(split, a)


def cam_derivatives(split, a: Array, objective: Objective, classes: Array, *, order: int,
                    derivatives: str = "approx", engine: str = "auto",
                    chunk_size: int | None = None) -> tuple[Array, ...]:
    """(D1, .., D_order), each (B, h, w, K): pure derivatives of each example's score Y_b
    in each of its activations.

    Args:
      derivatives: "approx" (closed form g^k) or "exact".
      engine: for "exact": "generic", "linearised" (valid for piecewise-linear heads
        only), or "auto" (linearised when ``split.piecewise_linear_head``).
    """
    check_choice("derivatives", derivatives, DERIVATIVES)
    check_choice("engine", engine, ENGINES)
    g, logits, classes = head_gradient(split, a, objective, classes)
    if derivatives == "approx":
        return tuple(g**k for k in range(1, order + 1))
    chunk = chunk_size or DEFAULT_CHUNK
    affine = None if _needs_one_row(objective) else _pooled_affine(split, a, logits)
    if affine is not None:
        # Near a pole of Grad-CAM++'s denominator the exact map amplifies the float32
        # head's own rounding (sqrt(K) roundings over K channels) beyond 1e-3 relative;
        # with the logits rounded once it stays within 1e-3 of float64 at every confidence
        # (benchmarks/bench_float32_gaps.py).
        logits = TF.pooled_linear_logits(jax.lax.stop_gradient(a), *affine)
    if engine == "auto":
        engine = "linearised" if split.piecewise_linear_head else "generic"
    if engine == "linearised":
        logits = jax.lax.stop_gradient(logits)
        if split.gap_linear_head:
            # head(A) = f(mean_hw A) with f affine: a unit step in A_hwk is a step of 1/Z in
            # the mean, so the k-th pure derivative is that of the pooled problem over Z^k,
            # the same at every position. The pooled problem is a 1 x 1 map.
            z = a.shape[1] * a.shape[2]
            pooled = jnp.mean(a, axis=(1, 2), keepdims=True)
            matrix = None if affine is None else affine[0]
            d = _linearised(split, pooled, logits, classes, objective, order, chunk, matrix)
            return tuple(jnp.broadcast_to(dk / z**k, a.shape) for k, dk in enumerate(d, 1))
        return _linearised(split, a, logits, classes, objective, order, chunk)

    def one(split, a, s0, c):
        head = lambda a: jax.tree_util.tree_map(lambda v: v[0], split.logits_from(a[None]))
        if objective.by_class:  # the link's closed forms along the logits' curve
            return basis_derivatives(head, a, order, chunk,
                                     reduce=lambda coeffs: objective.taylor(s0, c, coeffs))
        # any other score: one scalar function of A, its scalar link applied after
        score = objective.raw_score(c)
        return basis_derivatives(lambda a: score(head(a)), a, order, chunk,
                                 reduce=objective.link_along)

    return vmap_examples(one, split, a, jax.lax.stop_gradient(logits), classes)


def head_derivatives(split, a: Array, target=None, *, link: str = "exp", order: int = 3,
                     derivatives: str = "exact", engine: str = "auto",
                     chunk_size: int | None = None) -> tuple[Array, ...]:
    """(D1, .., D_order), each (B, h, w, K): the pure derivatives of each example's score
    Y_b = link(head(A_b))_c in each of its activations, back through the head only.

    Args:
      split: the split model (``split.given(x)`` when its head also needs the input).
      a: activations (B, h, w, K), e.g. ``split.activations(x)``.
      target: None (each example's top class), an int, an int array (B,), a target of
        :mod:`jaxcam.targets`, or a callable ``outputs -> scores (B,)``.
      link: "logit", "exp", "softmax" or "log_softmax".
      order: the highest derivative.
      derivatives: "exact" or "approx" (Grad-CAM++'s closed form g^k).
      engine: "auto", "generic" or "linearised" (exact derivatives; see :func:`jaxcam.grad_cam_pp`).
      chunk_size: activations (directions) or classes handled together by the exact
        engines; bounds their memory.

    Example::

        d1, d2, d3 = jaxcam.derivatives.head_derivatives(split, split.activations(x), 282,
                                                         link="softmax")
    """
    check_choice("derivatives", derivatives, DERIVATIVES)
    check_choice("engine", engine, ENGINES)
    order = check_positive_int("order", order)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    a = a if isinstance(a, jax.Array) else jnp.asarray(a)
    if a.ndim != 4:
        raise ValueError(f"a must be activations (B, h, w, K), got shape {a.shape}")
    objective, classes = resolve_for(jax.eval_shape(split.logits_from, a), target, link)
    return cam_derivatives(split, a, objective, classes, order=order, derivatives=derivatives,
                           engine=engine, chunk_size=chunk_size)
