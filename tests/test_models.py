"""GoogLeNet's shapes, parameter counts and init plumbing against the published figures."""

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import GoogLeNet, Inception, get_init, inits
from tests.conftest import abstract_variables, initial_variables


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def stage_shapes(model, image_shape, train=False):
  """Output shape of every sown stage / captured module, for one image, without compute."""
  def run():
    x = jnp.zeros((1,) + image_shape)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False)
    _, state = model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(1)},
                           capture_intermediates=True, mutable=["intermediates", "batch_stats"])
    return state["intermediates"]
  flat = flax.traverse_util.flatten_dict(jax.eval_shape(run))
  return {"/".join(k): v[0].shape for k, v in flat.items()}


def test_d2l_stage_shapes_and_param_count():
  model = GoogLeNet(num_classes=10)
  shapes = stage_shapes(model, (96, 96, 1))
  assert shapes["stage_b1"] == (1, 24, 24, 64)
  assert shapes["stage_b2"] == (1, 12, 12, 192)
  assert shapes["stage_b3"] == (1, 6, 6, 480)
  assert shapes["stage_b4"] == (1, 3, 3, 832)
  assert shapes["stage_b5"] == (1, 1024)
  assert shapes["__call__"] == (1, 10)
  assert count_params(abstract_variables(model, (96, 96, 1))["params"]) == 5_977_530


# Table 1 of Szegedy et al. 2015: output size after each layer at 224x224x3.
PAPER_TABLE_1 = {
    "conv1/__call__": (112, 112, 64), "stage_b1": (56, 56, 64), "conv2/__call__": (56, 56, 192),
    "stage_b2": (28, 28, 192), "inception_3a/__call__": (28, 28, 256),
    "inception_3b/__call__": (28, 28, 480), "stage_b3": (14, 14, 480),
    "inception_4a/__call__": (14, 14, 512), "inception_4b/__call__": (14, 14, 512),
    "inception_4c/__call__": (14, 14, 512), "inception_4d/__call__": (14, 14, 528),
    "inception_4e/__call__": (14, 14, 832), "stage_b4": (7, 7, 832),
    "inception_5a/__call__": (7, 7, 832), "inception_5b/__call__": (7, 7, 1024),
}


def test_tiny_keeps_one_inception_block_per_stage():
  tiny = abstract_variables(GoogLeNet(variant="tiny"), (32, 32, 1))["params"]
  d2l = abstract_variables(GoogLeNet(), (32, 32, 1))["params"]
  assert set(tiny) == set(d2l) - {f"inception_{n}" for n in ("3b", "4b", "4c", "4d", "4e", "5b")}
  for name in ("conv1", "conv2_reduce", "conv2", "inception_3a"):  # same inputs: same shapes
    chex.assert_trees_all_equal_shapes(tiny[name], d2l[name])
  shapes = stage_shapes(GoogLeNet(variant="tiny"), (96, 96, 1))
  assert shapes["stage_b3"] == (1, 6, 6, 256)  # 3a's 64 + 128 + 32 + 32 channels
  assert shapes["stage_b4"] == (1, 3, 3, 512)  # 4a's 192 + 208 + 48 + 64
  assert shapes["stage_b5"] == (1, 832)  # 5a's 256 + 320 + 128 + 128
  assert shapes["__call__"] == (1, 10)


def test_paper_output_sizes_follow_table_1():
  shapes = stage_shapes(GoogLeNet(num_classes=1000, variant="paper"), (224, 224, 3))
  for layer, size in PAPER_TABLE_1.items():
    assert shapes[layer] == (1,) + size, layer
  assert shapes["__call__"] == (1, 1000)


def test_paper_param_counts():
  # Table 1's "params" column is approximate: 4c lists 463K while its own channel
  # columns give 510,104 (with biases). The exact totals follow from the columns.
  plain = abstract_variables(GoogLeNet(num_classes=1000, variant="paper"), (224, 224, 3))
  assert count_params(plain["params"]) == 6_998_552
  assert count_params(plain["params"]["inception_4c"]) == 510_104
  with_aux = abstract_variables(GoogLeNet(num_classes=1000, variant="paper", aux_logits=True),
                                (224, 224, 3))
  assert count_params(with_aux["params"]) == 13_378_280


