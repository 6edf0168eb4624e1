"""Float32 pairs (double-float arithmetic): the logits of a pooled linear head to one rounding.

Exact Grad-CAM++ divides by 2 D2 + (sum A) D3, which passes through zero for some channel
at some confidences; near such a pole the map is sensitive to the logits themselves, and the
rounding error of a float32 linear layer (about sqrt(K) roundings for K input channels) is
amplified into the map. :func:`pooled_linear_logits` recomputes the logits of a head
``f(mean_hw A)`` with f affine so that they are the exact value rounded once.

A value is carried as an unevaluated sum hi + lo of two float32 numbers; additions recover
their rounding errors exactly by TwoSum (Knuth). Products are never rounded:

* elementwise, each factor is cut by a bit mask into two halves of at most 12 significant
  bits (:func:`halves`), whose products fit the 24-bit significand;
* in the dot products with the head's matrix, both operands are cut into slices of a few
  bits on a common scale per row and per column (Ozaki's error-free splitting,
  :func:`exact_products`), so every product and every partial sum inside a float32 matrix
  multiplication is an integer multiple of one unit below 2^24: exact, in any order of
  summation, blocked, vectorised or fused.

No step relies on a product being rounded the same way twice, so a compiler that turns
x / z into x * (1 / z) or contracts a product into a fused multiply-add changes nothing.
Divisions are long divisions in cut 12-bit digits (:func:`quotient`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_HIGH_BITS = 0xFFFFF000   # sign, exponent and the 11 leading explicit significand bits


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """(s, e) with s = fl(a + b) and a + b = s + e exactly (Knuth)."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


def _renormalise(s: Array, e: Array) -> tuple[Array, Array]:
    """(hi, lo) = s + e with hi = fl(s + e), for |e| small against |s| (or s = 0)."""
    hi = s + e
    return hi, e - (hi - s)


def add(x: tuple[Array, Array], y: tuple[Array, Array]) -> tuple[Array, Array]:
    """The sum of two pairs, to a relative error of a few float32 epsilons squared."""
    s, e = two_sum(x[0], y[0])
    return _renormalise(s, e + (x[1] + y[1]))


def _truncated(a: Array) -> Array:
    """a with its 12 low significand bits cleared (the ``hi`` of :func:`halves`)."""
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    return jax.lax.bitcast_convert_type(bits & jnp.uint32(_HIGH_BITS), jnp.float32)


def halves(a: Array) -> tuple[Array, Array]:
    """(hi, lo), a = hi + lo exactly, each with at most 12 significant bits (float32)."""
    hi = _truncated(a)
    return hi, a - hi


def total(terms: Array, axis: int = 0) -> tuple[Array, Array]:
    """The sum of float32 terms along ``axis`` as a pair, by a pairwise tree of pair
    additions (error about log2(n) epsilon squared of the sum of magnitudes)."""
    hi = jnp.moveaxis(terms, axis, 0)
    n = hi.shape[0]
    width = 1 << max(n - 1, 0).bit_length()
    hi = jnp.concatenate([hi, jnp.zeros((width - n, *hi.shape[1:]), hi.dtype)])
    lo = jnp.zeros_like(hi)
    while hi.shape[0] > 1:
        half = hi.shape[0] // 2
        hi, lo = add((hi[:half], lo[:half]), (hi[half:], lo[half:]))
    return hi[0], lo[0]


def times(x: Array, z: float) -> tuple[Array, Array]:
    """x z as a pair, from the four exact products of their halves."""
    x1, x2 = halves(x)
    z1, z2 = halves(jnp.asarray(z, x.dtype))
    return total(jnp.stack([x1 * z1, x1 * z2, x2 * z1, x2 * z2]))


def quotient(x: tuple[Array, Array], z: float) -> Array:
    """x / z rounded to float32 (z a float32 number), by long division in 12-bit digits.

    Each digit is a quotient cut to 12 bits, so its product with z is exact and the
    remainder is exact in pair arithmetic; two digits leave a remainder of 2^-22 of x, whose
    own rounded quotient cannot move the final rounding. The digits are only ever cut,
    never reused rounded: a compiler may turn x / z into x * (1 / z) and fuse that product
    into a later addition, which would change a rounded quotient from one use to the next
    but cannot change its cut bits."""
    digits = []
    for _ in range(2):
        q = _truncated(x[0] / z)
        p = times(q, z)
        x = add(x, (-p[0], -p[1]))
        digits.append(q)
    s, e = two_sum(*digits)
    return s + (e + x[0] / z)


