"""The stall detector: quiet on healthy runs, a clear warning (or exit code 3) on a collapsed one."""

import math

import pytest

from googlenet_jax import stall
from tests.conftest import train_short_d2l

CHANCE = math.log(10)


def detector(**kw):
  return stall.StallDetector(num_classes=10, init="torch_default", check_steps=100, **kw)


def test_no_verdict_before_the_check_step():
  assert detector().check(50, CHANCE, 1e-8) is None


def test_loss_at_chance_with_input_dependent_logits_is_not_a_stall():
  # A healthy slow start (glorot's first few hundred steps): loss ~ln 10, logits still vary.
  d = detector()
  assert d.check(200, CHANCE + 0.001, 0.05) is None
  assert not d.summary()["stalled"]


def test_stall_warns_once_naming_scheme_figures_and_fixes():
  d = detector()
  warning = d.check(100, CHANCE + 0.0004, 2e-7)
  assert warning.startswith("warning:")
  for text in ("torch_default", "2.3030", "2.00e-07", "--init glorot", "--init he_normal",
               "--init lsuv", "--batch-norm"):
    assert text in warning
  assert d.check(120, CHANCE, 2e-7) is None  # once
  assert d.summary() == {"stalled": True, "stall_warning_step": 100}


def test_fail_on_stall_raises():
  with pytest.raises(stall.TrainingStalled, match="stalled at step 100"):
    detector(fail=True).check(100, CHANCE, 1e-7)


def test_recovered_run_is_not_reported_stalled():
  d = detector()
  d.check(100, CHANCE, 1e-7)
  d.check(300, 1.2, 0.8)
  assert d.summary() == {"stalled": False, "stall_warning_step": 100}


def test_torch_default_run_warns_and_healthy_run_does_not(tmp_path):
  summary, warnings, _ = train_short_d2l("torch_default", tmp_path)
  assert summary["stalled"] and len(warnings) == 1, warnings
  summary, warnings, _ = train_short_d2l("he_normal", tmp_path)
  assert not summary["stalled"] and not warnings


def test_fail_on_stall_stops_the_run(tmp_path):
  with pytest.raises(stall.TrainingStalled):
    train_short_d2l("torch_default", tmp_path, fail_on_stall=True)
