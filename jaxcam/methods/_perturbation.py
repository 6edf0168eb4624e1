"""Perturbation methods: Score-CAM, SS-CAM, IS-CAM (masked inputs through the whole network)
and Ablation-CAM (ablated channels through the head alone).

Each channel k of the activations becomes a mask H_k over the input (upsampled and
min-max normalised); the masked inputs x * H_k go through the WHOLE network, and the
target's scores on them weigh the channels: map = ReLU(sum_k w_k A^k). The masks are
built inside each chunk of ``chunk_size`` channels and the masked inputs evaluated with
``vmap`` there (:func:`jaxcam.chunking.chunked_map`), so memory is that of one chunk of
masked images, never K full-size masks at once.

Variants, each named by what it reproduces:

* "paper" (Wang et al., CVPR-W 2020, arXiv 1910.01279): H_k = s(Up(A^k)) (half-pixel
  bilinear upsampling, then min-max scaling), w_k = p_c(x * H_k) - p_c(x_b): the softmax
  probability of the target on the masked input minus that on the baseline image x_b.
* "pytorch-grad-cam" (grad-cam 1.5.7's ScoreCAM): upsampling with
  ``UpsamplingBilinear2d`` (align_corners=True), then (U - min) / (max - min + 1e-8);
  w = softmax over the channels of the target LOGITS of the masked inputs.
* "torchcam" (torchcam 0.5.0's ScoreCAM): A^k min-max scaled at the layer's resolution,
  (A - min) / (max(A - min) + 1e-8), then upsampled (half-pixel bilinear);
  w = softmax over the channels of (logit on x * H_k - logit on x).

SS-CAM and IS-CAM follow torchcam 0.5.0's SSCAM and ISCAM on the "torchcam" masks.

Ablation-CAM needs no masked input: channel k is ablated in A itself and only the head
runs, K head evaluations ``chunk_size`` at a time (:class:`Ablations`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

from jaxcam import _weighting as W
from jaxcam._checks import check_choice, check_number, check_positive_int, is_concrete
from jaxcam._chunking import chunk_size as _chunk_size
from jaxcam._chunking import DEFAULT_CHUNKS, chunked_map, per_axis
from jaxcam.splitting._devices import method_mesh
from jaxcam.targets._links import check_link
from jaxcam.methods._pipeline import Built, Evidence, Finish, Program, check_key
from jaxcam.methods._registry import register_method
from jaxcam.splitting._split import Split, split_shapes
from jaxcam.targets import Target
from jaxcam.targets._objective import Objective, resolve

Array = jax.Array
SCORE_CAM_VARIANTS = ("paper", "pytorch-grad-cam", "torchcam")
MODES = ("plain", "noisy", "integrated")
MASK_CHUNK = DEFAULT_CHUNKS["masks"]         # masked images through the network at a time
ABLATION_CHUNK = DEFAULT_CHUNKS["channels"]  # ablated copies of A through the head at a time


@functools.lru_cache(maxsize=64)
def interpolation_matrix(size_out: int, size_in: int, align_corners: bool) -> np.ndarray:
    """(size_out, size_in) matrix of 1-d linear interpolation, as PyTorch's bilinear
    ``interpolate``: align_corners=False maps output i to the input coordinate
    (i + 0.5) size_in / size_out - 0.5 (clamped at 0); align_corners=True to
    i (size_in - 1) / (size_out - 1). Rows sum to 1."""
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        if align_corners:
            src = i * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        else:
            src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), size_in - 1)
        i1 = min(i0 + 1, size_in - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m


def resize(maps: Array, size: tuple[int, int], align_corners: bool) -> Array:
    """Bilinear resize of (..., h, w) maps to (..., *size), as PyTorch's."""
    h, w = maps.shape[-2:]
    ry = jnp.asarray(interpolation_matrix(size[0], h, align_corners), maps.dtype)
    rx = jnp.asarray(interpolation_matrix(size[1], w, align_corners), maps.dtype)
    return jnp.einsum("Hh,...hw,Ww->...HW", ry, maps, rx)


