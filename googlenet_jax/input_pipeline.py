"""Datasets as in-memory uint8 arrays, deterministic batching, device prefetch.

Fashion-MNIST / MNIST come from their original IDX .gz files, read with numpy
(no TensorFlow). Other image-classification datasets come from TFDS through
`tfds.data_source`, which reads prepared array_record data without
TensorFlow. `synthetic` is a small learnable stand-in for smoke tests and
benchmarks; it is only ever used when asked for by name.

Images stay uint8 at their stored size on the host; scaling to [0, 1] and
resizing happen on the device inside the compiled step (`preprocess`).
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import os
import pathlib
import zlib
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DATASETS = ("fashion_mnist", "mnist")
SYSTEM_DIRS = {  # Debian's dataset-fashion-mnist / dataset-mnist packages.
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}
CLASS_NAMES = {
    "fashion_mnist": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle boot"],
    "mnist": [str(i) for i in range(10)],
}
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned byte, 1-D labels / 3-D images


class DataError(ValueError):
  """A dataset that cannot be found or read; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Images (N, H, W, C) uint8 and labels (N,) int32 for both splits."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: list[str]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) of unsigned bytes with `ndim` dimensions."""
  path = pathlib.Path(path)
  try:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DataError(f"{path} is truncated or corrupt: {e}") from None
  except OSError as e:
    raise DataError(f"cannot read {path}: {e.strerror or e}") from None
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path} is truncated: {len(raw)} bytes, an IDX header needs {header}")
  magic = int.from_bytes(raw[:4], "big")
  if magic != _IDX_MAGIC[ndim]:
    raise DataError(f"{path} is not an IDX file of {ndim}-D unsigned bytes "
                    f"(magic {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x})")
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(dims))
  if len(raw) != expected:
    raise DataError(f"{path} is truncated or corrupt: {len(raw)} bytes, header {dims} "
                    f"needs {expected}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx_file(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
  for candidate in (directory / f"{stem}.gz", directory / stem):
    if candidate.is_file():
      return candidate
  return None


def candidate_dirs(name: str, data_dir: str | None) -> list[pathlib.Path]:
  """Where an IDX dataset is looked up, in order."""
  if data_dir:
    return [pathlib.Path(data_dir).expanduser()]
  cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
  return ([pathlib.Path(d) for d in SYSTEM_DIRS.get(name, [])]
          + [cache / "googlenet_jax" / name, pathlib.Path("~/data").expanduser() / name])


def load_idx_dataset(name: str, directory: str | os.PathLike) -> Dataset:
  """Fashion-MNIST or MNIST from the four original IDX files in `directory`."""
  directory = pathlib.Path(directory)
  arrays = {}
  for key, stem in IDX_FILES.items():
    path = _find_idx_file(directory, stem)
    if path is None:
      raise DataError(f"{directory} has no {stem}.gz (needs {', '.join(IDX_FILES.values())})")
    arrays[key] = read_idx(path, 3 if key.endswith("images") else 1)
  for split in ("train", "test"):
    n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
    if n_images != n_labels:
      raise DataError(f"{directory}: {split} has {n_images} images but {n_labels} labels")
  return Dataset(name, arrays["train_images"][..., None], arrays["train_labels"].astype(np.int32),
                 arrays["test_images"][..., None], arrays["test_labels"].astype(np.int32),
                 num_classes=10, class_names=CLASS_NAMES[name])


def load_tfds_dataset(name: str, data_dir: str | None = None) -> Dataset:
  """Any TFDS dataset with (image, label) features, read with `tfds.data_source` (no TensorFlow)."""
  import tensorflow_datasets as tfds  # Imported here: slow, and only this path needs it.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises its own DatasetNotFoundError among others.
    raise DataError(f"TFDS has no dataset {name!r}: {str(e).splitlines()[0]}") from None
  features = builder.info.features
  if not {"image", "label"} <= set(features.keys()) or not hasattr(features["label"], "num_classes"):
    raise DataError(f"TFDS dataset {name!r} is not an image-classification dataset "
                    f"(features: {', '.join(features.keys())}; needs 'image' and a class 'label')")
  splits = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir)
      examples = [source[i] for i in range(len(source))]
    except Exception as e:
      raise DataError(f"cannot read TFDS {name}/{split}: {str(e).splitlines()[0]}. Prepare it "
                      f"once online (tfds build {name} --file_format=array_record) or pass "
                      "--data-dir") from None
    splits[split] = (np.stack([np.asarray(e["image"], np.uint8) for e in examples]),
                     np.asarray([e["label"] for e in examples], np.int32))
  label = features["label"]
  return Dataset(name, *splits["train"], *splits["test"], num_classes=label.num_classes,
                 class_names=list(label.names))


