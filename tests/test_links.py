"""The one table of links (``jaxcam.LINKS``): each link against its textbook definition,
and every place that takes a link reading the same table."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam import metrics, targets

README = Path(__file__).resolve().parents[1] / "README.md"
S = np.array([[2.0, -1.0, 0.5, 3.0], [0.0, 1.0, -2.0, 0.25]], np.float64)


def _log_softmax(s):
    m = s.max(axis=-1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(axis=-1, keepdims=True))


REFERENCE = {"logit": lambda s: s, "softmax": lambda s: np.exp(_log_softmax(s)),
             "log_softmax": _log_softmax, "rest": lambda s: s + _log_softmax(s)}


@pytest.mark.parametrize("name", [n for n, link in jaxcam.LINKS.items() if link.value])
def test_value_links_are_their_definition(name):
    with jax.enable_x64():
        got = np.asarray(jaxcam.LINKS[name].vector(jnp.asarray(S)))
    np.testing.assert_allclose(got, REFERENCE[name](S), rtol=1e-12, atol=1e-12)


def test_exp_gives_the_derivatives_of_exp_up_to_its_value():
    # d exp(S_c)/dS = exp(S_c) onehot_c; the link's gradient is that divided by exp(S_c)
    with jax.enable_x64():
        s = jnp.asarray(S[0])
        grad = jax.grad(lambda v: jaxcam.LINKS["exp"].vector(v)[3])(s)
        hess = jax.hessian(lambda v: jaxcam.LINKS["exp"].vector(v)[3])(s)
        value = jaxcam.LINKS["exp"].vector(s)[3]
    np.testing.assert_allclose(np.asarray(grad), np.eye(4)[3], atol=1e-12)
    np.testing.assert_allclose(np.asarray(hess), np.outer(np.eye(4)[3], np.eye(4)[3]),
                               atol=1e-12)
    assert float(value) == 1.0                       # not exp(S_c): value is False
    assert not jaxcam.LINKS["exp"].value and jaxcam.LINKS["exp"].scalar


def test_every_consumer_reads_the_one_table():
    names = tuple(jaxcam.LINKS)
    valued = tuple(n for n, link in jaxcam.LINKS.items() if link.value)
    assert targets.CLASS_LINKS == valued and metrics.LINKS == valued
    from jaxcam import cli

    parser = cli.build_parser()
    choices = [tuple(a.choices) for sub in parser._subparsers._group_actions
               for p in sub.choices.values() for a in p._actions if a.dest == "link"]
    assert len(choices) >= 2 and set(choices) == {names}      # explain, batch, compare
    assert all(f"`{n}`" in jaxcam.links_table() for n in names)
    link_help = jaxcam.method_info("grad_cam").options
    assert all(f'"{n}"' in next(o.help for o in link_help if o.name == "link") for n in names)


def test_readme_links_table_is_the_table():
    assert jaxcam.links_table() in README.read_text(), (
        "README's links table is stale: paste jaxcam.links_table() into it")


def test_value_users_refuse_a_derivative_only_link(tiny_split):
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"link='exp' gives the derivatives of the score, "
                                         r"not its value, but ablation_cam"):
        jaxcam.ablation_cam(tiny_split, x, 1, link="exp")
    with pytest.raises(ValueError, match="not its value, but a metric"):
        metrics.predictor(tiny_split, link="exp")
    got = np.asarray(jaxcam.ablation_cam(tiny_split, x, 1, link="rest", normalize=False))
    assert np.abs(got).max() > 0                     # a value link gives a real map


def test_class_target_links_score_as_defined(tiny_split):
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 16, 16, 3)))
    logits = np.asarray(tiny_split.logits(x), np.float64)
    for name in targets.CLASS_LINKS:
        got = np.asarray(targets.ClassScore(np.array([1, 3]), name)(jnp.asarray(logits)))
        want = REFERENCE[name](logits)[[0, 1], [1, 3]]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