def _min_max(maps: Array, eps: float) -> Array:
    """Per-map (maps - min) / (max - min + eps) over the last two axes; eps = 0: a
    constant map becomes 0."""
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    hi = jnp.max(maps, axis=(-2, -1), keepdims=True)
    span = hi - lo + eps
    return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def channel_masks(src: Array, size: tuple[int, int], variant: str) -> Array:
    """Masks (..., H, W) from the channel maps ``src`` (..., h, w) as each variant builds
    them (for "torchcam", ``src`` is already scaled at the layer's resolution)."""
    if variant == "paper":
        return _min_max(W.upsample(src, size), 0.0)
    if variant == "pytorch-grad-cam":
        return _min_max(resize(src, size, align_corners=True), 1e-8)
    return resize(src, size, align_corners=False)


def _torchcam_scaled(a: Array) -> Array:
    """torch-cam's per-channel scaling at the layer's resolution (B, h, w, K)."""
    lo = jnp.min(a, axis=(1, 2), keepdims=True)
    shifted = a - lo
    return shifted / (jnp.max(shifted, axis=(1, 2), keepdims=True) + 1e-8)


def top_channels(a: Array, top_n: int) -> Array:
    """(B, top_n) indices of the channels of largest spatial variance (Faster Score-CAM)."""
    return jax.lax.top_k(jnp.var(a, axis=(1, 2)), top_n)[1]


@struct.dataclass
class MaskedScores:
    """The measure of the Score-CAM family: channel weights w (B, K) from the scores of
    masked inputs (:class:`jaxcam.methods._pipeline.Evidence` ``scores``).

    Attributes:
      objective: the explained score (link "softmax" for "paper" with a class target,
        "logit" otherwise).
      variant: how masks and weights are built (module docstring).
      mode: "plain" (Score-CAM), "noisy" (SS-CAM: N(0, sigma^2) noise added to the
        masks, n_samples times) or "integrated" (IS-CAM: masks scaled by cumulative
        coefficients, n_samples times).
      n_samples: samples per channel for "noisy" and "integrated".
      top_n: only the top_n channels by variance are scored, or None for all.
      chunk: masked inputs evaluated together.
      mesh: devices each chunk is split across, or None.
      baseline: the baseline image of "paper" (traced; broadcastable to x).
      sigma: the noise's standard deviation of "noisy" (traced).
    """

    objective: Objective = struct.field(pytree_node=False)
    variant: str = struct.field(pytree_node=False, default="paper")
    mode: str = struct.field(pytree_node=False, default="plain")
    n_samples: int = struct.field(pytree_node=False, default=1)
    top_n: int | None = struct.field(pytree_node=False, default=None)
    chunk: int = struct.field(pytree_node=False, default=16)
    mesh: Mesh | None = struct.field(pytree_node=False, default=None)
    baseline: Array | float = 0.0
    sigma: Array | float = 0.0

    def __call__(self, split: Split, x: Array, classes: Array, key: Array | None) -> Evidence:
        a = split.activations(x)
        batch, _, _, k = a.shape
        size = x.shape[1:3]
        logits = split.given(x).logits_from(a)
        classes = self.objective.classes(logits, classes)
        objective = self.objective.resolved()
        chosen = (jnp.broadcast_to(jnp.arange(k), (batch, k)) if self.top_n is None
                  else top_channels(a, self.top_n))                       # (B, n_sel)
        n_sel = chosen.shape[1]
        src = _torchcam_scaled(a) if self.variant == "torchcam" else a
        src = jnp.moveaxis(src, -1, 1)                                    # (B, K, h, w)
        samples = self.n_samples if self.mode != "plain" else 1
        sample_keys = (jax.random.split(key, samples) if self.mode == "noisy" else None)

        def scores(items):
            sample, slot = items                                          # (chunk,) each
            ch = chosen[:, slot].T                                        # (chunk, B)
            maps = jnp.take_along_axis(src[None], ch[:, :, None, None, None], axis=2)[:, :, 0]
            masks = channel_masks(maps, size, self.variant)               # (chunk, B, H, W)
            if self.mode == "noisy":
                # noise of (sample i, channel k): one (H, W) draw, the same for every image
                draw = lambda i, c: jax.random.normal(  # noqa: E731
                    jax.random.split(sample_keys[i], k)[c], size, x.dtype)
                noise = jax.vmap(lambda i, cs: jax.vmap(lambda c: draw(i, c))(cs))(sample, ch)
                masks = masks + self.sigma * noise
            inputs = x[None] * masks[..., None]
            if self.mode == "integrated":
                coeff = (sample + 1) * (sample + 2) / (2.0 * self.n_samples)
                inputs = inputs * coeff[:, None, None, None, None].astype(x.dtype)
            out = jax.vmap(split.logits)(inputs)                          # (chunk, B, C)
            return jax.vmap(lambda s: objective(s, classes))(out)         # (chunk, B)

        sample_index, slot_index = np.divmod(np.arange(samples * n_sel), n_sel)
        items = (jnp.asarray(sample_index, jnp.int32), jnp.asarray(slot_index, jnp.int32))
        s = chunked_map(scores, items, chunk=self.chunk, mesh=self.mesh)
        s = jnp.mean(s.reshape(samples, n_sel, batch), axis=0).T          # (B, n_sel)
        if self.variant == "paper":
            base = jnp.broadcast_to(jnp.asarray(self.baseline, x.dtype), x.shape)
            w = s - objective(split.logits(base), classes)[:, None]
        elif self.variant == "pytorch-grad-cam":
            w = jax.nn.softmax(s, axis=-1)
        else:
            w = jax.nn.softmax(s - objective(logits, classes)[:, None], axis=-1)
        weights = jnp.zeros((batch, k), w.dtype).at[jnp.arange(batch)[:, None], chosen].set(w)
        return Evidence(a, scores=weights)


