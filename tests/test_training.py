"""The experiment runner trains for real and hands its config to the library as meant:
a pruned model learns learnable data, and drop_anneal="cosine" arrives as the cosine schedules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import droppruning_jax as dp
from experiments import data as data_lib
from experiments import methods, train
from experiments.configs import default
from tests import helpers

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def prototype_idx_dir(tmp_path_factory) -> Path:
  """MNIST-layout IDX files where each class is a fixed random binary pattern (+150) under
  uniform pixel noise (0-99): linearly separable with a wide margin, so a few dozen SGD
  steps of an MLP should classify it almost perfectly."""
  folder = tmp_path_factory.mktemp("prototype-idx")
  prototypes = np.random.default_rng(1).integers(0, 2, size=(NUM_CLASSES, 28, 28)) * 150
  rng = np.random.default_rng(0)
  for split, count in (("train", 256), ("test", 100)):
    labels = rng.integers(0, NUM_CLASSES, size=count)
    images = rng.integers(0, 100, size=(count, 28, 28)) + prototypes[labels]
    images_name, labels_name = data_lib.IDX_FILENAMES[split]
    helpers.write_idx(folder / f"{images_name}.gz", images)
    helpers.write_idx(folder / f"{labels_name}.gz", labels)
  return folder


def test_a_pruned_model_learns_the_learnable_data(prototype_idx_dir, tmp_path):
  config = default.get_config()
  config.update(
    dict(
      progress=False,
      dataset="fashion_mnist",
      model="lenet300",
      idx_dir=str(prototype_idx_dir),
      num_epochs=1,
      batch_size=16,
      eval_batch_size=50,
      method="drop",
      target_sparsity=0.5,
      prune_begin_epoch=0.0,
      prune_end_epoch=0.5,
      update_every=2,
    )
  )
  summary = train.train_and_evaluate(config, tmp_path / "run")
  # Chance is 1 - 1/10 = 0.9. Only learning brings the error near 0; the margin of the
  # data leaves no excuse for more than a few of the 100 test images.
  assert summary["test_error"] <= 0.05, summary["test_error"]
  assert summary["sparsity"] == pytest.approx(0.5, abs=1e-6)  # 784*300, 300*100, 100*10: even


def _cosine(step, start, end, begin, end_step):
  """Half a cosine from ``start`` at ``begin`` to ``end`` at ``end_step``, held outside."""
  frac = min(max((step - begin) / (end_step - begin), 0.0), 1.0)
  return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


@pytest.mark.parametrize("anneal", ["cosine", "none"])
def test_drop_anneal_reaches_the_library_as_the_intended_schedules(anneal, monkeypatch):
  calls = []
  real = dp.drop_pruning

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(dp, "drop_pruning", spy)  # the runner calls dp.drop_pruning
  config = default.get_config()
  config.update(
    dict(
      method="drop",
      drop_anneal=anneal,
      drop_away_prob=0.5,
      drop_back_prob=0.1,
      num_epochs=20,
      prune_begin_epoch=1.0,
      prune_end_epoch=12.0,
      update_every=10,
      target_sparsity=0.9,
    )
  )
  steps_per_epoch = 10
  methods.make_optimizer(config, steps_per_epoch, params={})
  (kwargs,) = calls
  # Pruning runs from epoch 1 to epoch 12: steps 10 to 120.
  assert (kwargs["begin_step"], kwargs["end_step"]) == (10, 120)
  away, back = kwargs["drop_away_prob"], kwargs["drop_back_prob"]
  value = lambda schedule, step: float(schedule(step) if callable(schedule) else schedule)
  for step in (0, 10, 37, 65, 100, 120, 200):
    if anneal == "cosine":  # p from 0.5 up to 1 (deterministic at the end), q from 0.1 down to 0
      want_away, want_back = _cosine(step, 0.5, 1.0, 10, 120), _cosine(step, 0.1, 0.0, 10, 120)
      assert value(away, step) == pytest.approx(float(dp.cosine_anneal(0.5, 1.0, 10, 120)(step)))
      assert value(back, step) == pytest.approx(float(dp.cosine_anneal(0.1, 0.0, 10, 120)(step)))
    else:
      want_away, want_back = 0.5, 0.1
    assert value(away, step) == pytest.approx(want_away, abs=1e-6), step
    assert value(back, step) == pytest.approx(want_back, abs=1e-6), step
