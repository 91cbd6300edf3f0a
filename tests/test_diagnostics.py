"""Signal-propagation diagnostics at init (32x32 input): the collapse, the theory, the CLI."""

import json
import math

import pytest

from googlenet_jax import diagnose, diagnostics, input_pipeline

BATCH, SIZE = 16, 32
SCHEMES = ("torch_default", "he_normal")


@pytest.fixture(scope="module")
def batch():
  dataset = input_pipeline.load_dataset("synthetic")
  return diagnose.first_batch(dataset, BATCH, seed=0, image_size=SIZE)


@pytest.fixture(scope="module")
def reports(batch):
  images, labels = batch
  return {r.scheme: r for r in diagnostics.diagnose(SCHEMES, images, labels, num_classes=10)}


def test_torch_default_collapses_the_logits(reports):
  torch_default, he = reports["torch_default"], reports["he_normal"]
  assert torch_default.logits_std < 1e-5
  assert torch_default.logits_std < 1e-3 * he.logits_std  # several decades below
  assert torch_default.verdict == "vanishing" and torch_default.first_unhealthy is not None
  assert abs(torch_default.loss - math.log(10)) < 0.01


def test_he_normal_keeps_the_signal_within_a_decade(reports):
  he = reports["he_normal"]
  first = he.layers[0].std
  assert all(first / 10 <= s.std <= first * 10 for s in he.layers), [(s.layer, s.std) for s in he.layers]
  assert he.verdict == "healthy" and he.first_unhealthy is None


def test_every_conv_and_dense_layer_in_depth_order(reports):
  names = [s.layer for s in reports["he_normal"].layers]
  assert len(names) == 3 + 9 * 6 + 1  # stem convs, six per inception, classifier
  assert names[:3] == ["conv1", "conv2_reduce", "conv2"] and names[-1] == "classifier"
  i = names.index
  assert i("inception_3a/b2_reduce") < i("inception_3a/b2_3x3")
  assert i("inception_3a/b3_reduce") < i("inception_3a/b3_5x5") < i("inception_3b/b1_1x1")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_theory_predicts_single_feeder_layers_within_2x(reports, scheme):
  ratios = reports[scheme].single_feeder_ratios()
  assert len(ratios) == 1 + 2 * 9  # conv2 and each inception's 3x3 and 5x5
  assert all(0.5 <= r <= 2.0 for r in ratios.values()), ratios


def test_activation_second_moments():
  # ReLU: the theory's halving; quadrature agrees with it for z symmetric about 0.
  assert diagnostics.activation_second_moment("relu", 0.0, 2.0)[0] == pytest.approx(2.0)
  assert diagnostics.activation_second_moment("leaky_relu", 0.0, 2.0)[0] == pytest.approx(
      2.0 * (1 + 0.01 ** 2), rel=1e-3)
  # tanh is the identity for small z; sigmoid's output sits at 1/2 however small z is.
  moment, how = diagnostics.activation_second_moment("tanh", 0.0, 1e-3)
  assert moment == pytest.approx(1e-6, rel=1e-3) and how.startswith("tanh: E[f(z)^2] = 1 E[z^2]")
  assert diagnostics.activation_second_moment("sigmoid", 0.0, 1e-3)[0] == pytest.approx(0.25, rel=1e-3)
  # Saturation: tanh(z)^2 -> 1 for large z.
  assert diagnostics.activation_second_moment("tanh", 0.0, 100.0)[0] == pytest.approx(1.0, abs=0.02)


def test_theory_follows_the_activation(batch):
  images, labels = batch
  report = diagnostics.diagnose_scheme("glorot_uniform", images, labels, 10, activation="tanh")
  ratios = report.single_feeder_ratios()
  assert len(ratios) == 1 + 2 * 9 and all(0.5 <= r <= 2.0 for r in ratios.values()), ratios
  assert all("tanh: E[f(z)^2]" in s.prediction for s in report.layers
             if s.prediction.startswith("feeder"))


def test_prediction_formula_and_padding_taps():
  assert diagnostics.predicted_variance(100, 0.02, 0.5, 0.1) == pytest.approx(1.1)
  # 5x5 pad 2 on a 3x3 map: of 3 outputs x 5 taps per axis, 9 read the input.
  assert diagnostics.valid_tap_fraction(3, 5, 1, 2) == pytest.approx(9 / 15)
  assert diagnostics.valid_tap_fraction(8, 1, 1, 0) == 1.0


def test_verdicts_on_hand_made_layers():
  def layers(*stds):
    return [diagnostics.LayerStats(f"l{i}", 1, 1, 0, 1, 1, 0, s, 0.5, 1, 1, None, None)
            for i, s in enumerate(stds)]
  assert diagnostics.verdict(layers(1.0, 0.5, 2.0), 0.1)[:2] == ("healthy", None)
  assert diagnostics.verdict(layers(1.0, 0.5, 0.05), 0.1)[:2] == ("vanishing", "l2")
  assert diagnostics.verdict(layers(1.0, 20.0), 0.1)[:2] == ("exploding", "l1")
  assert diagnostics.verdict(layers(1.0, 1.0), 1e-7)[:2] == ("vanishing", "logits")
  assert diagnostics.verdict(layers(1.0, float("nan")), 1.0)[:2] == ("exploding", "l1")


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
  # The same batch shape as the fixtures, so the compiled pass is reused.
  out = tmp_path / "diag"
  assert diagnose.main(["--dataset", "synthetic", "--image-size", str(SIZE), "--batch-size",
                        str(BATCH), "--init", "pytorch,kaiming", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "== torch_default" in printed and "verdict: VANISHING" in printed
  assert "inception_5b/b3_5x5" in printed and "feeder inception_5b/b3_reduce" in printed
  report = json.loads((out / diagnose.REPORT_FILE).read_text())
  assert [s["scheme"] for s in report["schemes"]] == list(SCHEMES)
  assert report["schemes"][0]["logits_std"] < 1e-5 and len(report["schemes"][1]["layers"]) == 58
  assert (out / diagnose.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("flags,message", [
    (["--init", "glorious"], "--init: unknown init scheme 'glorious'"),
    (["--image-size", "16"], "--image-size 16 is too small"),
    (["--variant", "resnet"], "unknown variant 'resnet'"),
    (["--batch-size", "0"], "must be positive"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, run_main):
  result = run_main(diagnose.main, flags + ["--out", str(tmp_path / "d")])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
