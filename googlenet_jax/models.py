"""GoogLeNet (Inception v1): the d2l.ai Fashion-MNIST version, the paper's, and a tiny d2l for tests.

Every conv and dense layer takes its kernel_init and bias_init from the one
`InitScheme` the model is given; nothing falls back to a Flax default.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from googlenet_jax.inits import InitScheme, get_init
from googlenet_jax.layers import ConvBlock, Dense, fused_1x1, get_activation, local_response_norm, max_pool

VARIANTS = ("d2l", "paper", "tiny")

# (name, c1, (c2 reduce, c2), (c3 reduce, c3), c4): Table 1 of Szegedy et al.
# 2015, which d2l.ai uses unchanged. A max-pool 3x3/2 ends stages 3 and 4 (after 3b, 4e).
INCEPTION_BLOCKS = (
    ("3a", 64, (96, 128), (16, 32), 32),
    ("3b", 128, (128, 192), (32, 96), 64),
    ("4a", 192, (96, 208), (16, 48), 64),
    ("4b", 160, (112, 224), (24, 64), 64),
    ("4c", 128, (128, 256), (24, 64), 64),
    ("4d", 112, (144, 288), (32, 64), 64),
    ("4e", 256, (160, 320), (32, 128), 128),
    ("5a", 256, (160, 320), (32, 128), 128),
    ("5b", 384, (192, 384), (48, 128), 128),
)
AUX_AFTER = ("4a", "4d")
# "tiny" keeps one Inception block per stage: the same stem, five stride-2 stages and
# head as d2l with a third of the blocks, so it compiles 2-3x faster.
# For smoke tests and the test suite's training-loop tests, not for results.
TINY_BLOCKS = ("3a", "4a", "5a")


def inception_blocks(variant: str) -> tuple[tuple, ...]:
  """The (name, c1, c2, c3, c4) rows `variant` stacks, in order."""
  if variant == "tiny":
    return tuple(row for row in INCEPTION_BLOCKS if row[0] in TINY_BLOCKS)
  return INCEPTION_BLOCKS


def pool_after(blocks: tuple[tuple, ...]) -> set[str]:
  """The blocks a max-pool 3x3/2 follows: the last of stages 3 and 4 ("3b", "4e" in d2l)."""
  names = [row[0] for row in blocks]
  return {name for name, following in zip(names, names[1:]) if following[0] != name[0]}

# Five stride-2 stages (conv1 and four max-pools) take 32x32 to 1x1.
MIN_IMAGE_SIZE = 32


class Inception(nn.Module):
  """Four parallel branches concatenated on channels (c1 + c2[1] + c3[1] + c4 out):

  [1x1 -> c1] | [1x1 -> c2[0], 3x3 -> c2[1]] | [1x1 -> c3[0], 5x5 -> c3[1]] |
  [max-pool 3x3/1, 1x1 -> c4]. The three 1x1 convs that read the input share
  one matrix product; each keeps its own parameters and init.
  """

  c1: int
  c2: tuple[int, int]
  c3: tuple[int, int]
  c4: int
  kernel_init: Any
  bias_init: Any
  batch_norm: bool = False
  activation: str = "relu"
  dtype: Any = jnp.float32

  def setup(self):
    def block(features, size, name):
      return ConvBlock(features, size, self.kernel_init, self.bias_init, padding=size // 2,
                       batch_norm=self.batch_norm, activation=self.activation, dtype=self.dtype,
                       name=name)
    self.b1 = block(self.c1, 1, "b1_1x1")
    self.b2_reduce = block(self.c2[0], 1, "b2_reduce")
    self.b2 = block(self.c2[1], 3, "b2_3x3")
    self.b3_reduce = block(self.c3[0], 1, "b3_reduce")
    self.b3 = block(self.c3[1], 5, "b3_5x5")
    self.b4 = block(self.c4, 1, "b4_pool_proj")

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y1, r2, r3 = fused_1x1([self.b1, self.b2_reduce, self.b3_reduce], x, train)
    y2 = self.b2(r2, train)
    y3 = self.b3(r3, train)
    y4 = self.b4(max_pool(x, 3, 1, 1), train)
    return jnp.concatenate([y1, y2, y3, y4], axis=-1)


class AuxHead(nn.Module):
  """Auxiliary classifier (paper, Figure 3): avgpool 5x5/3, conv1x1 128, fc 1024, dropout 0.7, fc."""

  num_classes: int
  kernel_init: Any
  bias_init: Any
  batch_norm: bool = False
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    act = get_activation(self.activation)
    x = nn.avg_pool(x, (5, 5), strides=(3, 3))
    x = ConvBlock(128, 1, self.kernel_init, self.bias_init, batch_norm=self.batch_norm,
                  activation=self.activation, dtype=self.dtype, name="conv")(x, train)
    x = x.reshape(x.shape[0], -1)
    x = act(Dense(1024, self.kernel_init, self.bias_init, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(0.7, deterministic=not train)(x)
    return Dense(self.num_classes, self.kernel_init, self.bias_init, dtype=self.dtype, name="fc2")(x)


class GoogLeNet(nn.Module):
  """GoogLeNet on NHWC images of any channel count.

  variant="d2l": the d2l.ai network (no LRN, no dropout, no aux heads by default).
  variant="paper": Szegedy et al. 2015, with LRN in the stem and dropout 0.4.
  variant="tiny": d2l with one Inception block per stage (3a, 4a, 5a), for fast smoke tests.
  `lrn` and `dropout_rate` default (None) to the variant's choice.
  `init_scheme`: an InitScheme or its name; every conv/dense layer uses it.
  (Not called `init`: that name would hide `flax.linen.Module.init`.)
  `batch_norm=True`: conv without bias + BatchNorm + activation everywhere.
  `aux_logits=True`: in training, returns (logits, [aux_4a, aux_4d]) (tiny has no 4d: [aux_4a]).
  `dtype`: computation dtype (parameters stay float32).
  """

  num_classes: int = 10
  variant: str = "d2l"
  init_scheme: Any = "glorot_uniform"
  batch_norm: bool = False
  aux_logits: bool = False
  dropout_rate: float | None = None
  lrn: bool | None = None
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    if self.variant not in VARIANTS:
      raise ValueError(f"unknown variant {self.variant!r}; valid choices: {', '.join(VARIANTS)}")
    scheme: InitScheme = get_init(self.init_scheme)
    paper = self.variant == "paper"
    use_lrn = paper if self.lrn is None else self.lrn
    dropout_rate = (0.4 if paper else 0.0) if self.dropout_rate is None else self.dropout_rate
    common = dict(kernel_init=scheme.kernel_init, bias_init=scheme.bias_init,
                  batch_norm=self.batch_norm, activation=self.activation, dtype=self.dtype)

    # Stem (b1, b2).
    x = ConvBlock(64, 7, strides=2, padding=3, name="conv1", **common)(x, train)
    x = max_pool(x, 3, 2, 1)
    self.sow("intermediates", "stage_b1", x)
    if use_lrn:
      x = local_response_norm(x)
    x = ConvBlock(64, 1, name="conv2_reduce", **common)(x, train)
    x = ConvBlock(192, 3, padding=1, name="conv2", **common)(x, train)
    if use_lrn:
      x = local_response_norm(x)
    x = max_pool(x, 3, 2, 1)
    self.sow("intermediates", "stage_b2", x)

    # b3, b4, b5.
    aux_outputs = []
    blocks = inception_blocks(self.variant)
    pools = pool_after(blocks)
    for name, c1, c2, c3, c4 in blocks:
      x = Inception(c1, c2, c3, c4, name=f"inception_{name}", **common)(x, train)
      if self.aux_logits and name in AUX_AFTER:
        head = AuxHead(self.num_classes, name=f"aux_{name}", **common)
        # Created in eval too, so params are the same whichever mode initializes.
        aux = head(x, train)
        if train:
          aux_outputs.append(aux)
      if name in pools:
        x = max_pool(x, 3, 2, 1)
        self.sow("intermediates", f"stage_b{name[0]}", x)

    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "stage_b5", x)
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    logits = Dense(self.num_classes, scheme.kernel_init, scheme.bias_init, dtype=self.dtype,
                   name="classifier")(x)
    logits = logits.astype(jnp.float32)
    if aux_outputs:
      return logits, [a.astype(jnp.float32) for a in aux_outputs]
    return logits