@struct.dataclass
class ScoreMap:
    """sum_k w_k A^k with the channel weights of a perturbation measure."""

    def __call__(self, ev: Evidence) -> Array:
        return W.channel_weighted(ev.a, ev.scores)


@struct.dataclass
class Ablations:
    """Ablation-CAM's measure: w = (Y - Y_k) / Y (:func:`jaxcam.weighting.ablation_weights`),
    with Y_k the score of the head on A with channel k set to ``value`` (traced).

    The K ablated copies of A go through the head ``chunk`` channels at a time
    (:func:`jaxcam.chunking.chunked_map`, ``vmap`` inside a chunk), split across the
    mesh's devices when there is one: memory is that of one chunk of activations. The
    unablated score is one more item of the same batched evaluation."""

    objective: Objective = struct.field(pytree_node=False)
    chunk: int = struct.field(pytree_node=False, default=32)
    mesh: Mesh | None = struct.field(pytree_node=False, default=None)
    value: Array | float = 0.0

    def __call__(self, split: Split, x: Array, classes: Array, key=None) -> Evidence:
        a = split.activations(x)
        k = a.shape[-1]
        split = split.given(x)
        classes = self.objective.classes(split.logits_from(a), classes)
        objective = self.objective.resolved()
        value = jnp.asarray(self.value, a.dtype)

        def ablated(channels):                                     # (chunk,) -> (chunk, B)
            def one(c):
                return objective(split.logits_from(jnp.where(jnp.arange(k) == c, value, a)),
                                 classes)
            return jax.vmap(one)(channels)

        # item k ablates nothing: the score Y itself, computed by the same batched program as
        # the Y_k, so that Y - Y_k does not mix two summation orders' rounding
        scores = chunked_map(ablated, jnp.arange(k + 1), chunk=self.chunk, mesh=self.mesh)
        return Evidence(a, scores=W.ablation_weights(scores[k], scores[:k].T))


