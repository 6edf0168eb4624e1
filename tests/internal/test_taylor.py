"""The generic engine's series propagation (jaxcam.derivatives._lowering) against nested jax.jvp.

Every head is checked direction by direction against the reference written here: K
nested ``jax.jvp`` of the whole function along the basis vector, ``vmap``-ed. Float32 is
compared relative to the largest derivative of each order; float64 tightly.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.derivatives import _lowering
from jaxcam.derivatives._conv import Run, conv_as_matmul, conv_runs
from jaxcam.derivatives._lowering import directional_derivatives
from jaxcam.derivatives import taylor_along
from jaxcam.derivatives._taylor import basis_derivatives

NHWC = ("NHWC", "HWIO", "NHWC")
NCHW = ("NCHW", "OIHW", "NCHW")


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def reference(fn, a, order, idx):
    """(len(idx), order, *out): nested jvp of fn along the basis vectors e_idx."""
    basis = jnp.eye(a.size, dtype=a.dtype)[np.asarray(idx)].reshape(len(idx), *a.shape)
    return jax.jit(jax.vmap(lambda v: taylor_along(fn, a, v, order)))(basis)


def series(fn, a, order, idx):
    """The same by series propagation."""
    basis = jnp.eye(a.size, dtype=a.dtype)[np.asarray(idx)].reshape(len(idx), *a.shape)

    @jax.jit
    def run(a, basis):
        along = directional_derivatives(fn, a, order)
        assert along is not None
        return jax.vmap(along)(basis)

    return run(a, basis)


def assert_same(fn, a, *, order=3, idx=None, rtol=None):
    """Series propagation == nested jvp on every direction in idx (default: all)."""
    idx = np.arange(a.size) if idx is None else idx
    want, got = reference(fn, a, order, idx), series(fn, a, order, idx)
    assert got.shape == want.shape and got.dtype == want.dtype
    want, got = np.asarray(want), np.asarray(got)
    rtol = rtol or (1e-12 if want.dtype == np.float64 else 2e-5)
    for k in range(order):
        scale = np.abs(want[:, k]).max()
        assert scale > 0, f"order {k + 1}: every derivative is zero; the head tests nothing"
        np.testing.assert_allclose(got[:, k], want[:, k], rtol=0, atol=rtol * scale,
                                   err_msg=f"order {k + 1}")


def _rng_params(seed, dtype, **shapes):
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])), dtype)
            for name, shape in shapes.items()}


def _point(shape, dtype, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


# --- convolutions as matrix products -------------------------------------------------

def test_conv_runs_split_off_the_padding():
    # 3x3 window on a 2x2 map padded to 4: each output reads data at two taps only
    assert conv_runs(4, 3, 1, 1, (1, 3)) == [Run(0, 1, 1, 3), Run(1, 1, 0, 2)]
    # on a 14-long map the padding is a small part: one run with every tap
    assert conv_runs(16, 3, 1, 1, (1, 15)) == [Run(0, 14, 0, 3)]
    # stride 2, dilation 2: output o reads positions 2 o + 2 k, data at 1..5
    assert conv_runs(7, 2, 2, 2, (1, 6), dense_fraction=2.0) == [
        Run(0, 1, 1, 2), Run(1, 1, 0, 2), Run(2, 1, 0, 1)]


CONVS = [  # (input h, w, channels), kernel k, out, stride, padding, lhs dil, rhs dil, groups, layout
    ((2, 2, 4), 3, 6, 1, "SAME", 1, 1, 1, NHWC),
    ((4, 5, 4), 3, 6, 2, ((1, 1), (2, 0)), 1, 1, 1, NHWC),
    ((5, 5, 4), 2, 6, 1, ((-1, 2), (1, -1)), 1, 2, 2, NHWC),
    ((3, 4, 4), 3, 8, 1, ((1, 2), (2, 1)), 2, 1, 4, NHWC),  # depthwise, multiplier 2, transposed
    ((6, 6, 6), 3, 6, 2, "SAME", 1, 1, 6, NCHW),          # depthwise, NCHW
    ((4, 4, 4), 1, 6, 2, "VALID", 1, 1, 1, NCHW),
    ((1, 3, 4), 3, 4, 1, ((0, 0), (1, 1)), 1, 1, 2, NHWC),
]


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("dense_fraction", [0.8, 2.0])
def test_conv_as_matmul_equals_lax(x64, case, dense_fraction):
    (h, w, c), k, o, stride, padding, lhs_dil, rhs_dil, groups, layout = case
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, h, w, c) if layout == NHWC else (2, c, h, w))
    kernel = rng.normal(size=(k, k, c // groups, o) if layout == NHWC else (o, c // groups, k, k))
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(stride, stride),
                             padding=padding, lhs_dilation=(lhs_dil,) * 2,
                             rhs_dilation=(rhs_dil,) * 2, dimension_numbers=layout,
                             feature_group_count=groups)
    (eqn,) = [e for e in jax.make_jaxpr(conv)(x, kernel).jaxpr.eqns
              if e.primitive is jax.lax.conv_general_dilated_p]
    lowered = functools.partial(conv_as_matmul, dense_fraction=dense_fraction, **eqn.params)
    got = jax.jit(lowered)(x, kernel)
    np.testing.assert_allclose(got, conv(x, kernel), rtol=1e-12, atol=1e-12)


def test_conv_as_matmul_keeps_batch_groups(x64):
    rng = np.random.default_rng(0)
    x, kernel = rng.normal(size=(4, 3, 3, 2)), rng.normal(size=(3, 3, 2, 6))
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                             padding="SAME", dimension_numbers=NHWC, batch_group_count=2)
    (eqn,) = jax.make_jaxpr(conv)(x, kernel).jaxpr.eqns
    np.testing.assert_allclose(conv_as_matmul(x, kernel, **eqn.params), conv(x, kernel),
                               rtol=1e-12, atol=1e-12)


def test_series_lowers_convolutions_to_matrix_products():
    v = _rng_params(0, jnp.float32, k=(3, 3, 4, 8))
    head = lambda a: jnp.tanh(_conv(a[None], v["k"], 1, "SAME"))  # noqa: E731
    a = _point((2, 2, 4), jnp.float32)
    basis = jnp.zeros((3, *a.shape), a.dtype)
    text = jax.jit(lambda a, b: jax.vmap(directional_derivatives(head, a, 3))(b)).lower(
        a, basis).as_text()
    # one convolution: the primal, evaluated once; the series go through dot_general
    assert text.count("stablehlo.convolution") == 1 and "dot_general" in text


# --- series propagation against nested jvp, head by head -----------------------------

def _conv(a, k, stride, padding, rhs_dil=1, groups=1, layout=NHWC):
    return jax.lax.conv_general_dilated(a, k, (stride, stride), padding,
                                        rhs_dilation=(rhs_dil, rhs_dil),
                                        dimension_numbers=layout, feature_group_count=groups)


@pytest.mark.parametrize("stride, padding, rhs_dil, groups", [
    (1, "SAME", 1, 1), (2, ((1, 1), (1, 1)), 1, 1), (1, ((2, 2), (0, 2)), 2, 1),
    (1, "SAME", 1, 2), (2, "SAME", 1, 4)])
def test_conv_heads(stride, padding, rhs_dil, groups):
    v = _rng_params(0, jnp.float32, k1=(3, 3, 4 // groups, 8), k2=(3, 3, 8, 8),
                    w=(8, 5), b=(1, 5))

    def head(a):  # (h, w, 4) -> (5,)
        h = jax.nn.gelu(_conv(a[None], v["k1"], stride, padding, rhs_dil, groups),
                        approximate=False)
        h = jax.nn.softplus(_conv(h, v["k2"], 1, "SAME"))
        return (h.mean(axis=(1, 2)) @ v["w"] + v["b"])[0]

    assert_same(head, _point((4, 4, 4), jnp.float32))


def test_max_pool_relu_dense_head():
    v = _rng_params(0, jnp.float32, k=(3, 3, 3, 6), w1=(24, 16), w2=(16, 4))

    def head(a):  # VGG-like: conv, ReLU, max-pool with padding, two dense layers
        h = jax.nn.relu(_conv(a[None], v["k"], 1, "SAME"))
        h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        h = jax.nn.silu(h.reshape(1, -1) @ v["w1"])
        return (h @ v["w2"])[0]

    a = _point((4, 4, 3), jnp.float32)
    assert {_lowering.rule_for(e, [True] * len(e.invars))
            for e in jax.make_jaxpr(head)(a).jaxpr.eqns
            if e.primitive.name == "reduce_window_max"} == {"piecewise_linear"}
    assert_same(head, a)


def _elementwise_zoo(a, w):
    """Scalar function exercising every rule: elementwise functions of one series,
    products and quotients of two, structural ops, a bilinear dot, sorting, a custom_jvp
    function, a primitive without a rule (cumprod) and control flow (cond)."""
    x = a.reshape(-1) @ w                                     # (6,)
    y = jnp.tanh(x) + jax.nn.sigmoid(2 * x) * jnp.exp(-x**2) + jax.lax.rsqrt(1 + x**2)
    y = y + jnp.log1p(jnp.exp(x)) / (2 + jnp.sin(x)) + jax.scipy.special.erf(x) ** 3
    y = y + jnp.maximum(x, 0.1) + jnp.where(x > 0, x**2, -x) + jnp.abs(x) ** 1.5
    m = jnp.outer(y, x)                                       # bilinear
    z = jax.nn.softmax(m @ m.T / 10.0, axis=-1) @ jnp.sort(y)
    z = jnp.concatenate([z, jnp.pad(x, (1, 2))[:3]]) * jnp.cumprod(1 + 0.1 * z[:1] * x[:4])[0]
    z = jax.lax.cond(x[0] > -100.0, lambda z: jnp.sinh(z) / 3, lambda z: z, z)
    return jnp.sum(z * jnp.arange(1.0, z.shape[0] + 1, dtype=z.dtype)) + jnp.max(x * y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_bilinear_and_fallback_rules(x64, dtype):
    w = _rng_params(0, dtype, w=(12, 6))["w"]
    a = _point((2, 2, 3), dtype)
    fn = functools.partial(_elementwise_zoo, w=w)
    rules = {(e.primitive.name, _lowering.rule_for(e, [True] * len(e.invars)))
             for e in jax.make_jaxpr(fn)(a).jaxpr.eqns}
    assert {("cond", "generic"), ("dot_general", "bilinear"), ("jit", "nested")} <= rules
    # float32: third derivatives of this function lose ~7e-5 (relative) to rounding in
    # nested jvp itself, measured against float64; float64 is the tight check
    assert_same(fn, a, rtol=1e-12 if dtype == "float64" else 2e-4)


def test_unhandled_primitive_goes_through_nested_jvp():
    eqn = jax.make_jaxpr(lambda x: jax.lax.cumprod(x))(jnp.ones(3)).jaxpr.eqns[0]
    assert _lowering.rule_for(eqn, [True]) == "generic"

    @jax.custom_jvp
    def cube(x):  # a custom rule that differs from the primal's derivative
        return x**3

    cube.defjvp(lambda p, t: (cube(p[0]), 2.0 * p[0] ** 2 * t[0]))
    fn = lambda a: jnp.sum(jax.lax.cumprod(cube(a) + 2.0) * jnp.exp(-a))  # noqa: E731
    a = _point((5,), jnp.float32)
    assert_same(fn, a)
    # the custom rule is used, as nested jvp uses it: d/dx cube = 2 x^2 at order 1
    got = series(lambda a: jnp.sum(cube(a)), a, 2, [0])[0]
    np.testing.assert_allclose(got, [2.0 * a[0] ** 2, 4.0 * a[0]], rtol=1e-6)


def test_stop_gradient_and_constant_outputs():
    fn = lambda a: jnp.sum(jax.lax.stop_gradient(a) * a) + 0.0 * jnp.sum(a)  # noqa: E731
    a = _point((3,), jnp.float32)
    got = series(fn, a, 3, [0, 1, 2])
    np.testing.assert_allclose(got[:, 0], a, rtol=1e-6)
    np.testing.assert_array_equal(got[:, 1:], 0.0)
    const = series(lambda a: jnp.ones(2), a, 3, [0])
    np.testing.assert_array_equal(const, 0.0)


def test_float64_conv_head_is_tight(x64):
    v = _rng_params(0, jnp.float64, k1=(3, 3, 3, 5), k2=(2, 2, 5, 5), w=(5, 3))

    def head(a):
        h = jnp.tanh(_conv(a[None], v["k1"], 2, "SAME"))
        h = jax.nn.softplus(_conv(h, v["k2"], 1, "VALID", rhs_dil=2))
        return (h.mean(axis=(1, 2)) @ v["w"])[0]

    assert_same(head, _point((5, 5, 3), jnp.float64), rtol=1e-12)


def test_non_array_output_falls_back_to_nested_jvp():
    a = _point((3,), jnp.float32)
    assert directional_derivatives(lambda a: (a, a), a, 2) is None
    assert directional_derivatives(lambda a: (a > 0).astype(jnp.int32), a, 2) is None


# --- basis_derivatives ----------------------------------------------------------------

def _softmax_reduce(s0, c):
    """Derivatives of log_softmax(S)_c along the logits' curve (order, C) -> (order,)."""
    def reduce(coeffs):
        def along(t):
            return jax.nn.log_softmax(s0 + t * coeffs[0] + t**2 / 2 * coeffs[1]
                                      + t**3 / 6 * coeffs[2])[c]
        return taylor_along(along, jnp.zeros((), s0.dtype), jnp.ones((), s0.dtype), 3)
    return reduce