def synthetic_dataset(num_train: int = 2048, num_test: int = 512, image_size: int = 28,
                      channels: int = 1, num_classes: int = 10, seed: int = 0) -> Dataset:
  """SYNTHETIC data: a fixed random template per class plus noise; learnable, not real."""
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0, 255, (num_classes, image_size, image_size, channels))

  def split(n):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    noise = rng.normal(0, 48, (n, image_size, image_size, channels))
    return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels

  return Dataset("synthetic", *split(num_train), *split(num_test), num_classes=num_classes,
                 class_names=[f"class {i}" for i in range(num_classes)])


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
  """Loads `name`: fashion_mnist, mnist, synthetic or tfds:<tfds name>.

  IDX datasets are looked up in `data_dir` if given, else in Debian's
  /usr/share/datasets and the user's cache; where none is found, TFDS is
  tried; where that fails too, the error says how to get the data.
  """
  if name == "synthetic":
    return synthetic_dataset()
  if name.startswith("tfds:"):
    return load_tfds_dataset(name[len("tfds:"):], data_dir or None)
  if name not in IDX_DATASETS:
    raise DataError(f"unknown dataset {name!r}; valid choices: {', '.join(IDX_DATASETS)}, "
                    "synthetic, tfds:<name> (any TFDS image-classification dataset)")
  dirs = candidate_dirs(name, data_dir)
  for directory in dirs:
    if directory.is_dir() and any(_find_idx_file(directory, s) for s in IDX_FILES.values()):
      return load_idx_dataset(name, directory)
  if data_dir:
    raise DataError(f"--data-dir {data_dir} does not hold the {name} IDX files "
                    f"({', '.join(f'{s}.gz' for s in IDX_FILES.values())})")
  try:
    return load_tfds_dataset(name)
  except DataError as e:
    tfds_error = str(e)
  package = "dataset-" + name.replace("_", "-")
  raise DataError(f"{name} not found in {', '.join(map(str, dirs))} and TFDS failed ({tfds_error}). "
                  f"Install it with `apt-get install {package}`, pass --data-dir DIR holding the "
                  "four IDX .gz files, or prepare it with TFDS online.")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Training drops the last partial batch so every step has the same shape."""
  return num_examples // batch_size


def train_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int,
                  start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Batches of one epoch in an order fixed by (seed, epoch), from batch `start` on."""
  order = np.random.default_rng([seed, epoch]).permutation(len(images))
  for i in range(start, steps_per_epoch(len(images), batch_size)):
    idx = order[i * batch_size:(i + 1) * batch_size]
    yield images[idx], labels[idx]


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example exactly once; the last batch is zero-padded and masked."""
  for start in range(0, len(images), batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    mask = np.ones(len(x), bool)
    if len(x) < batch_size:
      pad = batch_size - len(x)
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(pad, y.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    yield x, y, mask


def preprocess(images: jax.Array, image_size: int) -> jax.Array:
  """uint8 (N, H, W, C) -> float32 in [0, 1], bilinearly resized to image_size (d2l's recipe)."""
  x = images.astype(jnp.float32) / 255.0
  if x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bilinear")
  return x


def prefetch(batches, put, size: int = 2):
  """Yields `put(batch)` for each batch, keeping `size` batches in flight on the device."""
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