def _build(split, x, target, *, variant, mode, n_samples=1, top_n=None, chunk_size=None,
           devices=None, baseline=0.0, sigma=0.0, upsample=True, normalize=True,
           key=None, samples_name="n_samples") -> Built:
    check_choice("variant", variant, SCORE_CAM_VARIANTS)
    check_choice("mode", mode, MODES)
    mask_chunk = per_axis(chunk_size, ("masks",))["masks"] or MASK_CHUNK
    n_samples = check_positive_int(samples_name, n_samples)
    k = split_shapes(split, x).activations.shape[-1]
    if top_n is not None:
        top_n = check_positive_int("top_n", top_n)
        if top_n > k:
            raise ValueError(f"top_n={top_n} exceeds the layer's {k} feature maps; use "
                             f"top_n <= {k}, or None for all of them")
    baseline = _check_baseline(baseline, x)
    sigma = check_number("noise", sigma)
    # the paper's softmax applies to class scores; other scores are used as they are
    by_class = not (callable(target) or isinstance(target, Target))
    objective, classes = resolve(split, x, target,
                                 "softmax" if variant == "paper" and by_class else "logit")
    mesh = method_mesh(devices)
    items = (top_n or k) * (n_samples if mode != "plain" else 1)
    chunk = _chunk_size(items, mask_chunk, 1 if mesh is None else mesh.size)
    measure = MaskedScores(objective, variant, mode, n_samples, top_n, chunk, mesh, baseline,
                           sigma)
    return Built(Program(measure, ScoreMap(), Finish(True, bool(upsample), bool(normalize))),
                 classes, key, mesh)


_SCORE_HELP = {
    "target": "as :func:`jaxcam.grad_cam` (a callable target needs a variant other than "
              "\"paper\", whose score is the softmax probability).",
    "variant": '"paper" (w_k = p_c(x * H_k) - p_c(baseline)), "pytorch-grad-cam" or '
               '"torchcam" (the softmax across channels of the masked inputs\' logits, as '
               "those libraries compute it).",
    "baseline": 'the baseline image of "paper": a number (a constant image, default 0: the '
                "all-zero input) or an array broadcastable to x (traced).",
}


@register_method(kind="perturbation", traced=("baseline",), chunks=("masks",),
                 reference="Wang et al., CVPR-W 2020",
                 summary="channel masks over the input, weighted by the target's score on each",
                 peers=("pytorch-grad-cam ScoreCAM", "torch-cam ScoreCAM"), help=_SCORE_HELP)
