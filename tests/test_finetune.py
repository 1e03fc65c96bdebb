"""Learning-rate rewinding, knowledge distillation and starting from a finished run in the
runner.

The rewound schedule is the one asked for (library function and the learning rate the
runner logs); the teacher's logits reach the loss (a run with a teacher trains other
weights than one without, and the loss is the documented mixture); both cost nothing
when off (the step's program is the one without them); a run started from a finished
run's weights (``init_workdir``) trains on from them and resumes bitwise; bad settings
are refused.
"""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import droppruning_jax as dp
from experiments import config_checks, distill, errors, methods, train
from tests import helpers


def test_rewound_schedule_replays_the_base_from_the_rewind_step():
  base = optax.cosine_decay_schedule(1.0, 100)
  for rewind in (0, 30, 70):
    lr = dp.rewind_learning_rate(base, last_update_step=69, rewind_step=rewind, total_steps=100)
    for step in range(70):  # unchanged up to the last mask update
      assert float(lr(step)) == pytest.approx(float(base(step)), abs=1e-7)
    assert float(lr(70)) == pytest.approx(float(base(rewind)), abs=1e-7)  # rewound at once
    for step in range(70, 100):  # the replay of [rewind, 100) stretched over [70, 100)
      expected = float(base(rewind + (step - 70) * (100 - rewind) / 30))
      assert float(lr(step)) == pytest.approx(expected, abs=1e-6)
  # a rewind to the step after the last update is the base schedule itself
  same = dp.rewind_learning_rate(base, last_update_step=69, rewind_step=70, total_steps=100)
  np.testing.assert_allclose(
    [same(t) for t in range(100)], [base(t) for t in range(100)], atol=1e-7
  )


def test_warmup_ramps_the_rewound_schedule_from_the_first_step_only(idx_dir):
  config = _config(idx_dir, method="gradual", lr_rewind_epoch=0.0, warmup_epochs=1.5)
  steps_per_epoch, total = 10, 40  # warmup 15 steps, last mask update at step 20
  lr = methods.make_learning_rate(config, steps_per_epoch)
  plain = methods.make_learning_rate(_config(idx_dir, method="gradual", lr_rewind_epoch=0.0), 10)
  for step in range(total):
    ramp = min(1.0, (step + 1) / 15)  # 1/15 at step 0, 1 from step 14 on
    assert float(lr(step)) == pytest.approx(float(plain(step)) * ramp, rel=1e-6)
  assert float(lr(0)) == pytest.approx(config.learning_rate / 15, rel=1e-6)
  # the rewind restarts the decay at the full rate: the ramp is not replayed
  assert float(lr(21)) == pytest.approx(config.learning_rate, rel=1e-6)
  # warmup_epochs=0 (the default) returns the schedule itself, no ramp
  no_warmup = _config(idx_dir, method="gradual", lr_rewind_epoch=0.0, warmup_epochs=0.0)
  assert float(methods.make_learning_rate(no_warmup, 10)(0)) == pytest.approx(config.learning_rate)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(last_update_step=69, rewind_step=71, total_steps=100), "rewind_step=71"),
    (dict(last_update_step=69, rewind_step=-1, total_steps=100), "rewind_step=-1"),
    (dict(last_update_step=99, rewind_step=0, total_steps=100), "no steps after"),
  ],
)
def test_rewound_schedule_refuses_impossible_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    dp.rewind_learning_rate(optax.constant_schedule(1.0), **kwargs)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  return helpers.write_learnable_idx_dir(tmp_path_factory.mktemp("idx"), 320, 100)


