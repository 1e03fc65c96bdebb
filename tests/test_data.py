"""Tests for experiments.data: IDX parsing, TFDS loading, preprocessing."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import data, preprocessing

NUM_TRAIN = 6
NUM_TEST = 4


def _idx_bytes(array: np.ndarray) -> bytes:
  """Encodes a uint8 array in the IDX format."""
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
  payload = _idx_bytes(array)
  if compress:
    path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(payload))
  else:
    path.write_bytes(payload)
  return path


def _synthetic_split(rng, num_examples):
  images = rng.integers(0, 256, size=(num_examples, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(num_examples,), dtype=np.uint8)
  return images, labels


@pytest.fixture(params=[False, True], ids=["plain", "gz"])
def idx_dir(request, tmp_path):
  """A folder with synthetic MNIST-layout IDX files and their contents."""
  rng = np.random.default_rng(0)
  contents = {}
  for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    images, labels = _synthetic_split(rng, count)
    images_name, labels_name = data.IDX_FILENAMES[split]
    _write_idx(tmp_path / images_name, images, compress=request.param)
    _write_idx(tmp_path / labels_name, labels, compress=request.param)
    contents[split] = (images, labels)
  return tmp_path, contents


# --- IDX --------------------------------------------------------------------


def test_load_idx_roundtrip(idx_dir):
  folder, contents = idx_dir
  dataset = data.load_dataset("mnist", idx_dir=folder)
  assert dataset["num_classes"] == 10
  assert dataset["image_shape"] == (28, 28, 1)
  for split, (images, labels) in contents.items():
    loaded_images, loaded_labels = dataset[split]
    assert loaded_images.dtype == np.uint8
    assert loaded_images.shape == (len(images), 28, 28, 1)
    np.testing.assert_array_equal(loaded_images[..., 0], images)
    assert loaded_labels.dtype == np.int32
    np.testing.assert_array_equal(loaded_labels, labels)


def test_missing_idx_file_names_the_file(idx_dir):
  folder, _ = idx_dir
  for path in folder.glob("t10k-labels-idx1-ubyte*"):
    path.unlink()
  with pytest.raises(data.DatasetError, match="t10k-labels-idx1-ubyte"):
    data.load_dataset("fashion_mnist", idx_dir=folder)


def test_truncated_idx_file(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte"
  path.write_bytes(_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5])
  with pytest.raises(data.DatasetError, match=f"{path.name}.*truncated"):
    data.read_idx(path)


def test_truncated_gzip_file(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  compressed = gzip.compress(_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
  path.write_bytes(compressed[: len(compressed) // 2])
  with pytest.raises(data.DatasetError, match=path.name):
    data.read_idx(path)


def test_idx_file_with_trailing_bytes(tmp_path):
  path = tmp_path / "labels"
  path.write_bytes(_idx_bytes(np.zeros((3,), np.uint8)) + b"\x00")
  with pytest.raises(data.DatasetError, match="too long"):
    data.read_idx(path)


@pytest.mark.parametrize(
  "contents, problem",
  [
    (b"\x12\x34\x08\x01\x00\x00\x00\x02ab", "bad magic number"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x02ab", "dtype code 0x0d"),
    (b"\x00\x00", "less than the 4-byte magic number"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
  ],
  ids=["magic", "dtype", "no-magic", "short-header"],
)
def test_corrupt_idx_header(tmp_path, contents, problem):
  path = tmp_path / "t10k-labels-idx1-ubyte"
  path.write_bytes(contents)
  expected = f"{path.name} is corrupt.*{problem}"
  with pytest.raises(data.DatasetError, match=expected):
    data.read_idx(path)


def test_wrong_ndim_is_rejected(tmp_path):
  path = tmp_path / "train-labels-idx1-ubyte"
  path.write_bytes(_idx_bytes(np.zeros((3, 2), np.uint8)))
  with pytest.raises(data.DatasetError, match="2 dimensions, expected 1"):
    data.read_idx(path, expected_ndim=1)


def test_image_label_count_mismatch(idx_dir):
  folder, _ = idx_dir
  for path in folder.glob("train-labels-idx1-ubyte*"):
    path.unlink()
  _write_idx(
    folder / "train-labels-idx1-ubyte",
    np.zeros((NUM_TRAIN + 1,), np.uint8),
    compress=False,
  )
  with pytest.raises(data.DatasetError, match="images but .* labels"):
    data.load_dataset("mnist", idx_dir=folder)


def test_out_of_range_label(tmp_path):
  images_name, labels_name = data.IDX_FILENAMES["train"]
  _write_idx(tmp_path / images_name, np.zeros((2, 28, 28)), compress=False)
  _write_idx(tmp_path / labels_name, np.array([3, 10]), compress=False)
  with pytest.raises(data.DatasetError, match="label 10"):
    data.load_idx_split(tmp_path, "train")


def test_idx_dir_rejects_cifar10(tmp_path):
  with pytest.raises(data.DatasetError, match="cifar10"):
    data.load_dataset("cifar10", idx_dir=tmp_path)


def test_unknown_dataset_name():
  expected = r"'svhn'.*mnist, fashion_mnist, cifar10"
  with pytest.raises(ValueError, match=expected):
    data.load_dataset("svhn")


# --- TFDS -------------------------------------------------------------------


@pytest.mark.parametrize("name, image_shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_data(name, image_shape, tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    dataset = data.load_dataset(name, data_dir=tmp_path)
  assert dataset["image_shape"] == image_shape
  for split in ("train", "test"):
    images, labels = dataset[split]
    assert images.shape == (5, *image_shape)
    assert images.dtype == np.uint8
    assert labels.shape == (5,)
    assert labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 10


def test_missing_tfds_dataset_fails_fast_with_advice(tmp_path, monkeypatch):
  def no_download(*args, **kwargs):
    raise AssertionError("load_dataset must not download by default")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
  with pytest.raises(data.DatasetError) as error:
    data.load_dataset("fashion_mnist", data_dir=tmp_path)
  message = str(error.value)
  assert "'fashion_mnist'" in message
  assert str(tmp_path) in message
  assert "tfds build fashion_mnist" in message
  assert "--config.idx_dir" in message
  assert "make data" in message
  assert list(tmp_path.iterdir()) == []  # Nothing was written.


# --- Real Fashion-MNIST (only if fetched, e.g. by `make data`) ---------------


def _fetched_fashion_mnist_dir():
  """Returns where fetch_fashion_mnist would find the files, or None."""
  for folder in (
    data.SYSTEM_FASHION_MNIST_DIR,
    data.DEFAULT_CACHE_DIR / "usr/share/datasets/fashion-mnist",
  ):
    if all(
      (folder / f"{name}.gz").is_file() for pair in data.IDX_FILENAMES.values() for name in pair
    ):
      return folder
  return None


@pytest.mark.skipif(
  _fetched_fashion_mnist_dir() is None,
  reason="Fashion-MNIST not fetched (see data.fetch_fashion_mnist)",
)
def test_real_fashion_mnist():
  folder = data.fetch_fashion_mnist()  # Finds the files without downloading.
  assert Path(folder) == _fetched_fashion_mnist_dir()
  dataset = data.load_dataset("fashion_mnist", idx_dir=folder)
  train_images, train_labels = dataset["train"]
  test_images, test_labels = dataset["test"]
  assert train_images.shape == (60_000, 28, 28, 1)
  assert test_images.shape == (10_000, 28, 28, 1)
  assert train_labels.shape == (60_000,)
  assert test_labels.shape == (10_000,)
  # Fashion-MNIST is exactly balanced.
  np.testing.assert_array_equal(np.bincount(train_labels), [6_000] * 10)
  np.testing.assert_array_equal(np.bincount(test_labels), [1_000] * 10)


# --- Preprocessing and batching ---------------------------------------------


def test_normalize_mnist_to_unit_interval():
  images = np.array([0, 51, 255], np.uint8).reshape(1, 3, 1, 1)
  normalized = preprocessing.normalize(images, "mnist")
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized.ravel(), [0.0, 0.2, 1.0], rtol=1e-6)


def test_normalize_cifar10_per_channel():
  mean_pixel = np.round(data.CIFAR10_MEAN * 255).astype(np.uint8)
  images = np.broadcast_to(mean_pixel, (2, 4, 4, 3))
  normalized = preprocessing.normalize(images, "cifar10")
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized, 0.0, atol=0.01)
  white = preprocessing.normalize(np.full((1, 1, 1, 3), 255, np.uint8), "cifar10")
  np.testing.assert_allclose(white.ravel(), (1 - data.CIFAR10_MEAN) / data.CIFAR10_STD, rtol=1e-6)


def test_random_crop_flip_is_deterministic_and_shape_preserving():
  images = np.random.default_rng(0).normal(size=(8, 32, 32, 3))
  images = images.astype(np.float32)
  first = preprocessing.random_crop_flip(np.random.default_rng(1), images)
  second = preprocessing.random_crop_flip(np.random.default_rng(1), images)
  assert first.shape == images.shape and first.dtype == images.dtype
  np.testing.assert_array_equal(first, second)


def test_random_crop_flip_crops_are_shifted_or_flipped_windows():
  # A single 1-channel image whose pixel values encode their position.
  image = np.arange(1, 6 * 6 + 1, dtype=np.float32).reshape(1, 6, 6, 1)
  padded = np.pad(image[0, :, :, 0], 2)
  windows = set()
  for top in range(5):
    for left in range(5):
      window = padded[top : top + 6, left : left + 6]
      windows.add(window.tobytes())
      windows.add(window[:, ::-1].tobytes())
  rng = np.random.default_rng(0)
  crops = preprocessing.random_crop_flip(rng, np.repeat(image, 64, axis=0), padding=2)
  seen = {crop[:, :, 0].tobytes() for crop in crops}
  assert seen <= windows
  assert len(seen) > 10  # Offsets and flips actually vary.


def test_batches_cover_epoch_deterministically():
  images = np.arange(10).reshape(10, 1)
  labels = np.arange(10)

  def epoch(seed, **kwargs):
    return list(preprocessing.batches(images, labels, 3, rng=np.random.default_rng(seed), **kwargs))

  first, again = epoch(0), epoch(0)
  assert len(first) == preprocessing.num_batches(10, 3) == 3
  for (x, y), (x2, y2) in zip(first, again):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x[:, 0], y)  # Images stay with labels.
    assert len(y) == 3
  seen = np.concatenate([y for _, y in first])
  assert len(set(seen)) == 9  # One example dropped with the remainder.

  full = epoch(0, drop_remainder=False)
  assert len(full) == preprocessing.num_batches(10, 3, drop_remainder=False) == 4
  np.testing.assert_array_equal(np.sort(np.concatenate([y for _, y in full])), labels)


def test_batches_without_shuffle_keep_order():
  images = np.arange(7)
  ordered = preprocessing.batches(images, images, 2, shuffle=False, drop_remainder=False)
  np.testing.assert_array_equal(np.concatenate([x for x, _ in ordered]), images)


def test_batches_validate_arguments_eagerly():
  with pytest.raises(ValueError, match="rng"):
    preprocessing.batches(np.zeros(4), np.zeros(4), 2)
  with pytest.raises(ValueError, match="labels"):
    preprocessing.batches(np.zeros(4), np.zeros(3), 2, shuffle=False)
  with pytest.raises(ValueError, match="batch_size"):
    preprocessing.batches(np.zeros(4), np.zeros(4), 0, shuffle=False)


def test_download_idx_fetches_reads_and_reuses_the_files(tmp_path):
  """MNIST without TensorFlow (the notebook's path): the four IDX files come over HTTP,
  are checked by reading them, and are not fetched again."""
  import functools
  import http.server
  import threading

  from tests import helpers

  served = tmp_path / "mirror"
  served.mkdir()
  helpers.write_learnable_idx_dir(served, 64, 32)
  requests = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      requests.append(self.path)

  server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
  )
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}/"
  try:
    folder = data.download_idx("mnist", tmp_path / "mnist", base_url=url)
    images, labels = data.load_idx_split(folder, "train")
    assert images.shape[0] == labels.shape[0] == 64
    assert len(requests) == 4
    data.download_idx("mnist", tmp_path / "mnist", base_url=url)
    assert len(requests) == 4  # already there: nothing fetched
    with pytest.raises(data.DatasetError, match="downloading .*nothing-here.*failed"):
      data.download_idx("mnist", tmp_path / "other", base_url=url + "nothing-here/")
    assert not list((tmp_path / "other").iterdir())  # no partial file left
  finally:
    server.shutdown()
  with pytest.raises(data.DatasetError, match="no IDX download for dataset='cifar10'"):
    data.download_idx("cifar10", tmp_path / "c")
