"""The shared contract of every registered method, read from the registry.

A method declared with ``jaxcam.register_method`` is checked here without a line of new
test code: shape, finite values in [0, 1], jit == eager, vmap == loop, batch == each
image alone, and no recompilation for a new target, new weights, a new value of any
traced option or a new feature-map / neuron selection.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from conftest import tiny_features, tiny_head, tiny_variables

NAMES = jaxcam.available_methods()
README = Path(__file__).resolve().parents[1] / "README.md"
# a second value of each traced option, valid for every method that has it
OTHER_VALUE = {"eps": 1e-3, "noise": 0.3, "baseline": 0.5, "alpha": 0.5,
               "value": -1.0}
CLOSE = dict(rtol=1e-5, atol=1e-6)


def call(name, split, x, target=None, **options):
    """The method with what it needs: a key, and few noisy samples to stay fast."""
    info = jaxcam.method_info(name)
    params = inspect.signature(info.function).parameters
    if "key" in info.needs:
        options.setdefault("key", jax.random.key(0))
    if "n_samples" in params:
        options.setdefault("n_samples", 3)
    if "steps" in params:
        options.setdefault("steps", 3)
    return info.function(split, x, target, **options)


def counting_split(traces):
    def counting_features(v, x):
        traces.append(1)  # runs only while tracing
        return tiny_features(v, x)

    return jaxcam.Split(variables=tiny_variables(), features=counting_features,
                        head=tiny_head, layer="k2", piecewise_linear_head=True,
                        gap_linear_head=True,
                        guided=lambda v, x: tiny_head(v, counting_features(v, x)))


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_range(name, tiny_split, tiny_x):
    info = jaxcam.method_info(name)
    out = np.asarray(call(name, tiny_split, tiny_x, jnp.array([0, 3, 4])))
    assert np.all(np.isfinite(out))
    if info.returns == "map":
        assert out.shape == (3, 16, 16)
        assert out.min() >= 0 and out.max() <= 1
        peaks = out.max(axis=(1, 2))   # 1 for a non-constant map, 0 for an all-zero one
        assert np.all((peaks == 1) | (peaks == 0)) and peaks.max() == 1
        raw = call(name, tiny_split, tiny_x, 1, upsample=False, normalize=False)
        assert raw.shape == (3, 8, 8)
    else:
        assert info.returns == "input_gradients" and out.shape == tiny_x.shape
        assert np.abs(out).max() > 0


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name, tiny_split, tiny_x):
    target = jnp.array([2, 0, 1])
    with jax.disable_jit():
        eager = call(name, tiny_split, tiny_x, target)
    jitted = jax.jit(lambda s, x, t: call(name, s, x, t))(tiny_split, tiny_x, target)
    np.testing.assert_allclose(call(name, tiny_split, tiny_x, target), eager, **CLOSE)
    np.testing.assert_allclose(jitted, eager, **CLOSE)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_equals_loop(name, tiny_split, tiny_x):
    xs = jnp.stack([tiny_x, tiny_x[::-1]])                # (2, 3, 16, 16, 3)
    ts = jnp.array([[0, 1, 2], [3, 4, 0]])
    mapped = jax.vmap(lambda x, t: call(name, tiny_split, x, t))(xs, ts)
    for i in range(2):
        np.testing.assert_allclose(mapped[i], call(name, tiny_split, xs[i], ts[i]), **CLOSE)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_each_image_alone(name, tiny_split, tiny_x):
    target = np.array([4, 1, 2])
    batch = call(name, tiny_split, tiny_x, target)
    for i in range(3):
        alone = call(name, tiny_split, tiny_x[i:i + 1], int(target[i]))
        np.testing.assert_allclose(batch[i], alone[0], **CLOSE)
    predicted = call(name, tiny_split, tiny_x)
    top = np.argmax(tiny_split.logits(tiny_x), axis=-1)
    for i in range(3):  # the predicted class of EACH image, not one global maximum
        np.testing.assert_allclose(
            predicted[i], call(name, tiny_split, tiny_x[i:i + 1], int(top[i]))[0], **CLOSE)


class CompileCounter:
    """Counts XLA compilations (jax.monitoring's backend-compile events) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event, duration, **kwargs):
        self.count += event == self.EVENT

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation(name, tiny_x):
    """One trace (one compiled program) for every target, weights, traced option value
    and selection of the same kind; run again, the variations compile nothing at all."""
    info = jaxcam.method_info(name)
    traces = []
    split = counting_split(traces)
    options = {}
    if info.selectable:
        options.update(channels=[0, 2], neurons=(1, 1, 5, 6))

    def variations():
        for t in ([3, 3, 3], [4, 0, 1], 2):
            yield split, np.asarray(t), options
        yield split.replace(variables=tiny_variables(seed=1)), 0, options
        for option in info.traced:
            yield split, 0, {**options, option: OTHER_VALUE[option]}
        if info.selectable:
            for other in (dict(channels=[1, 3, 5]), dict(neurons=[(0, 0), (7, 7), (3, 4)]),
                          dict(neurons=(0, 2, 8, 3))):
                yield split, 0, {**options, **other}

    jax.block_until_ready(call(name, split, tiny_x, jnp.array([0, 1, 2]), **options))
    first = len(traces)
    assert first > 0
    for s, t, o in variations():
        jax.block_until_ready(call(name, s, tiny_x, t, **o))
    assert len(traces) == first, f"{name} recompiled: {len(traces) - first} new traces"
    with CompileCounter() as compiles:
        for s, t, o in variations():
            jax.block_until_ready(call(name, s, tiny_x, t, **o))
    assert compiles.count == 0


def test_registry_lists_every_public_method():
    public = {n for n in jaxcam.__all__ if callable(getattr(jaxcam, n))}
    for name in NAMES:
        info = jaxcam.method_info(name)
        assert name in public and getattr(jaxcam, name) is info.function
        assert jaxcam.method_info(info.function) is info
    with pytest.raises(ValueError, match="unknown method 'grad_cam_xx'.*registered"):
        jaxcam.method_info("grad_cam_xx")


def test_readme_table_is_the_registry():
    assert jaxcam.method_table() in README.read_text(), (
        "README's method table differs from the registry; paste `jaxcam methods --markdown`")


def test_cli_offers_every_method(capsys):
    from jaxcam import cli

    with pytest.raises(SystemExit):
        cli.main(["methods", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(NAMES) in text
    for name in NAMES:                               # every one runs through --method
        assert cli.build_parser().parse_args(["explain", "x", "--method", name]).method == name


# --- a method declared alone: public, offered by the command line, checked by this suite

@pytest.fixture
def toy_method():
    """``softmax_grad_cam``, declared through the registry alone, removed afterwards."""
    from jaxcam.methods import _registry

    @jaxcam.register_method(kind="gradient", reference="a test", summary="Grad-CAM of p_c",
                            help={"power": "a toy integer option"})
    def build_softmax_grad_cam(split, x, target=None, *, power: int = 1,
                               counterfactual: bool = False, upsample: bool = True,
                               normalize: bool = True):
        """Grad-CAM of the softmax probability.

        Example::

            maps = jaxcam.softmax_grad_cam(split, x, 3)
        """
        del power
        return jaxcam.method_info("grad_cam").build(
            split, x, target, link="softmax", counterfactual=counterfactual,
            upsample=upsample, normalize=normalize)

    yield "softmax_grad_cam"
    _registry.METHODS.pop("softmax_grad_cam")


def test_a_method_declared_alone_is_public_offered_and_checked(toy_method, tiny_split, tiny_x,
                                                               capsys):
    from jaxcam import cli

    f = jaxcam.softmax_grad_cam
    assert f is jaxcam.method_info(toy_method).function and toy_method in dir(jaxcam)
    assert f.__name__ == toy_method and "power (default 1)" in f.__doc__
    assert list(inspect.signature(f).parameters)[:5] == ["split", "x", "target", "power",
                                                         "counterfactual"]
    np.testing.assert_array_equal(f(tiny_split, tiny_x, 2),
                                  jaxcam.grad_cam(tiny_split, tiny_x, 2, link="softmax"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'eps'"):
        f(tiny_split, tiny_x, 2, eps=1.0)
    # the command line: a choice, its options parsed by their declared types
    spec, = jaxcam.batch.parse_methods(f"{toy_method}:power=3:counterfactual=true")
    assert spec.options == (("counterfactual", True), ("power", 3))
    with pytest.raises(ValueError, match="expected int"):
        jaxcam.batch.parse_methods(f"{toy_method}:power=x")
    assert cli.main(["methods", toy_method]) == 0
    assert "power (int, default 1): a toy integer option" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["methods", "--help"])
    assert toy_method in capsys.readouterr().out
    assert f"| `{toy_method}` | Grad-CAM of p_c |" in jaxcam.method_table()
    # the wrappers take it as any built-in gradient method
    smooth = jaxcam.smoothed(toy_method)(tiny_split, tiny_x, 2, key=jax.random.key(0),
                                         n_samples=2, noise=0.0)
    np.testing.assert_allclose(smooth, f(tiny_split, tiny_x, 2), **CLOSE)
    assert jaxcam.finer_cam(tiny_split, tiny_x, 2, method=toy_method).shape == (3, 16, 16)
    # and the shared suite runs on it
    test_shape_finite_and_range(toy_method, tiny_split, tiny_x)
    test_jit_equals_eager(toy_method, tiny_split, tiny_x)
    test_vmap_equals_loop(toy_method, tiny_split, tiny_x)
    test_batch_equals_each_image_alone(toy_method, tiny_split, tiny_x)
    test_no_recompilation(toy_method, tiny_x)


def test_a_declaration_is_checked_when_it_is_made():
    with pytest.raises(ValueError, match="already registered"):
        jaxcam.register_method(kind="gradient", reference="-", summary="-")(
            jaxcam.method_info("grad_cam").build)
    with pytest.raises(ValueError, match="option 'q' has no help"):
        @jaxcam.register_method(kind="gradient", reference="-", summary="-")
        def build_q_cam(split, x, target=None, *, q: int = 1):
            pass
    with pytest.raises(ValueError, match="must be keyword-only"):
        @jaxcam.register_method(kind="gradient", reference="-", summary="-")
        def build_r_cam(split, x, target=None, link="logit"):
            pass
    with pytest.raises(ValueError, match="traced options"):
        @jaxcam.register_method(kind="gradient", reference="-", summary="-", traced=("z",))
        def build_s_cam(split, x, target=None, *, link: str = "logit"):
            pass
    assert not {"q_cam", "r_cam", "s_cam"} & set(jaxcam.available_methods())


def test_every_option_is_documented_with_its_default():
    for name in NAMES:
        info = jaxcam.method_info(name)
        doc = info.function.__doc__
        for option in info.options:
            assert option.help and f"  {option.name} (" in doc, (name, option.name)
        params = inspect.signature(info.function).parameters
        assert [o.name for o in info.options] == [p for p in params
                                                 if p not in ("split", "x", "target")
                                                 ][:len(info.options)]


def test_readme_options_table_is_the_registry():
    assert jaxcam.options_table() in README.read_text(), (
        "README's options table differs from the registry; paste `jaxcam methods --markdown`")