def _config(idx_dir, **overrides):
  base = dict(num_epochs=4, prune_begin_epoch=0.0, prune_end_epoch=2.0, update_every=2)
  base.update(validation_examples=64)
  base.update(overrides)
  return helpers.idx_config(idx_dir, **base)


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_runner_logs_the_rewound_learning_rate(idx_dir, tmp_path):
  config = _config(idx_dir, method="gradual", lr_rewind_epoch=0.0)
  train.train_and_evaluate(config, tmp_path / "run")
  steps_per_epoch = (320 - 64) // 16
  total, end = 4 * steps_per_epoch, methods.pruning_window(config, steps_per_epoch)[1]
  base = optax.cosine_decay_schedule(config.learning_rate, total)
  for line in _metrics(tmp_path / "run"):
    step = line["step"] - 1  # the learning rate of the epoch's last step
    expected = base(step) if step <= end else base((step - end - 1) * total / (total - end - 1))
    assert line["learning_rate"] == pytest.approx(float(expected), rel=1e-5)
  # the phase after the window restarted from the initial learning rate
  assert (
    _metrics(tmp_path / "run")[2]["learning_rate"] > _metrics(tmp_path / "run")[1]["learning_rate"]
  )


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(method="dense", lr_rewind_epoch=0.0), "lr_rewind_epoch=0.0 rewinds"),
    (dict(lr_rewind_epoch=3.0), "lr_rewind_epoch=3.0"),
    (dict(prune_end_epoch=4.0, lr_rewind_epoch=0.0), "prune_end_epoch=4.0 < num_epochs"),
    (dict(warmup_epochs=4.0), "warmup_epochs=4.0 must be a number in \\[0, num_epochs=4\\)"),
    (dict(warmup_epochs=-1.0), "warmup_epochs=-1.0"),
    (dict(teacher_workdir="x", distill_weight=1.5), "distill_weight=1.5"),
    (dict(teacher_workdir="x", distill_temperature=0.0), "distill_temperature=0.0"),
    (dict(teacher_workdir=" "), "teacher_workdir=' ' names no run folder"),
    (dict(init_workdir=""), "init_workdir='' names no run folder"),
  ],
)
def test_bad_rewind_or_distillation_settings_are_refused(idx_dir, overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    config_checks.validate_config(_config(idx_dir, **overrides))


def test_the_distillation_recipe_without_a_teacher_is_refused_before_anything_is_written(
  tmp_path,
):
  """configs/lenet5_distill.py cannot know the teacher's folder: left empty, the run stops
  at the config check, naming the field, with the run folder untouched."""
  from experiments.configs import lenet5_distill

  workdir = tmp_path / "run"
  with pytest.raises(errors.ConfigError, match="teacher_workdir='' names no run folder"):
    train.train_and_evaluate(lenet5_distill.get_config(), workdir)
  assert not workdir.exists()


def test_distillation_loss_is_the_documented_mixture():
  logits = jax.random.normal(jax.random.PRNGKey(0), (6, 10))
  teacher = jax.random.normal(jax.random.PRNGKey(1), (6, 10)) * 3
  labels = jnp.arange(6)
  w, t = 0.3, 4.0
  hard = -jax.nn.log_softmax(logits)[jnp.arange(6), labels]
  soft = -jnp.sum(jax.nn.softmax(teacher / t) * jax.nn.log_softmax(logits / t), -1) * t * t
  expected = jnp.mean((1 - w) * hard + w * soft)
  got = distill.distillation_loss(logits, labels, teacher, w, t)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # weight 0 is the plain label loss
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  np.testing.assert_allclose(distill.distillation_loss(logits, labels, teacher, 0.0, t), plain)


@pytest.fixture(scope="module")
def teacher_dir(idx_dir, tmp_path_factory):
  folder = tmp_path_factory.mktemp("teacher") / "dense"
  train.train_and_evaluate(_config(idx_dir, method="dense"), folder)
  return folder


def test_teacher_logits_reach_the_loss(idx_dir, teacher_dir, tmp_path, monkeypatch):
  seen = []
  real = distill.distillation_loss

  def spy(logits, labels, teacher_logits, weight, temperature):
    seen.append((teacher_logits.shape, weight, temperature))
    return real(logits, labels, teacher_logits, weight, temperature)

  monkeypatch.setattr(distill, "distillation_loss", spy)
  config = _config(idx_dir, method="gradual", num_epochs=2, prune_end_epoch=1.0)
  plain = train.train_and_evaluate(config, tmp_path / "plain")
  assert not seen  # off: the loss never sees a teacher
  config.teacher_workdir = str(teacher_dir)
  config.distill_weight, config.distill_temperature = 0.7, 3.0
  taught = train.train_and_evaluate(config, tmp_path / "taught")
  assert seen and all(shape[-1] == 10 and (w, t) == (0.7, 3.0) for shape, w, t in seen)
  # the teacher changed the training (same seed, same batches otherwise)
  first = [_metrics(tmp_path / name)[0]["train_loss"] for name in ("plain", "taught")]
  assert first[0] != first[1]
  assert plain["sparsity"] == taught["sparsity"]  # pruning itself is unaffected


def test_the_teachers_forward_pass_is_its_model(idx_dir, teacher_dir):
  config = _config(idx_dir, method="gradual", teacher_workdir=str(teacher_dir))
  forward = distill.load_teacher(config, methods.make_model, 10)
  state = helpers.final_state(teacher_dir)
  model = methods.make_model(config, 10)
  images = np.random.default_rng(0).random((2, 3, 28, 28, 1), np.float32)
  expected = model.apply({"params": state["params"]}, images.reshape(6, 28, 28, 1), train=False)
  np.testing.assert_allclose(forward(images), np.reshape(expected, (2, 3, 10)), rtol=1e-5)


def test_a_teacher_on_another_validation_split_is_refused(idx_dir, teacher_dir, tmp_path):
  config = _config(idx_dir, method="gradual", validation_examples=32)
  config.teacher_workdir = str(teacher_dir)
  with pytest.raises(errors.ConfigError, match="validation_examples=64"):
    train.train_and_evaluate(config, tmp_path / "student")
  assert not (tmp_path / "student").exists()  # refused before anything was written
  config.teacher_workdir = str(tmp_path / "nowhere")
  with pytest.raises(errors.ConfigError, match="holds no finished run"):
    train.train_and_evaluate(config, tmp_path / "student")


def _by_path(tree) -> dict:
  return {
    jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_a_run_starts_from_the_finished_runs_weights_and_resumes_bitwise(
  idx_dir, teacher_dir, tmp_path
):
  """init_workdir: the initial weights are the finished run's final ones (not the seed's),
  the pruned run trains on from that trained model (its first epoch's loss is below a fresh
  start's) to the exact target, and an interrupted run resumes to the same weights."""
  config = _config(idx_dir, method="gradual", init_workdir=str(teacher_dir))
  fresh_config = _config(idx_dir, method="gradual")
  model = methods.make_model(config, 10)
  params, batch_stats = methods.init_variables(config, model, (28, 28, 1))
  trained = _by_path(helpers.final_state(teacher_dir)["params"])
  assert batch_stats == {} and _by_path(params).keys() == trained.keys()
  for name, value in _by_path(params).items():
    np.testing.assert_array_equal(value, trained[name])
  fresh, _ = methods.init_variables(fresh_config, model, (28, 28, 1))
  assert not np.array_equal(
    _by_path(fresh)["['dense1']['kernel']"], trained["['dense1']['kernel']"]
  )

  warm = train.train_and_evaluate(config, tmp_path / "warm")
  train.train_and_evaluate(fresh_config, tmp_path / "fresh")
  first = [_metrics(tmp_path / name)[0]["train_loss"] for name in ("warm", "fresh")]
  assert first[0] < first[1]
  helpers.assert_exact_final_sparsity(warm, tmp_path / "warm", config.target_sparsity)

  config.stop_after_epochs = 1
  assert train.train_and_evaluate(config, tmp_path / "resumed")["stopped"]
  config.stop_after_epochs = None
  train.train_and_evaluate(config, tmp_path / "resumed")
  chex.assert_trees_all_equal(
    helpers.final_state(tmp_path / "warm")["params"],
    helpers.final_state(tmp_path / "resumed")["params"],
  )


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(validation_examples=32), r"init_workdir=.* was trained with validation_examples=64"),
    # Its weights were trained on [0, 1] pixels, not on standardised ones.
    (dict(standardize=True), r"init_workdir=.* was trained with standardize=False"),
    (
      dict(model="lenet5"),
      r"init_workdir=.* holds another model: its weight \['params'\]\['conv1'\]",
    ),
  ],
)
def test_a_start_from_a_run_that_does_not_fit_is_refused(
  idx_dir, teacher_dir, tmp_path, overrides, match
):
  config = _config(idx_dir, method="gradual", init_workdir=str(teacher_dir), **overrides)
  with pytest.raises(errors.ConfigError, match=match):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()  # refused before anything was written
  config.init_workdir = str(tmp_path / "nowhere")
  with pytest.raises(errors.ConfigError, match="init_workdir=.* holds no finished run"):
    train.train_and_evaluate(config, tmp_path / "run")
