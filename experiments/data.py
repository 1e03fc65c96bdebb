"""Datasets for the experiments, loaded whole into NumPy arrays.

MNIST, Fashion-MNIST and CIFAR-10 fit in memory, so the training loop works on
plain arrays and this module is the only place that knows where data comes
from. Two sources:

* IDX files (``idx_dir``): the original MNIST file layout, read by a small
  strict parser. Works fully offline, e.g. with the Fashion-MNIST files from
  the Debian package ``dataset-fashion-mnist`` (see ``fetch_fashion_mnist``).
* TensorFlow Datasets via ``tfds.data_source``, which reads ArrayRecord files
  with NumPy and does not need TensorFlow (``tfds.load`` does).

Typical use::

  data = load_dataset("fashion_mnist", idx_dir=fetch_fashion_mnist())
  count = validation_count(None, len(data["train"][0]))  # the last 10,000 images
  (train_x, train_y), (val_x, val_y) = split_validation(*data["train"], count)
  train_x = normalize(train_x, "fashion_mnist")
  for x, y in batches(train_x, train_y, 128, rng=rng):
    ...
"""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")
MNIST_LIKE_NAMES = ("mnist", "fashion_mnist")
NUM_CLASSES = 10
IMAGE_SHAPES = {
  "mnist": (28, 28, 1),
  "fashion_mnist": (28, 28, 1),
  "cifar10": (32, 32, 3),
}

# IDX base names per split as (images, labels); each may also carry ".gz".
IDX_FILENAMES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UNSIGNED_BYTE = 0x08

# Per-channel statistics of the CIFAR-10 training set (pixels scaled to [0, 1]).
# The std is the true per-pixel std; the often-copied (0.2023, 0.1994, 0.2010)
# is a different (smaller) statistic.
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where fetch_fashion_mnist unpacks the Debian package when it is not installed.
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "fashion-mnist"
FASHION_MNIST_DEB_PACKAGE = "dataset-fashion-mnist"
# Where the package installs its files; dpkg-deb -x reproduces this tree
# below the extraction folder.
_FASHION_MNIST_PACKAGE_SUBDIR = Path("usr/share/datasets/fashion-mnist")
SYSTEM_FASHION_MNIST_DIR = Path("/") / _FASHION_MNIST_PACKAGE_SUBDIR

# The validation split: the last DEFAULT_VALIDATION_EXAMPLES images of the training
# split, held out from training (see validation_count). Unset, it applies to training
# splits of at least MIN_TRAIN_FOR_DEFAULT_VALIDATION images, so that it never takes
# more than a fifth of them: MNIST and Fashion-MNIST (60,000) and CIFAR-10 (50,000).
DEFAULT_VALIDATION_EXAMPLES = 10_000
MIN_TRAIN_FOR_DEFAULT_VALIDATION = 5 * DEFAULT_VALIDATION_EXAMPLES

_SUBPROCESS_TIMEOUT_S = 900
# Examples per batched TFDS read: bounds the decoded examples held at once.
_TFDS_READ_CHUNK = 4096


class DatasetError(ValueError):
  """A dataset is missing, corrupt or cannot be fetched.

  The message says which file or dataset is affected and how to get it.
  """


def check_dataset_name(name: str) -> None:
  if name not in DATASET_NAMES:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}.")


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------


