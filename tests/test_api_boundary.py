"""The API boundary: every bad input is refused with an error that names the argument,
what was expected and what came, before anything is compiled. All on the tiny split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from conftest import tiny_features, tiny_head

KEY = jax.random.key(0)

# Every public method, with the options it requires.
METHODS = {
    "grad_cam": jaxcam.grad_cam,
    "grad_cam_pp": jaxcam.grad_cam_pp,
    "cam": jaxcam.cam,
    "smooth_grad_cam_pp": lambda s, x, t=None, **o: jaxcam.smooth_grad_cam_pp(
        s, x, t, **{"key": KEY, "n_samples": 2, **o}),
    "guided_backprop": jaxcam.guided_backprop,
    "guided_grad_cam": jaxcam.guided_grad_cam,
    "compare_derivatives": lambda s, x, t=None, **o: jaxcam.compare_derivatives(
        s, x, t, **{"link": "exp", **o}),
}


def _nchw(x):
    return x.transpose(0, 3, 1, 2)


# (id, split -> split, x -> x, target, exception, the message must match)
BAD_INPUTS = [
    ("empty batch", None, lambda x: x[:0], 0, ValueError, r"x must hold at least one image.*\(0, 16, 16, 3\)"),
    ("one image", None, lambda x: x[0], 0, ValueError, r"x must be a batch.*\(16, 16, 3\).*x\[None\]"),
    ("nchw", None, _nchw, 0, ValueError, r"x has shape \(3, 3, 16, 16\).*looks like NCHW.*transpose\(0, 2, 3, 1\)"),
    ("wrong channels", None, lambda x: jnp.concatenate([x, x[..., :1]], -1), 0, ValueError,
     r"split.features failed on x of shape \(3, 16, 16, 4\)"),
    ("uint8 x", None, lambda x: np.zeros((1, 16, 16, 3), np.uint8), 0, ValueError, r"x must be a float array"),
    ("nan x", None, lambda x: x.at[0, 0, 0, 0].set(jnp.nan), 0, ValueError, r"x contains NaN"),
    ("head (B,)", lambda s: s.replace(head=lambda v, a: tiny_head(v, a)[:, 0]), None, 0,
     ValueError, r"split.head must return float logits \(B, C\) = \(3, C\).*\(3, 8, 8, 6\).*shape \(3,\)"),
    ("head (B, h, w, C)", lambda s: s.replace(head=lambda v, a: a @ v["w"]), None, 0,
     ValueError, r"split.head must return float logits \(B, C\).*shape \(3, 8, 8, 5\)"),
    ("head int logits", lambda s: s.replace(head=lambda v, a: tiny_head(v, a).astype(jnp.int32)),
     None, 0, ValueError, r"split.head must return class logits.*\(3, 5\) \(int32\)"),
    ("head raises", lambda s: s.replace(head=lambda v, a: a.mean((1, 2)) @ v["w"].T), None, 0,
     ValueError, r"split.head failed on activations of shape \(3, 8, 8, 6\)"),
    ("features (B, K)", lambda s: s.replace(features=lambda v, x: tiny_features(v, x).mean((1, 2))),
     None, 0, ValueError, r"split.features must return activations \(B, h, w, K\).*shape \(3, 6\)"),
    ("features empty map", lambda s: s.replace(features=lambda v, x: tiny_features(v, x)[:, :0]),
     None, 0, ValueError, r"split.features must return .*non-empty.*shape \(3, 0, 8, 6\)"),
    ("target 2**32 + 1", None, None, 2**32 + 1, ValueError, r"target class 4294967297 is out of range.*\[0, 4\]"),
    ("target 2**70", None, None, 2**70, ValueError, r"target class 1180591620717411303424 is out of range"),
    ("int64 targets beyond int32", None, None, np.array([0, 2**32 + 1, 1]), ValueError,
     r"target class 4294967297 is out of range"),
    ("negative target", None, None, np.array([0, -1, 2]), ValueError, r"target class -1 is out of range"),
    ("target too large", None, None, 5, ValueError, r"target class 5 is out of range: this model has 5"),
    ("bool target", None, None, True, TypeError, r"target must be None, an int.*got True \(bool\)"),
    ("bool targets", None, None, np.array([True, False, True]), TypeError, r"target must be.*dtype bool"),
    ("float target", None, None, 1.0, TypeError, r"target must be.*got 1.0 \(float\)"),
    ("float targets", None, None, np.array([0.0, 1.0, 2.0]), TypeError, r"target must be.*dtype float64"),
    ("string target", None, None, "cat", TypeError, r"target must be.*'cat'"),
    ("targets of the wrong shape", None, None, np.array([0, 1]), ValueError,
     r"target array has shape \(2,\); expected \(3,\)"),
    ("callable target (B, C)", None, None, lambda s: s, ValueError,
     r"callable target must return one float score per image, shape \(3,\).*shape \(3, 5\)"),
    ("callable target ()", None, None, lambda s: s.sum(), ValueError, r"callable target.*shape \(\)"),
    ("callable target raises", None, None, lambda s: s[:, :, 0], ValueError,
     r"the callable target failed on logits of shape \(3, 5\)"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_by_every_method(method, case, tiny_split, tiny_x):
    _, edit_split, edit_x, target, error, match = case
    split = tiny_split
    if edit_split is not None:  # the guided pass follows the edited functions
        edited = edit_split(tiny_split)
        split = edited.replace(guided=lambda v, x: edited.head(v, edited.features(v, x)))
    x = edit_x(tiny_x) if edit_x else tiny_x
    with pytest.raises(error, match=match):
        METHODS[method](split, x, target)


# (id, function, options, exception, the message must match)
_smooth = jaxcam.smooth_grad_cam_pp
BAD_OPTIONS = [
    ("eps nan", jaxcam.grad_cam_pp, dict(eps=float("nan")), ValueError, r"eps must be a finite number >= 0, got nan"),
    ("eps -1", jaxcam.grad_cam_pp, dict(eps=-1e-6), ValueError, r"eps must be .*>= 0, got -1e-06"),
    ("eps inf", jaxcam.compare_derivatives, dict(eps=float("inf")), ValueError, r"eps must be .*got inf"),
    ("eps str", jaxcam.grad_cam_pp, dict(eps="1e-6"), TypeError, r"eps must be a finite number.*'1e-6' \(str\)"),
    ("eps bool", jaxcam.grad_cam_pp, dict(eps=True), TypeError, r"eps must be .*True \(bool\)"),
    ("smooth eps nan", _smooth, dict(key=KEY, eps=float("nan")), ValueError, r"eps must be"),
    ("noise inf", _smooth, dict(key=KEY, noise=float("inf")), ValueError, r"noise must be a finite number >= 0, got inf"),
    ("noise nan", _smooth, dict(key=KEY, noise=float("nan")), ValueError, r"noise must be .*got nan"),
    ("noise negative", _smooth, dict(key=KEY, noise=-0.1), ValueError, r"noise must be .*got -0.1"),
    ("n_samples 2.5", _smooth, dict(key=KEY, n_samples=2.5), TypeError, r"n_samples must be a positive integer, got 2.5 \(float\)"),
    ("n_samples 2.0", _smooth, dict(key=KEY, n_samples=2.0), TypeError, r"n_samples must be a positive integer, got 2.0"),
    ("n_samples True", _smooth, dict(key=KEY, n_samples=True), TypeError, r"n_samples must be .*True \(bool\)"),
    ("n_samples 0", _smooth, dict(key=KEY, n_samples=0), ValueError, r"n_samples must be a positive integer \(>= 1\), got 0"),
    ("smooth chunk_size 2.5", _smooth, dict(key=KEY, chunk_size=2.5), TypeError, r"chunk_size must be a positive integer, got 2.5"),
    ("smooth chunk_size 0", _smooth, dict(key=KEY, chunk_size=0), ValueError, r"chunk_size must be .*got 0"),
    ("chunk_size 2.5", jaxcam.grad_cam_pp, dict(chunk_size=2.5), TypeError, r"chunk_size must be a positive integer, got 2.5"),
    ("chunk_size -1", jaxcam.grad_cam_pp, dict(chunk_size=-1), ValueError, r"chunk_size must be .*got -1"),
    ("smooth chunk_size", _smooth, dict(key=KEY, chunk_size=np.float32(3)), TypeError, r"chunk_size must be"),
    ("compare chunk_size", jaxcam.compare_derivatives, dict(chunk_size=0.5), TypeError, r"chunk_size must be"),
    ("key int", _smooth, dict(key=0), TypeError, r"key must be a jax.random key.*PRNGKey.*got int"),
    ("key float array", _smooth, dict(key=jnp.zeros(2)), TypeError, r"key must be a jax.random key.*float32"),
    ("key of the wrong shape", _smooth, dict(key=jnp.zeros(3, jnp.uint32)), TypeError, r"key must be.*shape \(3,\)"),
    ("keys", _smooth, dict(key=jax.random.split(KEY, 2)), ValueError, r"key must be one jax.random key, shape \(\); got keys of shape \(2,\)"),
    ("key missing", _smooth, dict(), TypeError, r"key"),
    ("link", jaxcam.grad_cam, dict(link="sigmoid"), ValueError, r"unknown link 'sigmoid'; expected one of"),
    ("derivatives", jaxcam.grad_cam_pp, dict(derivatives="taylor"), ValueError, r"unknown derivatives 'taylor'"),
    ("engine", jaxcam.compare_derivatives, dict(engine=None), ValueError, r"unknown engine None"),
    ("variant", _smooth, dict(key=KEY, variant="keras"), ValueError, r"unknown variant 'keras'"),
]


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_option_is_refused(case, tiny_split, tiny_x):
    _, f, options, error, match = case
    with pytest.raises(error, match=match):
        f(tiny_split, tiny_x, 1, **options)


@pytest.mark.parametrize("options, error, match", [
    (dict(order=0), ValueError, r"order must be a positive integer \(>= 1\), got 0"),
    (dict(order=1.5), TypeError, r"order must be a positive integer, got 1.5"),
    (dict(chunk_size=2.5), TypeError, r"chunk_size must be a positive integer, got 2.5"),
    (dict(derivatives="fast"), ValueError, r"unknown derivatives 'fast'"),
])
def test_pure_derivatives_options(options, error, match):
    with pytest.raises(error, match=match):
        jaxcam.pure_derivatives(lambda a: jnp.sum(a**2), jnp.ones(3), **options)


def test_pure_derivatives_function_and_point():
    with pytest.raises(ValueError, match=r"fn must return a float scalar, shape \(\); it "
                                         r"returned shape \(3,\)"):
        jaxcam.pure_derivatives(lambda a: a**2, jnp.ones(3))
    with pytest.raises(ValueError, match=r"fn failed on a of shape \(3,\)"):
        jaxcam.pure_derivatives(lambda a: a @ jnp.ones(4), jnp.ones(3))
    with pytest.raises(TypeError, match=r"a must be a float array.*int32"):
        jaxcam.pure_derivatives(lambda a: jnp.sum(a), jnp.arange(3))


def test_split_and_guided_pass(tiny_split, tiny_x):
    with pytest.raises(TypeError, match=r"split must be a jaxcam.Split.*got function"):
        jaxcam.grad_cam(lambda x: x, tiny_x, 0)
    wrong = tiny_split.replace(guided=lambda v, x: tiny_head(v, tiny_features(v, x))[:, :2])
    with pytest.raises(ValueError, match=r"split.guided must return the same outputs.*"
                                         r"\(3, 5\).*\(3, 2\)"):
        jaxcam.guided_backprop(wrong, tiny_x, 0)


SMOOTH = dict(n_samples=3, noise=0.2, upsample=False, normalize=False)  # one compile for all


def test_integral_options_of_numpy_types_are_accepted(tiny_split, tiny_x):
    build_grad_cam_pp = jaxcam.method_info("grad_cam_pp").build

    plain = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 2, key=KEY, **SMOOTH)
    numpy = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, np.int64(2), key=KEY,
                                      **{**SMOOTH, "n_samples": np.int64(3),
                                         "noise": np.float64(0.2)})
    np.testing.assert_array_equal(numpy, plain)  # equal static options: the same program
    # the same static options, hence the same compiled program
    programs = [build_grad_cam_pp(tiny_split, tiny_x, 1, derivatives="exact", chunk_size=chunk,
                                  eps=eps).program
                for chunk, eps in ((4, 0.0), (np.int16(4), np.int64(0)))]
    structure = [jax.tree_util.tree_structure(p) for p in programs]
    assert structure[0] == structure[1]
    assert type(programs[1].measure.chunk_size) is int


def test_legacy_and_typed_keys_give_the_same_map(tiny_split, tiny_x):
    typed = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 2, key=jax.random.key(7), **SMOOTH)
    legacy = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 2, key=jax.random.PRNGKey(7),
                                       **SMOOTH)
    assert np.abs(typed).max() > 0
    np.testing.assert_array_equal(legacy, typed)  # same key data: same noise, same program
    other = jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 2, key=jax.random.PRNGKey(8), **SMOOTH)
    assert np.abs(other - typed).max() > 0
    jitted = jax.jit(lambda k: jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 2, key=k, **SMOOTH))
    np.testing.assert_allclose(jitted(jax.random.PRNGKey(7)), typed, rtol=1e-5, atol=1e-6)


def test_under_jit_shape_checks_apply_and_value_checks_are_skipped(tiny_split, tiny_x):
    with pytest.raises(ValueError, match="looks like NCHW"):
        jax.jit(lambda x: jaxcam.grad_cam(tiny_split, x, 0))(_nchw(tiny_x))
    with pytest.raises(ValueError, match=r"target array has shape \(2,\)"):
        jax.jit(lambda t: jaxcam.grad_cam(tiny_split, tiny_x, t))(jnp.array([0, 1]))
    with pytest.raises(TypeError, match="target must be.*dtype float32"):
        jax.jit(lambda t: jaxcam.grad_cam(tiny_split, tiny_x, t))(jnp.zeros(3))
    # A concrete target is range-checked even when x is traced.
    with pytest.raises(ValueError, match="target class 4294967297 is out of range"):
        jax.jit(lambda x: jaxcam.grad_cam(tiny_split, x, 2**32 + 1))(tiny_x)
    with pytest.raises(ValueError, match="split.head must return float logits"):
        jax.vmap(lambda x: jaxcam.grad_cam(tiny_split.replace(head=lambda v, a: a), x, 0))(
            tiny_x[None])
    with pytest.raises(TypeError, match=r"n_samples is a static option.*traced"):
        jax.jit(lambda n: jaxcam.smooth_grad_cam_pp(tiny_split, tiny_x, 0, key=KEY,
                                                    n_samples=n))(3)
    # Traced values cannot be checked: a traced x and target go through.
    maps = jax.jit(lambda x, t: jaxcam.grad_cam(tiny_split, x, t))(tiny_x, jnp.array([0, 1, 2]))
    np.testing.assert_allclose(maps, jaxcam.grad_cam(tiny_split, tiny_x, np.array([0, 1, 2])),
                               rtol=1e-5, atol=1e-6)


def test_zoo_lists_only_spatial_layers():
    names = jaxcam.models.layers("resnet18")
    assert names[-3:] == ["layer4.0", "layer4.1", "layer4"]
    assert "fc" not in names and "avgpool" not in names
    assert jaxcam.models.default_layer("resnet18") in names
    # The variables are unchanged: the classifier is still there, only not a split point.
    assert "fc" in jaxcam.models.variable_shapes("resnet18")["params"]
    with pytest.raises(ValueError, match=r"layer 'fc' of resnet18 is not spatial.*"
                                         r"'layer4.0', 'layer4.1', 'layer4'"):
        jaxcam.models.load("resnet18", layer="fc", weights="random")
    with pytest.raises(TypeError, match=r"layer must be a layer name \(str\)"):
        jaxcam.models.load("resnet18", layer=4, weights="random")


def test_closed_over_x_inside_a_callers_jit_is_checked(tiny_split, tiny_x):
    """An x closed over by a caller's jit is concrete: it is checked (on its device) and
    explained as when passed directly."""
    def explain(x):
        return jax.jit(lambda v: jaxcam.grad_cam(tiny_split.replace(variables=v), x, 1))(
            tiny_split.variables)

    np.testing.assert_allclose(explain(tiny_x), jaxcam.grad_cam(tiny_split, tiny_x, 1),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x contains NaN"):
        explain(tiny_x.at[1, 2, 3, 0].set(jnp.nan))


def test_the_installed_package_stands_on_its_own():
    """Nothing in jaxcam/ or pretrained_ports/ edits sys.path or imports the clone's
    benchmarks/ or tests/ (a wheel has neither; .ci/wheel runs it away from the clone)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted(p for package in ("jaxcam", "pretrained_ports")
                       for p in (root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                offenders.append(f"{path.relative_to(root)}:{node.lineno} sys.path")
            modules = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                       [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(root)}:{node.lineno} imports {m}"
                          for m in modules if m.split(".")[0] in ("benchmarks", "tests")]
    assert not offenders, offenders