def build_score_cam(split, x, target=None, *, variant: str = "paper", baseline=0.0,
                    top_n: int | None = None, chunk_size: int | dict | None = None,
                    devices=None,
                    upsample: bool = True, normalize: bool = True) -> Built:
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv 1910.01279).

    map = ReLU(sum_k w_k A^k), w_k from the target's score on the input masked by channel
    k's upsampled, min-max scaled activations H_k (module :mod:`jaxcam.methods._perturbation`).

    Cost: K forward passes of the whole network per image (``top_n`` of them with Faster
    Score-CAM), ``chunk_size`` masked images at a time.

    Example::

        maps = jaxcam.score_cam(split, x, 282, chunk_size=32)
    """
    return _build(split, x, target, variant=variant, mode="plain", top_n=top_n,
                  chunk_size=chunk_size, devices=devices, baseline=baseline,
                  upsample=upsample, normalize=normalize)


@register_method(kind="perturbation", traced=("noise",), chunks=("masks",),
                 reference="Wang et al., 2020 (SS-CAM); torch-cam 0.5.0",
                 summary="Score-CAM with scores averaged over noisy masks",
                 peers=("torch-cam SSCAM",),
                 help={"n_samples": "noisy masks per channel (torch-cam: 35).",
                       "noise": "the noise's standard deviation on the masks, whose values "
                                "span [0, 1] (so relative to their range; torch-cam: 2.0; "
                                "traced)."})
def build_ss_cam(split, x, target=None, *, key, n_samples: int = 35, noise: float = 2.0,
                 top_n: int | None = None, chunk_size: int | dict | None = None,
                 devices=None,
                 upsample: bool = True, normalize: bool = True) -> Built:
    """SS-CAM (Wang et al., 2020, arXiv 2006.14255), as torchcam 0.5.0's SSCAM.

    w = softmax_k((1/N) sum_i (logit_c(x * (H_k + delta_ik)) - logit_c(x))) with torch-cam's
    masks H_k (:func:`jaxcam.score_cam`, variant "torchcam") and noise delta_ik ~
    N(0, noise^2) of the input's (H, W): for sample i and channel k, ``noise *
    jax.random.normal(jax.random.split(jax.random.split(key, n_samples)[i], K)[k], (H, W))``,
    the same for every image of the batch.
    """
    return _build(split, x, target, variant="torchcam", mode="noisy", n_samples=n_samples,
                  top_n=top_n, chunk_size=chunk_size, devices=devices, sigma=noise,
                  upsample=upsample, normalize=normalize, key=check_key(key))


@register_method(kind="perturbation", chunks=("masks",),
                 reference="Naidu et al., 2020 (IS-CAM); torch-cam 0.5.0",
                 summary="Score-CAM with scores integrated over scaled masks",
                 peers=("torch-cam ISCAM",))
def build_is_cam(split, x, target=None, *, steps: int = 10, top_n: int | None = None,
                 chunk_size: int | dict | None = None, devices=None, upsample: bool = True,
                 normalize: bool = True) -> Built:
    """IS-CAM (Naidu et al., 2020, arXiv 2010.03023), as torchcam 0.5.0's ISCAM.

    w = softmax_k((1/N) sum_i (logit_c(c_i x * H_k) - logit_c(x))) with torch-cam's masks
    H_k and the cumulative coefficients c_i = sum_{j=1}^{i} j / N, i = 1..N, N = ``steps``.
    """
    return _build(split, x, target, variant="torchcam", mode="integrated",
                  n_samples=steps, top_n=top_n, chunk_size=chunk_size, devices=devices,
                  upsample=upsample, normalize=normalize, samples_name="steps")


@register_method(kind="perturbation", traced=("value",), chunks=("channels",),
                 reference="Desai & Ramaswamy, WACV 2020",
                 summary="sum_k (Y - Y_k) / Y A^k, channel k ablated, through the head alone",
                 peers=("pytorch-grad-cam AblationCAM",),
                 help={"link": '"logit" (as pytorch-grad-cam\'s ``ClassifierOutputTarget``), '
                               '"softmax", "log_softmax" or "rest": a link that gives the '
                               'score\'s value.',
                       "value": "what an ablated activation is set to (traced)."})
def build_ablation_cam(split, x, target=None, *, link: str = "logit", value: float = 0.0,
                       chunk_size: int | dict | None = None, devices=None,
                       upsample: bool = True, normalize: bool = True) -> Built:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020), as pytorch-grad-cam 1.5.7's AblationCAM.

    w_k = (Y - Y_k) / Y, map = ReLU(sum_k w_k A^k), with Y the target's score (the logit
    by default) and Y_k the score with feature map k of A set to ``value``. Only the head
    runs on the ablated activations: K head evaluations, ``chunk_size`` at a time
    with ``vmap``, against K whole-network passes for a library that ablates by hooks.
    pytorch-grad-cam sets the ablated channel to 0 when the layer's minimum is 0 (every
    post-ReLU layer), and to (its running minimum - 1e7) otherwise; jaxcam uses ``value``
    (0 by default) everywhere. Where Y = 0 the weights are 0 (never infinite).

    Example::

        maps = jaxcam.ablation_cam(split, x, 282, chunk_size=64)
    """
    ablation_chunk = per_axis(chunk_size, ("channels",))["channels"] or ABLATION_CHUNK
    check_link(link, value=True, what="ablation_cam (its weights are ratios of scores)")
    objective, classes = resolve(split, x, target, link)
    mesh = method_mesh(devices)
    k = split_shapes(split, x).activations.shape[-1]
    chunk = _chunk_size(k, ablation_chunk, 1 if mesh is None else mesh.size)
    measure = Ablations(objective, chunk, mesh, check_number("value", value, nonneg=False))
    return Built(Program(measure, ScoreMap(), Finish(True, bool(upsample), bool(normalize))),
                 classes, None, mesh)


def _check_baseline(baseline, x):
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return check_number("baseline", baseline, nonneg=False)
    arr = baseline if isinstance(baseline, jax.Array) else np.asarray(baseline)
    if not jnp.issubdtype(arr.dtype, jnp.floating) and not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"baseline must be a number or an image array, got {arr.dtype}")
    try:
        np.broadcast_shapes(arr.shape, x.shape)
    except ValueError:
        raise ValueError(f"baseline of shape {arr.shape} does not broadcast to the images "
                         f"{tuple(x.shape)} (B, H, W, C); pass a number, one image (H, W, C) "
                         "or one per image") from None
    if is_concrete(arr) and not np.all(np.isfinite(np.asarray(arr))):
        raise ValueError("baseline contains NaN or infinite values")
    return jnp.asarray(arr, x.dtype)