def test_basis_derivatives_default_equals_nested_jvp_under_jit_and_vmap():
    v = _rng_params(0, jnp.float32, k=(3, 3, 3, 6), w=(6, 4))

    def head(a):
        h = jax.nn.gelu(_conv(a[None], v["k"], 1, "SAME"), approximate=False)
        return (h.mean(axis=(1, 2)) @ v["w"])[0]

    points = jnp.stack([_point((3, 3, 3), jnp.float32, seed) for seed in (1, 2)])

    def derivs(a, propagation):
        reduce = _softmax_reduce(jax.lax.stop_gradient(head(a)), 2)
        return basis_derivatives(head, a, 3, 7, reduce, propagation=propagation)

    run = jax.jit(jax.vmap(derivs, in_axes=(0, None)), static_argnums=1)
    got, want = run(points, "series"), run(points, "nested_jvp")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * np.abs(w).max())
    alone = jax.jit(derivs, static_argnums=1)(points[1], "series")
    for g, w in zip(got, alone):
        np.testing.assert_allclose(g[1], w, rtol=1e-6, atol=1e-7 * np.abs(w).max())
    with pytest.raises(ValueError, match="propagation"):
        basis_derivatives(head, points[0], 3, 7, propagation="jet")


# --- zoo heads --------------------------------------------------------------------------

def _zoo_head(name, layer, size, activation):
    split = jaxcam.models.load(name, layer=layer, weights="random", activation=activation)
    x = jax.random.normal(jax.random.key(0), (1, size, size, 3))
    a = split.activations(x)[0]
    return (lambda a: split.logits_from(a[None])[0]), a


def test_resnet18_layer4_gelu_head():
    head, a = _zoo_head("resnet18", "layer3", 32, "gelu")     # A: 2 x 2 x 256
    idx = np.random.default_rng(0).choice(a.size, 12, replace=False)
    assert_same(head, a, idx=idx)


@pytest.mark.slow
def test_efficientnet_lite0_depthwise_head():
    head, a = _zoo_head("efficientnet_lite0", "_blocks.14", 64, "silu")
    idx = np.random.default_rng(0).choice(a.size, 8, replace=False)
    assert_same(head, a, idx=idx)
