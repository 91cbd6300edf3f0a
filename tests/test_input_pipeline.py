"""Data readers (IDX, TFDS under mock data, synthetic), batching order and eval coverage."""

import os

import numpy as np
import pytest

from googlenet_jax import input_pipeline as ip
from tests.conftest import write_idx

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def test_reads_a_tiny_idx_dataset(tiny_idx_dir):
  ds = ip.load_dataset("fashion_mnist", str(tiny_idx_dir))
  assert ds.train_images.shape == (64, 28, 28, 1) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (20, 28, 28, 1) and ds.test_labels.shape == (20,)
  assert ds.num_classes == 10 and ds.class_names[0] == "t-shirt"
  # Uncompressed files work too.
  raw = ip.read_idx(tiny_idx_dir / "t10k-labels-idx1-ubyte.gz", 1)
  np.testing.assert_array_equal(raw, ds.test_labels)


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:len(b) // 2], "truncated or corrupt"),
    (lambda b: b"\x00\x00\x09\x99" + b[4:], "not an IDX file"),
    (lambda b: b[:6], "truncated"),
])
def test_corrupt_idx_files_are_named(tiny_idx_dir, damage, message):
  import gzip
  path = tiny_idx_dir / "train-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(damage(gzip.decompress(path.read_bytes()))))
  with pytest.raises(ip.DataError, match=message) as e:
    ip.load_dataset("fashion_mnist", str(tiny_idx_dir))
  assert "train-images-idx3-ubyte" in str(e.value)


def test_garbage_gzip_and_missing_files(tiny_idx_dir):
  (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
  with pytest.raises(ip.DataError, match="t10k-labels-idx1-ubyte.gz is truncated or corrupt"):
    ip.load_dataset("fashion_mnist", str(tiny_idx_dir))
  (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(ip.DataError, match="t10k-labels-idx1-ubyte"):
    ip.load_dataset("fashion_mnist", str(tiny_idx_dir))


def test_label_count_mismatch(tiny_idx_dir):
  write_idx(tiny_idx_dir / "t10k-labels-idx1-ubyte.gz", np.zeros(19))
  with pytest.raises(ip.DataError, match="20 images but 19 labels"):
    ip.load_dataset("fashion_mnist", str(tiny_idx_dir))


def test_unknown_dataset_and_empty_data_dir(tmp_path):
  with pytest.raises(ip.DataError, match="unknown dataset 'fashon_mnist'.*fashion_mnist"):
    ip.load_dataset("fashon_mnist")
  with pytest.raises(ip.DataError, match="does not hold the mnist IDX files"):
    ip.load_dataset("mnist", str(tmp_path))


def test_missing_everywhere_says_how_to_get_it(monkeypatch, tmp_path):
  monkeypatch.setitem(ip.SYSTEM_DIRS, "mnist", [str(tmp_path / "nowhere")])
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(ip, "load_tfds_dataset", _offline_tfds)
  with pytest.raises(ip.DataError, match="apt-get install dataset-mnist.*--data-dir"):
    ip.load_dataset("mnist")


def _offline_tfds(name, data_dir=None):
  raise ip.DataError(f"cannot read TFDS {name}/train: no network")


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian():
  ds = ip.load_dataset("fashion_mnist")
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)


def test_tfds_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    ds = ip.load_dataset("tfds:cifar10")
  assert ds.train_images.shape == (24, 32, 32, 3) and ds.num_classes == 10
  assert ds.train_labels.dtype == np.int32 and len(ds.class_names) == 10


def test_tfds_rejects_non_image_classification():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ip.DataError, match="not an image-classification dataset"):
      ip.load_dataset("tfds:squad")


def test_synthetic_is_named_and_learnable():
  ds = ip.load_dataset("synthetic")
  assert ds.name == "synthetic" and ds.class_names[0] == "class 0"
  # Nearest class mean on raw pixels beats chance by far: the labels carry signal.
  means = np.stack([ds.train_images[ds.train_labels == c].mean(0) for c in range(10)])
  dists = ((ds.test_images[:, None].astype(float) - means[None]) ** 2).sum((2, 3, 4))
  assert (dists.argmin(1) == ds.test_labels).mean() > 0.9


def test_shuffling_is_deterministic_and_resumable():
  images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
  labels = np.arange(100, dtype=np.int32)
  epoch0 = [y for _, y in ip.train_batches(images, labels, 10, seed=1, epoch=0)]
  again = [y for _, y in ip.train_batches(images, labels, 10, seed=1, epoch=0)]
  epoch1 = [y for _, y in ip.train_batches(images, labels, 10, seed=1, epoch=1)]
  resumed = [y for _, y in ip.train_batches(images, labels, 10, seed=1, epoch=0, start=4)]
  np.testing.assert_array_equal(np.stack(epoch0), np.stack(again))
  assert not np.array_equal(np.stack(epoch0), np.stack(epoch1))
  np.testing.assert_array_equal(np.stack(resumed), np.stack(epoch0[4:]))
  assert sorted(np.concatenate(epoch0)) == list(range(100))


def test_eval_batches_count_every_example_once():
  images = np.zeros((23, 2, 2, 1), np.uint8)
  labels = np.arange(23, dtype=np.int32)
  batches = list(ip.eval_batches(images, labels, 10))
  assert [len(y) for _, y, _ in batches] == [10, 10, 10]
  seen = np.concatenate([y[m] for _, y, m in batches])
  np.testing.assert_array_equal(seen, labels)


def test_preprocess_resizes_on_device():
  x = np.full((2, 28, 28, 1), 255, np.uint8)
  y = ip.preprocess(x, 96)
  assert y.shape == (2, 96, 96, 1) and float(y.max()) == pytest.approx(1.0)
