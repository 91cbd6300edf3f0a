"""LSUV: unit output variance layer by layer on a batch, deterministic, and it trains."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from googlenet_jax import GoogLeNet, input_pipeline, lsuv
from tests.conftest import initial_variables, train_short_d2l

TOL = 0.1


@pytest.fixture(scope="module")
def fitted():
  dataset = input_pipeline.load_dataset("synthetic")
  images = input_pipeline.preprocess(jnp.asarray(dataset.train_images[:16]), 32)
  # The tiny variant has every kind of layer LSUV meets (stem convs, Inception branches,
  # the classifier) at a third of d2l's compile time; the training test below uses d2l.
  model = GoogLeNet(num_classes=10, init_scheme="lsuv", variant="tiny")
  variables = initial_variables(num_classes=10, init_scheme="lsuv", variant="tiny")
  new_variables, fits = lsuv.lsuv_init(model, variables, images, tol=TOL)
  return model, images, variables, new_variables, fits


def test_every_layer_ends_at_unit_variance_in_depth_order(fitted):
  model, images, _, new_variables, fits = fitted
  names = [f.layer for f in fits]
  assert len(names) == 3 + 3 * 6 + 1 and names[0] == "conv1" and names[-1] == "classifier"
  assert names.index("inception_4a/b3_reduce") < names.index("inception_4a/b3_5x5")
  # Measured again, independently of the fit's own bookkeeping.
  variances = jax.device_get(lsuv._preact_variances(model, images)(new_variables))
  assert set(variances) == {tuple(n.split("/")) for n in names}
  bad = {k: float(v) for k, v in variances.items() if abs(v - 1) >= TOL}
  assert not bad, bad
  # Orthogonal kernels (gain 1) lose half the variance at every ReLU: every layer starts
  # below the band, the classifier by more than two decades, and the fit rescaled them.
  assert all(f.initial_variance < 1 - TOL for f in fits)
  assert fits[-1].initial_variance < 0.01 and fits[-1].rescales >= 1


def test_only_kernels_change_and_stay_orthogonal_up_to_scale(fitted):
  _, _, before, after, _ = fitted
  kernel = np.asarray(after["params"]["conv2"]["conv"]["kernel"]).reshape(-1, 192)
  gram = kernel.T @ kernel
  np.testing.assert_allclose(gram / gram[0, 0], np.eye(192), atol=1e-4)  # columns: one scale
  chex.assert_trees_all_equal(after["params"]["conv2"]["conv"]["bias"],
                              before["params"]["conv2"]["conv"]["bias"])


def test_deterministic_given_batch_and_params(fitted):
  model, images, variables, new_variables, _ = fitted
  again, _ = lsuv.lsuv_init(model, variables, images, tol=TOL)
  chex.assert_trees_all_equal(again, new_variables)


def test_bad_tolerance():
  with pytest.raises(ValueError, match="tolerance"):
    lsuv.lsuv_init(None, {"params": {}}, None, tol=1.5)


def test_lsuv_trains_where_torch_default_stalls(tmp_path):
  # At train_short_d2l's lr 0.01: LSUV's unit-variance logits take larger steps than
  # he_normal's, and lr 0.1 diverges here.
  lsuv_summary, warnings, lsuv_train = train_short_d2l("lsuv", tmp_path)
  assert not lsuv_summary["stalled"] and not warnings
  torch_summary, _, torch_train = train_short_d2l("torch_default", tmp_path)
  assert torch_summary["stalled"]
  # torch_default's logits ignore the input and its loss does not move; LSUV's do and it falls.
  assert max(m["logit_std"] for m in torch_train) < 1e-5 < 1e-2 < min(m["logit_std"] for m in lsuv_train)
  assert abs(torch_train[-1]["loss"] - torch_train[0]["loss"]) < 0.01
  assert lsuv_train[-1]["loss"] < lsuv_train[0]["loss"] - 0.2