def read_idx(path: str | Path, *, expected_ndim: int | None = None) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (plain, or gzip if it ends in .gz).

  Layout: two zero bytes, the dtype code (0x08 = unsigned byte), the number of
  dimensions ``ndim``, ``ndim`` big-endian uint32 sizes, then exactly
  ``prod(sizes)`` data bytes. Anything else is rejected.

  Args:
    path: File to read.
    expected_ndim: If given, the file must have this many dimensions.

  Returns:
    A writable ``uint8`` array with the file's shape.

  Raises:
    DatasetError: If the file is missing, not valid gzip, or not a complete
      unsigned-byte IDX file.
  """
  path = Path(path)
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        raw = f.read()
    else:
      raw = path.read_bytes()
  except FileNotFoundError:
    raise DatasetError(f"IDX file {path} does not exist.") from None
  except (OSError, EOFError, zlib.error) as e:
    # Truncated gzip raises EOFError, garbage raises gzip.BadGzipFile (OSError).
    raise DatasetError(f"IDX file {path} cannot be read: {e}") from e

  def corrupt(what: str) -> DatasetError:
    return DatasetError(f"IDX file {path} is corrupt: {what}.")

  if len(raw) < 4:
    raise corrupt(f"only {len(raw)} bytes, less than the 4-byte magic number")
  zero0, zero1, dtype_code, ndim = raw[:4]
  if zero0 != 0 or zero1 != 0:
    raise corrupt(f"bad magic number 0x{raw[:4].hex()} (must start with two zero bytes)")
  if dtype_code != _IDX_UNSIGNED_BYTE:
    raise corrupt(f"dtype code 0x{dtype_code:02x}; only 0x08 (unsigned byte) is supported")
  if expected_ndim is not None and ndim != expected_ndim:
    raise corrupt(f"{ndim} dimensions, expected {expected_ndim}")
  header_len = 4 + 4 * ndim
  if len(raw) < header_len:
    raise corrupt(f"truncated header: {len(raw)} bytes, {ndim} dimensions need {header_len}")
  shape = struct.unpack(f">{ndim}I", raw[4:header_len])
  expected_len = header_len + math.prod(shape)
  if len(raw) != expected_len:
    problem = "truncated" if len(raw) < expected_len else "too long"
    raise corrupt(f"{problem}: shape {shape} needs {expected_len} bytes, file has {len(raw)}")
  # frombuffer over bytes is read-only; copy so callers may modify in place.
  return np.frombuffer(raw, np.uint8, offset=header_len).reshape(shape).copy()


def find_idx_file(idx_dir: str | Path, base_name: str) -> Path:
  """Returns ``idx_dir/base_name``, or the ``.gz`` variant if only it exists.

  Raises:
    DatasetError: If neither file exists.
  """
  idx_dir = Path(idx_dir)
  for candidate in (idx_dir / base_name, idx_dir / f"{base_name}.gz"):
    if candidate.is_file():
      return candidate
  raise DatasetError(f"IDX file {base_name} (or {base_name}.gz) not found in {idx_dir}.")


def load_idx_split(idx_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of an MNIST-layout IDX folder.

  Args:
    idx_dir: Folder holding the IDX files named in ``IDX_FILENAMES``.
    split: ``"train"`` or ``"test"``.

  Returns:
    ``(images, labels)``: ``uint8`` images of shape ``(N, H, W, 1)`` and
    ``int32`` labels of shape ``(N,)``.

  Raises:
    DatasetError: If a file is missing or corrupt, the counts differ, or a
      label is outside ``[0, NUM_CLASSES)``.
  """
  images_name, labels_name = IDX_FILENAMES[split]
  images_path = find_idx_file(idx_dir, images_name)
  labels_path = find_idx_file(idx_dir, labels_name)
  images = read_idx(images_path, expected_ndim=3)
  labels = read_idx(labels_path, expected_ndim=1)
  if len(images) != len(labels):
    raise DatasetError(
      f"IDX {split} split in {idx_dir} is inconsistent: {images_path.name} "
      f"has {len(images)} images but {labels_path.name} has {len(labels)} "
      "labels."
    )
  if labels.size and labels.max() >= NUM_CLASSES:
    raise DatasetError(
      f"IDX file {labels_path} is corrupt: label {labels.max()} is not in [0, {NUM_CLASSES})."
    )
  return images[..., np.newaxis], labels.astype(np.int32)


# ---------------------------------------------------------------------------
# TensorFlow Datasets
# ---------------------------------------------------------------------------


_DEFAULT_TFDS_DATA_DIR = "the default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"


