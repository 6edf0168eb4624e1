"""Vision Transformer (Dosovitskiy et al., 2021), torchvision's ``vit_b_16`` layout.

A 16 x 16 stride-16 convolution (``conv_proj``) cuts the image into patch tokens,
row-major over the (h, w) grid. A learned class token is prepended and a position
embedding (``encoder.pos_embedding``) added. Each of the encoder blocks
(``encoder.layers.encoder_layer_{i}``) computes x + attention(ln_1(x)), then
y + mlp(ln_2(y)), with LayerNorm eps 1e-6, exact (erf) GELU and
``torch.nn.MultiheadAttention``'s packed query/key/value projection. The final
``encoder.ln`` is followed by ``heads.head`` on the class token.

The Flax modules are nested with PyTorch's names, so a Flax path joined by "." is the
torchvision state_dict key. The raw parameters ``class_token``, ``pos_embedding``,
``in_proj_weight`` and ``in_proj_bias`` keep PyTorch's layout, so they convert as they are.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
_LN_EPS = 1e-6


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=_LN_EPS, name=name)


class SelfAttention(nn.Module):
    """``torch.nn.MultiheadAttention(D, heads, batch_first=True)`` with q = k = v = x."""

    num_heads: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, n, d = x.shape
        head_dim = d // self.num_heads
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * d, d))
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * d,))
        qkv = x @ w.T + b[None, None]
        q, k, v = (t.reshape(batch, n, self.num_heads, head_dim) for t in jnp.split(qkv, 3, -1))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(head_dim, x.dtype))
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        return nn.Dense(d, name="out_proj")(attended.reshape(batch, n, d))


class MLP(nn.Module):
    """Linear, GELU, (dropout), Linear, (dropout): PyTorch indices 0 and 3."""

    hidden: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = jax.nn.gelu(nn.Dense(self.hidden, name="0")(x), approximate=False)
        return nn.Dense(x.shape[-1], name="3")(y)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = SelfAttention(self.num_heads, name="self_attention")(_layer_norm("ln_1")(x))
        x = x + y
        return x + MLP(self.mlp_dim, name="mlp")(_layer_norm("ln_2")(x))


class Layers(nn.Module):
    """torchvision's ``encoder.layers`` (an ``nn.Sequential`` of ``encoder_layer_{i}``)."""

    num_layers: int
    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(self.num_layers):
            x = EncoderBlock(self.num_heads, self.mlp_dim, name=f"encoder_layer_{i}")(x)
        return x


class Encoder(nn.Module):
    seq_length: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pos = self.param("pos_embedding", nn.initializers.normal(0.02),
                         (1, self.seq_length, self.hidden_dim))
        x = x + pos.astype(x.dtype)
        x = Layers(self.num_layers, self.num_heads, self.mlp_dim, name="layers")(x)
        return _layer_norm("ln")(x)


class Heads(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Dense(self.num_classes, name="head")(x)


class VisionTransformer(nn.Module):
    """ViT on NHWC images (B, image_size, image_size, 3) -> logits (B, num_classes).

    The defaults are ViT-B/16 (torchvision's ``vit_b_16``)."""

    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p = self.patch_size
        tokens = nn.Conv(self.hidden_dim, (p, p), strides=(p, p), padding="VALID",
                         name="conv_proj")(x)                         # (B, h, w, D)
        batch = tokens.shape[0]
        tokens = tokens.reshape(batch, -1, self.hidden_dim)           # row-major over (h, w)
        cls = self.param("class_token", nn.initializers.normal(0.02), (1, 1, self.hidden_dim))
        tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(tokens.dtype),
                                                   (batch, 1, self.hidden_dim)), tokens], 1)
        tokens = Encoder(self.grid**2 + 1, self.num_layers, self.num_heads, self.hidden_dim,
                         self.mlp_dim, name="encoder")(tokens)
        return Heads(self.num_classes, name="heads")(tokens[:, 0])