def affine_parts(f, k: int, dtype) -> tuple[Array, Array]:
    """(W (k, C), b (C,)) of an affine f(m) = m W + b on vectors m (1, k), read exactly.

    b = f(0) and the rows of W are f's linear part at the basis vectors: a float32 linear
    layer multiplies each entry by 1 or by 0 there, so nothing is rounded."""
    zero = jnp.zeros((1, k), dtype)
    bias = f(zero)[0]
    _, linear = jax.linearize(f, zero)
    with jax.default_matmul_precision("highest"):
        w = jax.vmap(linear)(jnp.eye(k, dtype=dtype)[:, None])[:, 0]
    return w, bias


SLICED_BITS = 48          # bits of each operand kept below its largest entry


def _slices(x: Array, axis: int, bits: int, count: int) -> list[Array]:
    """x = sum of ``count`` slices + a remainder below 2^-(bits count) of max |x| along
    ``axis``; slice s holds integers of magnitude <= 2^bits times unit_s = 2^(e - bits s),
    with 2^e > max |x| along ``axis``. Scaling by a power of two and rounding to an integer
    are exact, so each slice and remainder is exact."""
    _, e = jnp.frexp(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    out, rest = [], x
    one = jnp.ones(e.shape, x.dtype)
    for s in range(1, count + 1):
        exponent = jnp.clip(e - bits * s, -126, 127)
        piece = jnp.round(rest * jnp.ldexp(one, -exponent)) * jnp.ldexp(one, exponent)
        out.append(piece)
        rest = rest - piece
    return out


def exact_products(x: Array, w: Array) -> Array:
    """Float32 terms (P, B, C) whose exact sum is x @ w for x (B, K), w (K, C), up to
    2^-48 of K max|x_b| max|w_c| (Ozaki's scheme).

    x's rows and w's columns are cut into slices of ``bits`` bits (2 bits + log2 K <= 24),
    and every slice of x is multiplied by every slice of w in one matrix product, each of
    whose entries is exact."""
    k = x.shape[-1]
    bits = (24 - max(k - 1, 1).bit_length()) // 2
    if bits < 1:
        raise ValueError(f"exact_products: K = {k} is too long for float32 slices")
    count = -(-SLICED_BITS // bits)
    xs = jnp.concatenate(_slices(x, 1, bits, count))                    # (count B, K)
    ws = jnp.stack(_slices(w, 0, bits, count), axis=1)                  # (K, count, C)
    prod = jnp.matmul(xs, ws.reshape(k, -1), precision=jax.lax.Precision.HIGHEST)
    return prod.reshape(count * x.shape[0], count, -1).transpose(1, 0, 2).reshape(
        count * count, x.shape[0], -1)


def pooled_linear_logits(a: Array, w: Array, bias: Array) -> Array:
    """The logits of ``f(mean_hw A) = mean_hw(A) W + b``, the exact value rounded once.

    With n = h w positions, the pooled sums S over positions (pairs), S W (:func:`exact_products`
    on S's high parts, plain float32 on its low parts) and S W + n b are formed as pairs
    (:func:`total`), and (S W + n b) / n is rounded once (:func:`quotient`).

    Args:
      a: float32 activations (B, h, w, K).
      w, bias: the affine map (K, C), (C,) (:func:`affine_parts`).

    Returns:
      (B, C) float32 logits.
    """
    n = a.shape[1] * a.shape[2]
    s_hi, s_lo = total(a.reshape(a.shape[0], n, a.shape[-1]), axis=1)      # (B, K)
    low = jnp.matmul(s_lo, w, precision=jax.lax.Precision.HIGHEST)
    dot = total(jnp.concatenate([exact_products(s_hi, w), low[None]]))     # (B, C) pairs
    nb = times(jnp.broadcast_to(bias, dot[0].shape), float(n))
    return quotient(add(dot, nb), float(n))