def _describe_root_cause(error: BaseException) -> str:
  """Returns "Type: first line" of the innermost exception in a chain."""
  while error.__cause__ is not None:
    error = error.__cause__
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _how_to_get(name: str, data_dir: str | Path | None) -> str:
  """Returns the advice part of a 'dataset not available' message."""
  data_dir_flag = f" --data_dir={data_dir}" if data_dir else ""
  hints = [
    # Preparing these datasets encodes images with TensorFlow, so it cannot
    # run in a TensorFlow-free environment even with network access.
    "with network access and TensorFlow installed (e.g. on Colab), call "
    "load_dataset(..., download=True) or run "
    f"`tfds build {name} --file_format=array_record{data_dir_flag}`",
  ]
  if name in MNIST_LIKE_NAMES:
    hints.append(
      "offline, pass --config.idx_dir=DIR with the IDX files "
      f"{', '.join(n for pair in IDX_FILENAMES.values() for n in pair)} "
      "(each optionally .gz)"
    )
  if name == "fashion_mnist":
    hints.append(
      "on Debian/Ubuntu, `make data` fetches the package "
      f"{FASHION_MNIST_DEB_PACKAGE} (see fetch_fashion_mnist) for use as "
      "idx_dir"
    )
  return "To get it: " + "; ".join(hints) + "."


