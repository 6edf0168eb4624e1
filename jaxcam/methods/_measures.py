"""What gradient methods measure at the cut: head derivatives, plain or noise-smoothed.

Both are ``measure(split, x, classes, key) -> Evidence`` parts of a
:class:`jaxcam.methods._pipeline.Program`. :class:`NoiseSmoothed` wraps any
:class:`HeadDerivatives`, so noise smoothing applies to every gradient method (Smooth
Grad-CAM++ is Grad-CAM++ with its evidence smoothed).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from jaxcam._chunking import chunked_sum
from jaxcam.derivatives._engines import cam_derivatives
from jaxcam.methods._pipeline import Evidence
from jaxcam.splitting._split import Split
from jaxcam.targets._objective import Objective

Array = jax.Array


@struct.dataclass
class HeadDerivatives:
    """A and the pure derivatives D1..D_order of the score in A, back through the head
    only (:func:`jaxcam.derivatives.head_derivatives`)."""

    objective: Objective = struct.field(pytree_node=False)
    order: int = struct.field(pytree_node=False, default=1)
    derivatives: str = struct.field(pytree_node=False, default="approx")
    engine: str = struct.field(pytree_node=False, default="auto")
    chunk_size: int | None = struct.field(pytree_node=False, default=None)
    hvp: bool = struct.field(pytree_node=False, default=False)

    def at(self, split: Split, a: Array, classes: Array) -> tuple[Array, ...]:
        """(D1, .., D_order) at the activations ``a`` (B, h, w, K); with ``hvp``,
        (g, H A): the gradient and the Hessian of the score applied to A itself, exact
        (forward-over-reverse: ``jax.jvp`` of the head gradient along A)."""
        if self.hvp:
            classes = self.objective.classes(jax.lax.stop_gradient(split.logits_from(a)),
                                             classes)

            def grad(a):  # dY/dA with the link's cotangent differentiated too
                logits, head_vjp = jax.vjp(split.logits_from, a)
                return head_vjp(self.objective.gradient(logits, classes))[0]

            return jax.jvp(grad, (a,), (a,))
        if self.derivatives == "exact":
            _warn_if_no_curvature(split, self.objective)
        return cam_derivatives(split, a, self.objective, classes, order=self.order,
                               derivatives=self.derivatives, engine=self.engine,
                               chunk_size=self.chunk_size)

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> Evidence:
        a = split.activations(x)
        return Evidence(a, self.at(split.given(x), a, classes))


def _warn_if_no_curvature(split: Split, objective: Objective) -> None:
    """Exact derivatives of a class logit through a piecewise-linear head are D2 = D3 = 0.
    Called while the program is traced, so it warns once per compiled program (and
    Python's default filter shows it once per session)."""
    if objective.link == "logit" and objective.by_class and split.piecewise_linear_head:
        warnings.warn(
            "exact Grad-CAM++ with link='logit' on a piecewise-linear head: the logit "
            "is linear in the activations almost everywhere, so D2 = D3 = 0, eq. 10 is "
            "0/0 and the maps are zero. The exact form is meaningful with link='exp' "
            "(equal to the closed form there), link='softmax' or 'log_softmax', or a "
            "smooth head (jaxcam.models.load(..., activation='gelu')).",
            UserWarning, stacklevel=2)


@struct.dataclass
class Activations:
    """A alone, no derivatives (Eigen-CAM)."""

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> Evidence:
        return Evidence(split.activations(x))


def noise_scale(x: Array, noise) -> Array:
    """sigma = noise * (max(x) - min(x)) per image (B, 1, 1, 1): SmoothGrad's convention."""
    span = (jnp.max(x, axis=(1, 2, 3), keepdims=True)
            - jnp.min(x, axis=(1, 2, 3), keepdims=True))
    return noise * span


def noisy_copies(x: Array, sigma: Array, keys: Array) -> Array:
    """x + sigma * N(0, 1) for each key: (n, B, H, W, C). One draw of ONE image's shape
    per key, shared by the batch and scaled by each image's sigma, so an image's copies do
    not depend on the other images of the batch."""
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return x[None] + sigma[None] * noise[:, None]


@struct.dataclass
class NoiseSmoothed:
    """The derivatives of ``inner`` averaged over n noisy copies of the input (Smooth
    Grad-CAM++, Omeiza et al., 2019: D1..D3 are averaged, not the maps).

    Copy i (1..n) of every image is x + sigma * ``jax.random.normal(
    jax.random.split(key, n)[i - 1], x.shape[1:])``. The class is fixed on the clean image
    and the returned A is the clean image's. The copies go through the network
    ``chunk`` at a time (:func:`jaxcam.chunking.chunked_sum`), split across the
    ``mesh``'s devices when there is one.

    Weights: with the "exp" link, copy i enters with its exp(S_i) relative to the others
    (the derivatives of exp(S) are exp(S) g^k: the average keeps the true proportions; one
    common factor per image remains, and cancels in Grad-CAM++'s alpha and in the
    normalised map). Other links, and ``equal_weights``, weigh the copies equally.

    Attributes:
      inner: the derivatives to average.
      noise: the spread relative to each image's value range (traced).
      n_samples: the number of noisy copies.
      chunk: copies evaluated together.
      mesh: devices to split each chunk across, or None.
      equal_weights: weigh every copy 1/n whatever the link (torch-cam).
      keep_last: also return the last copy's evidence (torch-cam's Smooth Grad-CAM++
        weighs its ReLU(g) and A).
    """

    inner: HeadDerivatives
    noise: Array | float
    n_samples: int = struct.field(pytree_node=False, default=25)
    chunk: int = struct.field(pytree_node=False, default=8)
    mesh: Mesh | None = struct.field(pytree_node=False, default=None)
    equal_weights: bool = struct.field(pytree_node=False, default=False)
    keep_last: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, split: Split, x: Array, classes: Array, key: Array) -> Evidence:
        objective = self.inner.objective
        a = split.activations(x)
        classes = objective.classes(split.given(x).logits_from(a), classes)
        inner = self.inner.replace(objective=objective.resolved())
        keys = jax.random.split(key, self.n_samples)
        sigma = noise_scale(x, self.noise)

        def copy(x_i):  # one noisy copy of the batch: its derivatives and log weight
            split_i, a_i = split.given(x_i), split.activations(x_i)
            derivs = inner.at(split_i, a_i, classes)
            if self.equal_weights:
                return derivs, jnp.zeros(a_i.shape[:1], a_i.dtype)
            return derivs, objective.log_factor(split_i.logits_from(a_i), classes)

        def copies(keys_chunk):
            return jax.vmap(copy)(noisy_copies(x, sigma, keys_chunk))

        totals, _ = chunked_sum(copies, keys, chunk=self.chunk, mesh=self.mesh,
                                log_weights=True)
        last = None
        if self.keep_last:
            x_last = noisy_copies(x, sigma, keys[-1:])[0]
            a_last = split.activations(x_last)
            last = Evidence(a_last, inner.at(split.given(x_last), a_last, classes))
        return Evidence(a, tuple(t / self.n_samples for t in totals), last=last)