def test_aux_heads_in_training_only():
  model = GoogLeNet(num_classes=7, variant="paper", aux_logits=True)
  x = jnp.zeros((2, 96, 96, 3))
  variables = abstract_variables(model, (96, 96, 3))
  rngs = {"dropout": jax.random.key(0)}
  train_out = jax.eval_shape(lambda v: model.apply(v, x, train=True, rngs=rngs), variables)
  logits, aux = train_out
  assert logits.shape == (2, 7) and [a.shape for a in aux] == [(2, 7), (2, 7)]
  eval_out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert eval_out.shape == (2, 7)


def test_any_channel_count():
  for channels in (1, 3, 5):
    out = jax.eval_shape(lambda: GoogLeNet().init_with_output(
        jax.random.key(0), jnp.zeros((2, 64, 64, channels)), train=False)[0])
    assert out.shape == (2, 10)


def kernels(params) -> dict[str, jax.Array]:
  flat = flax.traverse_util.flatten_dict(params)
  return {"/".join(k[:-1]): v for k, v in flat.items() if k[-1] == "kernel"}


def test_the_scheme_reaches_every_layer():
  """he_normal and lecun_normal give every kernel the variance its formula predicts, so
  every conv/dense layer got the model's scheme (none fell back to Flax's default)."""
  he = kernels(initial_variables(init_scheme="he_normal")["params"])
  lecun = kernels(initial_variables(init_scheme="lecun_normal")["params"])
  assert he.keys() == lecun.keys() and len(he) == 3 + 9 * 6 + 1
  for name, kernel in he.items():
    expected_he = inits.kernel_variance("he_normal", kernel.shape)
    expected_lecun = inits.kernel_variance("lecun_normal", kernel.shape)
    tolerance = 6 * np.sqrt(2 / kernel.size)
    np.testing.assert_allclose(np.var(kernel), expected_he, rtol=tolerance, err_msg=name)
    np.testing.assert_allclose(np.var(lecun[name]), expected_lecun, rtol=tolerance, err_msg=name)


def test_torch_default_biases_are_nonzero_and_bounded():
  params = initial_variables(init_scheme="torch_default")["params"]
  flat = flax.traverse_util.flatten_dict(params)
  for path, bias in flat.items():
    if path[-1] == "bias":
      kernel = flat[path[:-1] + ("kernel",)]
      fan_in, _ = inits.fans(kernel.shape)
      assert 0 < np.abs(bias).max() <= 1 / np.sqrt(fan_in), path


def test_batch_norm_convs_have_no_bias():
  model = GoogLeNet(batch_norm=True, variant="tiny")  # every kind of conv block d2l has
  variables = abstract_variables(model, (32, 32, 1))
  conv_paths = [k for k in flax.traverse_util.flatten_dict(variables["params"]) if "conv" in k]
  assert conv_paths and all(k[-1] == "kernel" for k in conv_paths)
  assert "batch_stats" in variables
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1))
  real = initial_variables(batch_norm=True, variant="tiny")
  _, updates = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(real)
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, updates["batch_stats"], real["batch_stats"]))


def test_inception_takes_its_init_explicitly():
  scheme = get_init("torch_default")
  block = Inception(8, (4, 12), (2, 6), 4, kernel_init=scheme.kernel_init, bias_init=scheme.bias_init)
  x = jnp.ones((2, 6, 6, 16))
  y, variables = block.init_with_output(jax.random.key(0), x, train=False)
  chex.assert_shape(y, (2, 6, 6, 8 + 12 + 6 + 4))
  assert all(np.any(b != 0) for b in jax.tree.leaves(variables["params"]) if b.ndim == 1)


def test_unknown_variant_and_init_are_errors():
  x = jnp.zeros((1, 32, 32, 1))
  with pytest.raises(ValueError, match="unknown variant 'resnet'.*d2l, paper"):
    GoogLeNet(variant="resnet").init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match="unknown init scheme 'bogus'"):
    GoogLeNet(init_scheme="bogus").init(jax.random.key(0), x, train=False)


class ForwardTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree(self):
    # tiny: every module of d2l (stem, Inception, pools, classifier), a third of the ops to
    # run op by op.
    model = GoogLeNet(init_scheme="he_normal", variant="tiny")
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    variables = initial_variables(init_scheme="he_normal", variant="tiny")
    forward = self.variant(lambda v, x: model.apply(v, x, train=False))
    reference = GoogLeNet(init_scheme="he_normal", variant="tiny").apply(variables, x, train=False)
    chex.assert_trees_all_close(forward(variables, x), reference, rtol=1e-5, atol=1e-6)
    chex.assert_tree_all_finite(forward(variables, x))