def _load_tfds(
  name: str, data_dir: str | Path | None, download: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads the train and test splits of a TFDS dataset into arrays."""
  # Imported here so the IDX path works without tensorflow_datasets.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Without TensorFlow only random-access formats can be read, and
  # tfds.data_source only defaults to ArrayRecord when data_dir is None, so
  # the format is always requested explicitly (it matters when download=True
  # prepares the data).
  builder_kwargs = {"file_format": "array_record"}
  splits = {}
  for split in IDX_FILENAMES:
    try:
      # tfds.testing.mock_data (tfds 4.9.10) patches DatasetBuilder.__init__,
      # download_and_prepare and as_data_source, which tfds.data_source calls,
      # so this same call serves mocked data in tests, with no TensorFlow.
      # download=False by default: never hit the network unless asked.
      source = tfds.data_source(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        builder_kwargs=builder_kwargs,
      )
      splits[split] = _source_to_arrays(source, name)
    except DatasetError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # tfds reports a missing dataset as e.g. KeyError ("`splits` is
      # empty") or NotImplementedError ("Random access data source for file
      # format TFRECORD is not supported"); say what is missing and how to get
      # it instead, quoting the innermost cause (the outer message of a failed
      # download_and_prepare is just "Failed to encode example").
      raise DatasetError(
        f"Dataset {name!r} ({split} split) is not available in ArrayRecord "
        f"format under {data_dir or _DEFAULT_TFDS_DATA_DIR} "
        f"({_describe_root_cause(e)}). " + _how_to_get(name, data_dir)
      ) from e
  return splits


def _source_to_arrays(source: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Stacks the examples of a TFDS data source into (images, labels)."""
  num_examples = len(source)
  image_shape = IMAGE_SHAPES[name]
  images = np.empty((num_examples, *image_shape), dtype=np.uint8)
  labels = np.empty((num_examples,), dtype=np.int32)
  for start in range(0, num_examples, _TFDS_READ_CHUNK):
    keys = list(range(start, min(start + _TFDS_READ_CHUNK, num_examples)))
    for i, example in zip(keys, _read_examples(source, keys)):
      image = np.asarray(example["image"])
      if image.shape != image_shape:
        raise DatasetError(
          f"Dataset {name!r} has images of shape {image.shape}, expected {image_shape}."
        )
      images[i] = image
      labels[i] = example["label"]
  return images, labels


def _read_examples(source: Any, keys: list[int]) -> list[Any]:
  """Reads the examples at ``keys``, batched when the source allows it."""
  try:
    # Batched reads are ~2.5x faster than one record at a time on real
    # ArrayRecord data (measured with tfds 4.9.10, decoding MNIST with PIL).
    return source.__getitems__(keys)
  except TypeError:
    # tfds 4.9.10's mock_data sets the mocked reader's __getitems__ to a
    # functools.partial that is not bound to the instance, so it raises
    # TypeError; one-at-a-time reads work for mocked and real data alike.
    return [source[i] for i in keys]


# ---------------------------------------------------------------------------
# Public loading API
# ---------------------------------------------------------------------------


def load_dataset(
  name: str,
  *,
  idx_dir: str | Path | None = None,
  data_dir: str | Path | None = None,
  download: bool = False,
) -> dict[str, Any]:
  """Loads a whole dataset into memory.

  Args:
    name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    idx_dir: If given, read MNIST-layout IDX files from this folder instead of
      TFDS (MNIST-like datasets only).
    data_dir: TFDS data folder; defaults to TFDS's own default.
    download: Let TFDS download and prepare a missing dataset (needs network
      access and, for these datasets, TensorFlow). Off by default so that a
      missing dataset fails fast instead of attempting a download.

  Returns:
    ``{"train": (images, labels), "test": (images, labels), "num_classes":
    10, "image_shape": (H, W, C)}`` with ``uint8`` images of shape
    ``(N, H, W, C)`` and ``int32`` labels of shape ``(N,)``.

  Raises:
    ValueError: If ``name`` is unknown.
    DatasetError: If the data is missing or corrupt; the message says how to
      get it.
  """
  check_dataset_name(name)
  if idx_dir is not None:
    if name not in MNIST_LIKE_NAMES:
      raise DatasetError(f"idx_dir only supports {', '.join(MNIST_LIKE_NAMES)}, not {name!r}.")
    splits = {split: load_idx_split(idx_dir, split) for split in IDX_FILENAMES}
    for split, (images, _) in splits.items():
      if images.shape[1:] != IMAGE_SHAPES[name]:
        raise DatasetError(
          f"IDX {split} images in {idx_dir} have shape {images.shape[1:]}, "
          f"expected {IMAGE_SHAPES[name]} for {name!r}."
        )
  else:
    splits = _load_tfds(name, data_dir, download)
  return {
    "train": splits["train"],
    "test": splits["test"],
    "num_classes": NUM_CLASSES,
    "image_shape": IMAGE_SHAPES[name],
  }


def _has_fashion_mnist_files(folder: Path) -> bool:
  return all(
    (folder / f"{base_name}.gz").is_file() for pair in IDX_FILENAMES.values() for base_name in pair
  )


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(
      command,
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=_SUBPROCESS_TIMEOUT_S,
      check=False,
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    raise DatasetError(
      f"Fetching Fashion-MNIST failed: `{' '.join(command)}` could not run: {e}"
    ) from e


def _check_ran(result: subprocess.CompletedProcess, command: list[str]) -> None:
  if result.returncode != 0:
    output = (result.stderr or result.stdout).strip()[-500:]
    raise DatasetError(
      f"Fetching Fashion-MNIST failed: `{' '.join(command)}` exited with "
      f"{result.returncode}: {output}"
    )


def fetch_fashion_mnist(cache_dir: str | Path = DEFAULT_CACHE_DIR) -> str:
  """Returns a folder holding the four Fashion-MNIST IDX ``.gz`` files.

  Uses the installed Debian package ``dataset-fashion-mnist`` if present
  (``/usr/share/datasets/fashion-mnist``). Otherwise downloads the package
  with ``apt-get download`` (no installation, no root needed for the download
  itself) and unpacks it with ``dpkg-deb -x`` into ``cache_dir``, giving
  ``cache_dir/usr/share/datasets/fashion-mnist``. If the download fails, for
  example because the package lists are empty, runs ``apt-get update`` once
  (needs root) and retries. Later calls reuse the unpacked files.

  Args:
    cache_dir: Folder to download and unpack into.

  Returns:
    The folder with the IDX files, usable as ``load_dataset(idx_dir=...)``.

  Raises:
    DatasetError: If apt/dpkg are unavailable or a step fails.
  """
  if _has_fashion_mnist_files(SYSTEM_FASHION_MNIST_DIR):
    return str(SYSTEM_FASHION_MNIST_DIR)
  cache_dir = Path(cache_dir).resolve()
  extracted_dir = cache_dir / _FASHION_MNIST_PACKAGE_SUBDIR
  if _has_fashion_mnist_files(extracted_dir):
    return str(extracted_dir)

  missing_tools = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
  if missing_tools:
    raise DatasetError(
      f"Cannot fetch Fashion-MNIST: {', '.join(missing_tools)} not found "
      "(not a Debian/Ubuntu system). Download the four IDX .gz files from "
      "https://github.com/zalandoresearch/fashion-mnist and pass their "
      "folder as idx_dir."
    )
  cache_dir.mkdir(parents=True, exist_ok=True)
  # Start from a clean download folder so that the glob below finds one .deb.
  download_dir = Path(tempfile.mkdtemp(prefix="download-", dir=cache_dir))
  try:
    download = ["apt-get", "download", FASHION_MNIST_DEB_PACKAGE]
    result = _run(download, cwd=download_dir)
    if result.returncode != 0:
      # Typically "Unable to locate package" on images with empty apt lists.
      update = ["apt-get", "update"]
      _check_ran(_run(update, cwd=download_dir), update)
      result = _run(download, cwd=download_dir)
    _check_ran(result, download)
    debs = sorted(download_dir.glob(f"{FASHION_MNIST_DEB_PACKAGE}_*.deb"))
    if len(debs) != 1:
      raise DatasetError(
        f"Fetching Fashion-MNIST failed: expected one .deb in {download_dir} "
        f"after `{' '.join(download)}`, found {[d.name for d in debs]}."
      )
    # Unpack next to the download, then move the data folder into place, so
    # an interrupted run never leaves a half-written extracted_dir behind.
    unpack_dir = download_dir / "unpacked"
    unpack = ["dpkg-deb", "-x", str(debs[0]), str(unpack_dir)]
    _check_ran(_run(unpack, cwd=download_dir), unpack)
    unpacked_data_dir = unpack_dir / _FASHION_MNIST_PACKAGE_SUBDIR
    if not _has_fashion_mnist_files(unpacked_data_dir):
      raise DatasetError(
        f"Fetching Fashion-MNIST failed: {debs[0].name} does not contain the "
        f"IDX .gz files under /{_FASHION_MNIST_PACKAGE_SUBDIR}."
      )
    if extracted_dir.exists():
      shutil.rmtree(extracted_dir)
    extracted_dir.parent.mkdir(parents=True, exist_ok=True)
    unpacked_data_dir.rename(extracted_dir)
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  return str(extracted_dir)


# Where the IDX files of MNIST-like datasets are published (no TensorFlow needed).
IDX_MIRRORS = {
  "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
  "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


def download_idx(name: str, folder: str | Path, base_url: str | None = None) -> str:
  """Downloads the four IDX ``.gz`` files of ``name`` into ``folder`` (skipping files
  already there) and returns ``folder``, usable as ``config.idx_dir``.

  The way to MNIST and Fashion-MNIST where TensorFlow is not installed (Colab's TPU
  runtimes): the files are read by :func:`load_idx_split`, which checks their headers.

  Args:
    name: ``"mnist"`` or ``"fashion_mnist"``.
    folder: where the files go.
    base_url: the URL the file names are appended to; default :data:`IDX_MIRRORS`.

  Raises:
    DatasetError: naming the URL, if a download fails or a file is not an IDX file.
  """
  import urllib.request  # pylint: disable=g-import-not-at-top

  if base_url is None:
    if name not in IDX_MIRRORS:
      raise DatasetError(f"no IDX download for dataset={name!r}; it has {tuple(IDX_MIRRORS)}.")
    base_url = IDX_MIRRORS[name]
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  for base_name in (n for pair in IDX_FILENAMES.values() for n in pair):
    target = folder / f"{base_name}.gz"
    if target.is_file():
      continue
    url = f"{base_url.rstrip('/')}/{base_name}.gz"
    partial = target.with_suffix(".gz.part")
    try:
      with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    except OSError as error:
      partial.unlink(missing_ok=True)
      raise DatasetError(f"downloading {url} failed: {_describe_root_cause(error)}") from error
    partial.rename(target)
  for split in IDX_FILENAMES:
    try:
      load_idx_split(folder, split)
    except DatasetError as error:
      raise DatasetError(f"the files downloaded from {base_url} do not read: {error}") from error
  return str(folder)
