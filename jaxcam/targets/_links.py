"""The links, and the derivatives of a class's linked score along a curve of logits,
accurate in float32.

:data:`LINKS` is the one table of links: the API's ``link`` options, the targets of
:mod:`jaxcam.targets`, the metrics, the command line's ``--link`` and the README's table
all read it.

A link maps the logits S (C,) to the explained score Y = link(S)_c. The exact engines move
the logits along a curve S(t) = S + t s1 + t^2/2 s2 + t^3/6 s3 (s2 = s3 = 0 for a
piecewise-linear head) and need d^k Y(t)/dt^k at t = 0, k = 1, 2, 3.

For "softmax" and "log_softmax" the textbook expressions cancel catastrophically when the
prediction is confident: 1 - p_c computed as a difference, or the variance m2 - m1^2 of a
distribution concentrated on one class. Here every quantity is written so that it has
small relative error wherever the true value is representable:

* With h(t) = log_softmax_c(S(t)) = S_c(t) - LSE(S(t)) and p = softmax(S), the
  derivatives of LSE are the p-expectations and cumulants of the curve's coefficients:
  LSE' = E[s1], LSE'' = E[s2] + Var(s1), LSE''' = E[s3] + 3 Cov(s1, s2) + k3(s1).
* The expectation terms are taken of the differences to the target,
  h1 = -sum_j p_j (s1_j - s1_c), ..., so the target contributes exactly zero and
  1 - p_c is never formed as a difference.
* The cumulants are central moments sum_j p_j d_j^k of the deviations
  d_j = s1_j - E_p[s1], formed before any power is taken (never as differences of raw
  moments such as m2 - m1^2). The deviation of the most probable class r, which carries
  almost all the weight when the prediction is confident, is computed in its exact form
  sum_{l != r} p_l (s1_r - s1_l), never as s1_r - E_p[s1]. For straight curves through a
  piecewise-linear head, the deviations come straight out of vector-Jacobian products of
  the cotangents onehot_j - p (:func:`centring_cotangents`).
* softmax_c = p_c exp(h(t) - h(0)): its derivatives are p_c times the complete Bell
  polynomials of (h1, h2, h3); p_c = exp(log_softmax_c) is accurate in float32.

When the other classes' probabilities underflow, every term is an exact zero, so the
derivatives are exactly zero rather than rounding noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcam._checks import check_choice

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Link:
    """A link: the function of the logits S (B, C) whose class score a method explains,
    Y = link(S)[c].

    Attributes:
      name: the value of a ``link`` option.
      vector: S (B, C) -> link(S) (B, C), what autodiff differentiates.
      scalar: it also applies to one score per example (a callable target or a target of
        :mod:`jaxcam.targets`), not only to the vector of class logits.
      value: ``vector`` gives the score's value. False for "exp": it is differentiated as
        exp(S - S0) with S0 = S held constant, whose value is 1 and whose derivatives are
        those of exp(S) divided by exp(S0) (a positive factor, which cancels in
        Grad-CAM++'s alpha), so nothing overflows in float32. Methods and metrics that
        use the score's value (Ablation-CAM, the faithfulness metrics) refuse it.
      help: one line for the docs.
    """

    name: str
    vector: Callable[[Array], Array]
    scalar: bool
    value: bool
    help: str


def _exp(s: Array) -> Array:
    # exp(S - S0) with S0 = S held constant (see Link.value); exp(89) would overflow.
    return jnp.exp(s - jax.lax.stop_gradient(s))


LINKS: dict[str, Link] = {link.name: link for link in (
    Link("logit", lambda s: s, True, True,
         "the logit S_c (pytorch-grad-cam's ClassifierOutputTarget)"),
    Link("exp", _exp, True, False,
         "exp(S_c), Grad-CAM++'s paper; its derivatives only, up to the factor exp(S_c)"),
    Link("softmax", lambda s: jax.nn.softmax(s, axis=-1), False, True,
         "the probability softmax(S)_c"),
    Link("log_softmax", lambda s: jax.nn.log_softmax(s, axis=-1), False, True,
         "the log-probability log_softmax(S)_c"),
    Link("rest", lambda s: s + jax.nn.log_softmax(s, axis=-1), False, True,
         "ReST, S_c + log_softmax(S)_c: the logit minus the cross-entropy "
         "(pytorch-grad-cam's ClassifierOutputReST, ShapleyCAM's default)"),
)}


def link_names(*, scalar: bool | None = None, value: bool | None = None) -> tuple[str, ...]:
    """The names of the links with these properties, in :data:`LINKS`' order."""
    return tuple(name for name, link in LINKS.items()
                 if (scalar is None or link.scalar == scalar)
                 and (value is None or link.value == value))


def check_link(link, *, value: bool = False, what: str = "") -> Link:
    """The link named ``link``; ValueError naming the choices when it is not one (of
    those giving the score's value, with ``value``: ``what`` names who needs it)."""
    if value and link in LINKS and not LINKS[link].value:
        raise ValueError(f"link={link!r} gives the derivatives of the score, not its value, "
                         f"but {what or 'this'} uses the score's value: use one of "
                         f"{', '.join(map(repr, link_names(value=True)))}")
    check_choice("link", link, link_names(value=True) if value else LINKS)
    return LINKS[link]


def links_table() -> str:
    """The README's table of links, from :data:`LINKS`."""
    rows = ["| link | score | on one score (a callable or a target) | its value is used by "
            "Ablation-CAM and the metrics |", "|---|---|---|---|"]
    for link in LINKS.values():
        rows.append(f"| `{link.name}` | {link.help} | {'yes' if link.scalar else 'no'} | "
                    f"{'yes' if link.value else 'no'} |")
    return "\n".join(rows) + "\n"


def bell(h1: Array, h2: Array, h3: Array) -> tuple[Array, Array, Array]:
    """Derivatives of exp(h(t) - h(0)) at 0 from those of h: (h1, h1^2 + h2,
    h1^3 + 3 h1 h2 + h3), the complete Bell polynomials."""
    return h1, h1 * h1 + h2, h1 * h1 * h1 + 3.0 * h1 * h2 + h3


class LogSoftmaxStats(NamedTuple):
    """What the derivatives of log_softmax_c along a curve depend on.

    Attributes:
      a1, a2, a3: sum_j p_j (s_k,j - s_k,c) for k = 1, 2, 3: expectations of the
        differences to the target class.
      var: Var_p(s1); cov: Cov_p(s1, s2); k3: the third cumulant of s1 under p.
    """

    a1: Array
    a2: Array
    a3: Array
    var: Array
    cov: Array
    k3: Array


def log_softmax_derivatives(stats: LogSoftmaxStats) -> tuple[Array, Array, Array]:
    """(h1, h2, h3): the derivatives of log_softmax_c(S(t)) at t = 0."""
    return (-stats.a1, -stats.a2 - stats.var, -stats.a3 - 3.0 * stats.cov - stats.k3)


def _curve(coeffs: Array) -> tuple[Array, Array, Array]:
    """The coefficients (order, ...) padded with zeros to three: (s1, s2, s3)."""
    zero = jnp.zeros_like(coeffs[0])
    return tuple(coeffs[k] if k < coeffs.shape[0] else zero for k in range(3))


def centred(p: Array, s: Array, r: Array) -> Array:
    """s_j - E_p[s] for every class j (C,); the entry of the most probable class r in its
    exact form sum_{l != r} p_l (s_r - s_l)."""
    others = jnp.arange(s.shape[-1]) != r
    at_r = jnp.sum(jnp.where(others, p * (s[r] - s), 0.0))
    return jnp.where(others, s - jnp.sum(p * s), at_r)


def log_softmax_stats(logits: Array, c: Array, coeffs: Array) -> LogSoftmaxStats:
    """The statistics of one example: logits (C,), class c, coefficients (order, C)."""
    s1, s2, s3 = _curve(coeffs)
    p = jnp.exp(jax.nn.log_softmax(logits))
    r = jnp.argmax(logits)
    a1, a2, a3 = (jnp.sum(p * (s - s[c])) for s in (s1, s2, s3))
    d1, d2 = centred(p, s1, r), centred(p, s2, r)
    return LogSoftmaxStats(a1, a2, a3, jnp.sum(p * d1 * d1), jnp.sum(p * d1 * d2),
                           jnp.sum(p * d1 * d1 * d1))


def centred_target(p: Array, target: Array) -> Array:
    """onehot_c - p (B, C) for the classes marked by the boolean ``target`` (B, C), whose
    entry 1 - p_c is the sum of the other classes' probabilities: full relative accuracy
    when p_c is close to 1."""
    rest = jnp.sum(jnp.where(target, 0.0, p), axis=-1, keepdims=True)
    return jnp.where(target, rest, -p)


def centring_cotangents(p: Array, rows: Array) -> Array:
    """Cotangents onehot_j - p for the classes j in ``rows`` (chunk,) and every example:
    (chunk, B, C) from p (B, C). Their vector-Jacobian products are the deviations
    J_j - E_p[J] of the Jacobian rows. The entry 1 - p_j is the sum of the other classes'
    probabilities when j is the most probable class, so it keeps full relative accuracy
    when p_j is close to 1. Rows past C are zero."""
    n = p.shape[-1]
    onehot = jax.nn.one_hot(rows, n, dtype=p.dtype)[:, None, :]              # (chunk, 1, C)
    mode = jax.nn.one_hot(jnp.argmax(p, axis=-1), n, dtype=p.dtype)          # (B, C)
    rest = jnp.where(mode > 0, centred_target(p, mode > 0), 1.0 - p)         # (B, C)
    used = jnp.sum(onehot, axis=-1, keepdims=True)                           # (chunk, 1, 1)
    return jnp.where(onehot > 0, rest[None], -used * p[None])


def class_taylor(link: str, logits: Array, c: Array, coeffs: Array) -> Array:
    """Derivatives of link(S(t))_c at t = 0 for one example, accurate in float32.

    Args:
      link: "logit", "exp" (exp(S - S0) with S0 = S(0) constant), "softmax",
        "log_softmax" or "rest" (S_c + log_softmax_c: ReST, S_c minus the cross-entropy).
      logits: S (C,).
      c: the target class (int scalar).
      coeffs: (order, C), the curve's derivatives s1, s2, ... (order <= 3).

    Returns:
      (order,): d^k Y/dt^k at 0 for k = 1..order.
    """
    order = coeffs.shape[0]
    if order > 3:
        raise ValueError(f"class_taylor supports orders up to 3, got {order}")
    if link in ("logit", "exp"):
        y = tuple(s[c] for s in _curve(coeffs))
        y = bell(*y) if link == "exp" else y
    else:
        y = log_softmax_derivatives(log_softmax_stats(logits, c, coeffs))
        if link == "softmax":
            p_c = jnp.exp(jax.nn.log_softmax(logits)[c])
            y = tuple(p_c * b for b in bell(*y))
        elif link == "rest":
            y = tuple(h + s[c] for h, s in zip(y, _curve(coeffs)))
    return jnp.stack(y[:order])


def class_gradient(link: str, logits: Array, classes: Array) -> Array:
    """dY_b/dS_b (B, C) for class targets, accurate in float32.

    For log_softmax it is onehot_c - p, whose target entry 1 - p_c is computed as the sum
    of the other classes' probabilities; softmax multiplies that by p_c.
    """
    onehot = jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype)
    if link in ("logit", "exp"):
        return onehot
    log_p = jax.nn.log_softmax(logits, axis=-1)
    grad = centred_target(jnp.exp(log_p), onehot > 0)
    if link == "softmax":
        grad = grad * jnp.exp(jnp.sum(onehot * log_p, axis=-1, keepdims=True))
    elif link == "rest":
        grad = grad + onehot
    return grad
