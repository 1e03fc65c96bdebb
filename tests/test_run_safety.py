"""What the experiment runner does when a run goes wrong (docs/experiments.md,
"What happens when ...").

A rerun with another config, a diverging loss, a corrupt checkpoint, SIGTERM, SIGKILL
(also in the middle of a checkpoint write), a torn metrics line, an unwritable folder
and user errors on the command line. Every run is tiny: 256 synthetic examples,
16 steps an epoch, on one device.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import numpy as np
import pytest

from experiments import checkpoints, errors, input_pipeline, report, run_folder, train
from experiments import data as data_lib
from experiments import steps as steps_lib
from experiments.configs import default
from tests import helpers
from tests.helpers import REPO_ROOT

# Compares runs in subprocesses with runs in this process: XLA's default passes in both
# (conftest.py).
DEFAULT_COMPILER_PASSES = True

STEPS_PER_EPOCH = 256 // 16


# Two epochs of 16 steps, pruning in both, a checkpoint every 5 steps as well.
FIELDS = dict(
  dataset="fashion_mnist",
  model="lenet300",
  progress=False,
  num_epochs=2,
  batch_size=16,
  eval_batch_size=50,
  prune_begin_epoch=0.0,
  prune_end_epoch=1.5,
  update_every=2,
  target_sparsity=0.9,
  drop_back_prob=0.2,
  num_devices=1,
  checkpoint_every_steps=5,
)


def _config(idx_dir: Path, **overrides):
  config = default.get_config()
  for name, value in {**FIELDS, "idx_dir": str(idx_dir), **overrides}.items():
    config[name] = value
  return config


@pytest.fixture(scope="module")
def reference(idx_dir, tmp_path_factory):
  """An uninterrupted run: ``(summary, workdir)``."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  return train.train_and_evaluate(_config(idx_dir), workdir), workdir


def _strict_json(text: str):
  def reject(constant):
    raise AssertionError(f"non-standard JSON constant {constant}")

  return json.loads(text, parse_constant=reject)


def _without_times(lines: list[dict]) -> list[dict]:
  return [{k: v for k, v in line.items() if not k.endswith("_time_s")} for line in lines]


def _assert_same_run(workdir: Path, reference_dir: Path) -> None:
  """Final state bitwise equal, and the same metrics lines (times aside)."""
  a, b = checkpoints.restore_checkpoint(reference_dir), checkpoints.restore_checkpoint(workdir)
  assert int(a["step"]) == int(b["step"]) == 2 * STEPS_PER_EPOCH
  chex.assert_trees_all_equal(a["state"], b["state"])  # params, batch stats, masks, stats
  assert _without_times(report.read_metrics(workdir)) == _without_times(
    report.read_metrics(reference_dir)
  )
  for name in (run_folder.SUMMARY_FILE, run_folder.RUN_FILE, run_folder.CONFIG_FILE):
    _strict_json((workdir / name).read_text())
  for line in (workdir / run_folder.METRICS_FILE).read_text().splitlines():
    _strict_json(line)


def _folder_snapshot(folder: Path) -> dict:
  return {
    str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
    for p in sorted(folder.rglob("*"))
  }


def _newest_checkpoint(workdir: Path) -> Path:
  return max(
    (p for p in (workdir / checkpoints.CHECKPOINT_DIR).iterdir() if p.name.isdigit()),
    key=lambda p: int(p.name),
  )


def _truncate_largest_file(folder: Path) -> Path:
  largest = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
  return largest


# --- 1. a rerun with another config ------------------------------------------------


def test_rerun_with_another_config_is_refused_before_writing(idx_dir, reference, tmp_path):
  _, workdir = reference
  before = _folder_snapshot(workdir)
  with pytest.raises(errors.ConfigError) as error:
    train.train_and_evaluate(_config(idx_dir, method="random", target_sparsity=0.5), workdir)
  message = str(error.value)
  assert "\n" not in message
  assert "method 'drop' -> 'random'" in message and "target_sparsity 0.9 -> 0.5" in message
  assert "--fresh" in message
  # Another device count changes the last bits of the results: refused too.
  with pytest.raises(errors.ConfigError, match="on 1 device.* would use 2"):
    train.train_and_evaluate(_config(idx_dir, num_devices=2), workdir)
  assert _folder_snapshot(workdir) == before


def test_result_neutral_changes_are_allowed_and_listed(idx_dir, reference, tmp_path):
  summary, workdir = reference
  copy = _copy_folder(workdir, tmp_path / "run")
  # The run is finished: the rerun only rebuilds the summary.
  again = train.train_and_evaluate(
    _config(idx_dir, checkpoint_every_steps=7, stop_after_epochs=5), copy
  )
  assert again["changed_on_resume"] == ["checkpoint_every_steps", "stop_after_epochs"]
  assert again["starts"][-1] == {
    "step": 2 * STEPS_PER_EPOCH,
    "changed": {"checkpoint_every_steps": [5, 7], "stop_after_epochs": [None, 5]},
  }
  assert again["test_error"] == summary["test_error"]
  assert summary["changed_on_resume"] == []


def _copy_folder(source: Path, target: Path) -> Path:
  for path in sorted(source.rglob("*")):
    destination = target / path.relative_to(source)
    if path.is_dir():
      destination.mkdir(parents=True, exist_ok=True)
    else:
      destination.parent.mkdir(parents=True, exist_ok=True)
      destination.write_bytes(path.read_bytes())
  return target


def test_fresh_moves_the_old_folder_aside(idx_dir, reference, tmp_path):
  workdir = _copy_folder(reference[1], tmp_path / "run")
  before = _folder_snapshot(workdir)
  # --fresh skips the config check, but still moves nothing before the rest is checked.
  with pytest.raises(data_lib.DatasetError):
    train.train_and_evaluate(_config(tmp_path / "no-data", method="random"), workdir, fresh=True)
  assert _folder_snapshot(workdir) == before
  summary = train.train_and_evaluate(_config(idx_dir), workdir, fresh=True)
  assert _folder_snapshot(tmp_path / "run.old") == before
  assert [start["step"] for start in summary["starts"]] == [0]
  _assert_same_run(workdir, reference[1])


# --- 2. divergence ------------------------------------------------------------------


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(
  idx_dir, tmp_path, monkeypatch
):
  original = input_pipeline.train_batches

  def poisoned(config, data, epoch, num_local_devices):  # NaN images from step 21 on
    for index, (images, labels) in enumerate(original(config, data, epoch, num_local_devices)):
      if epoch == 2 and index >= 4:
        images = np.full_like(images, np.nan)
      yield images, labels

  monkeypatch.setattr(input_pipeline, "train_batches", poisoned)
  workdir = tmp_path / "run"
  with pytest.raises(errors.DivergedError) as error:
    train.train_and_evaluate(_config(idx_dir), workdir)
  assert error.value.step == STEPS_PER_EPOCH + 5
  assert "train loss is nan at step 21 (epoch 2)" in str(error.value)
  assert "last good checkpoint (step 20)" in str(error.value)
  assert int(checkpoints.restore_checkpoint(workdir)["step"]) == 20
  assert [line["epoch"] for line in report.read_metrics(workdir)] == [1]
  assert not (workdir / run_folder.SUMMARY_FILE).exists()


def test_summaries_are_strict_json():
  text = run_folder.dumps(
    {"loss": float("nan"), "errors": [float("inf"), 1.5], "x": np.float32("-inf")}
  )
  assert _strict_json(text) == {"loss": None, "errors": [None, 1.5], "x": None}


# --- 5. and 6. a corrupt checkpoint, SIGTERM, an unwritable folder -------------------


def test_unwritable_checkpoint_folder_fails_before_training(idx_dir, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / checkpoints.CHECKPOINT_DIR).write_text("a file where the folder should be")
  with pytest.raises(errors.RunFolderError, match="cannot write to .*checkpoints"):
    train.train_and_evaluate(_config(idx_dir), workdir)
  assert sorted(p.name for p in workdir.iterdir()) == [checkpoints.CHECKPOINT_DIR]


# --- 7. user errors -------------------------------------------------------------------


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"seed": -5}, "seed=-5 must be an integer in [0, 2**31)"),
    ({"update_every": 0}, "update_every=0 must be a positive integer"),
    ({"checkpoint_every_steps": 0}, "checkpoint_every_steps=0 must be unset or a positive"),
    ({"drop_away_prob": 1.5}, "drop_away_prob=1.5 is outside [0, 1]"),
    ({"lr_step_fractions": (0.5, "x"), "lr_schedule": "step"}, "lr_step_fractions="),
  ],
)
def test_config_errors_name_the_value_before_anything_is_written(overrides, message, tmp_path):
  with pytest.raises(errors.ConfigError) as error:
    train.train_and_evaluate(_config(tmp_path / "no-data", **overrides), tmp_path / "run")
  assert message in str(error.value)
  assert not (tmp_path / "run").exists()


def _cli(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
  """Runs ``experiments.main`` with each argument list, side by side."""
  env = helpers.subprocess_env()
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "experiments.main",
        "--config",
        "experiments/configs/lenet300.py",
        *args,
      ],
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for args in commands
  ]
  results = []
  for process, args in zip(processes, commands):
    stdout, stderr = process.communicate(timeout=120)
    results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
  return results


def _error_line(result: subprocess.CompletedProcess) -> str:
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, result.stderr
  return lines[0]


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path):
  workdir = tmp_path / "run"
  typo, seed, bad_value = _cli(
    [
      [f"--workdir={workdir}", "--config.targt_sparsity=0.9"],
      [f"--workdir={workdir}", "--config.seed=-5"],
      [f"--workdir={workdir}", "--config.num_epochs=two"],
    ]
  )
  assert typo.returncode == 2
  assert _error_line(typo) == (
    "error: unknown config field 'targt_sparsity'; did you mean 'target_sparsity'?"
  )
  assert seed.returncode == 2
  assert "seed=-5 must be an integer" in _error_line(seed)
  assert bad_value.returncode == 2 and "num_epochs=two" in _error_line(bad_value)
  assert not workdir.exists()


# --- fault injection ------------------------------------------------------------------

# Runs experiments.main with a fault: "nan N" (NaN images after the N-th batch, the
# warm-up's included),
# "kill STEPS" (SIGKILL when the loop asks for its
# STEPS-th batch in this process), "term STEPS" / "int STEPS" (SIGTERM / SIGINT, as
# Ctrl-C sends, there), "int_compile 0" (SIGINT as the model's first compile starts), or
# "kill_in_save N"
# (SIGKILL inside the N-th checkpoint write of this process, after its files are
# written and before orbax renames its temporary folder into place).
_WORKER = textwrap.dedent(
  """
    import asyncio, json, os, signal, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)  # as the test process
    from absl import app
    from experiments import input_pipeline, main, methods
    fault, at = sys.argv[1], int(sys.argv[2])
    signum = {"term": signal.SIGTERM, "int": signal.SIGINT}.get(fault, signal.SIGKILL)
    if fault == "nan":  # NaN images from the AT-th batch of this process on
      original = input_pipeline.train_batches
      count = [0]
      def batches(*args):
        for images, labels in original(*args):
          count[0] += 1
          yield (images * float("nan") if count[0] > at else images), labels
      input_pipeline.train_batches = batches
    elif fault == "int_compile":
      original_init = methods.init_variables
      def init_variables(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return original_init(*args)
      methods.init_variables = init_variables
    elif fault in ("kill", "term", "int"):
      original = input_pipeline.train_batches
      count = [0]
      def batches(*args):
        for batch in original(*args):
          yield batch
          count[0] += 1
          if count[0] == at:
            os.kill(os.getpid(), signum)
      input_pipeline.train_batches = batches
    else:
      from orbax.checkpoint._src.path import atomicity
      finalize = atomicity.AtomicRenameTemporaryPath.finalize
      saves = [0]
      async def killing_finalize(self):
        saves[0] += 1
        if saves[0] == at:
          os.kill(os.getpid(), signal.SIGKILL)
        await finalize(self)
      atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
    sys.argv = ["main"] + sys.argv[3:]
    app.run(main.main, flags_parser=main._parse_flags)
    """
)


def _run_worker(fault: str, at: int, workdir: Path, idx_dir: Path) -> subprocess.CompletedProcess:
  args = ["--config", "experiments/configs/default.py", f"--workdir={workdir}"] + [
    f"--config.{name}={value}" for name, value in {**FIELDS, "idx_dir": idx_dir}.items()
  ]
  env = helpers.subprocess_env()
  return subprocess.run(
    [sys.executable, "-c", _WORKER, fault, str(at), *args],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
  )


def test_cli_divergence_exits_1_with_one_line(idx_dir, reference, tmp_path):
  result = _run_worker("nan", 21, tmp_path / "run", idx_dir)
  assert result.returncode == 1, result.stderr[-3000:]
  assert _error_line(result) == (
    "error: training diverged: the train loss is nan at step 21 (epoch 2); the last good "
    f"checkpoint (step 20) is kept in {tmp_path / 'run' / 'checkpoints'}; lower the "
    "learning rate and start over with --fresh."
  )


def test_fault_injection_resume_is_bitwise(idx_dir, reference, tmp_path, caplog):
  """SIGKILL at random steps and inside a checkpoint write, SIGTERM, and a corrupted
  newest checkpoint: the run still ends bitwise identical to an uninterrupted one."""
  seed = int(os.environ.get("FAULT_SEED", "0"))
  rng = np.random.default_rng(seed)
  workdir = tmp_path / "run"

  def run(fault: str, at: int) -> subprocess.CompletedProcess:
    return _run_worker(fault, at, workdir, idx_dir)

  faults = [
    ("kill", int(rng.integers(3, 16))),  # epoch 1, maybe during an async save
    ("kill_in_save", 1),  # the next checkpoint write
    ("term", int(rng.integers(12, 28))),
  ]  # SIGTERM: saves, exits 143; then the
  # newest checkpoint is corrupted
  steps = []
  for fault, at in faults:
    result = run(fault, at)
    expected = 128 + 15 if fault == "term" else -signal.SIGKILL
    assert result.returncode == expected, (seed, fault, at, result.stderr[-3000:])
    if fault == "term":
      assert "stopped by SIGTERM: saved a checkpoint at step" in result.stderr
      assert "Traceback" not in result.stderr
    steps.append(
      int(checkpoints.restore_checkpoint(workdir)["step"])
      if any(p.name.isdigit() for p in (workdir / checkpoints.CHECKPOINT_DIR).iterdir())
      else 0
    )
  assert steps == sorted(steps) and steps[-1] > 0, (seed, faults, steps)

  newest = _newest_checkpoint(workdir)
  _truncate_largest_file(newest)
  # And a torn last line in metrics.jsonl, as a kill in the middle of an append leaves.
  with open(workdir / run_folder.METRICS_FILE, "a") as f:
    f.write('{"epoch": 2, "step": 32, "learning_ra')
  handler = signal.getsignal(signal.SIGTERM)
  with caplog.at_level("WARNING"):
    summary = train.train_and_evaluate(_config(idx_dir), workdir)
  assert signal.getsignal(signal.SIGTERM) == handler  # the run's own handler is gone
  assert f"checkpoint(s) [{newest.name}]" in caplog.text and "do not restore" in caplog.text
  assert "dropped its torn last line" in caplog.text
  assert (workdir / checkpoints.BROKEN_CHECKPOINT_DIR / newest.name).is_dir()
  _assert_same_run(workdir, reference[1])
  assert summary["test_error"] == reference[0]["test_error"]
  assert len(summary["starts"]) == len(faults) + 1


def test_ctrl_c_saves_and_resumes_like_sigterm(idx_dir, reference, tmp_path):
  """Ctrl-C (SIGINT) mid-epoch: one line, exit 130, the current step saved; the rerun
  resumes and ends bitwise as the uninterrupted run."""
  workdir = tmp_path / "run"
  result = _run_worker("int", 7, workdir, idx_dir)
  assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
  assert "stopped by Ctrl-C (SIGINT): saved a checkpoint at step 7 (epoch 1" in result.stderr
  assert int(checkpoints.restore_checkpoint(workdir)["step"]) == 7
  train.train_and_evaluate(_config(idx_dir), workdir)
  _assert_same_run(workdir, reference[1])


def test_ctrl_c_during_the_first_compile_stops_cleanly(idx_dir, tmp_path):
  result = _run_worker("int_compile", 0, tmp_path / "run", idx_dir)
  assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]  # not 139
  assert "stopped by Ctrl-C (SIGINT) before the first step" in result.stderr
  assert "Traceback" not in result.stderr and "Fatal Python error" not in result.stderr


def test_a_second_run_on_a_workdir_in_use_is_refused(idx_dir, reference, tmp_path):
  workdir = tmp_path / "run"
  holder = run_folder.WorkdirLock(workdir)
  holder.acquire()  # another run holds the folder (flock: per open file, so also here)
  try:
    for fresh in (False, True):
      with pytest.raises(errors.RunFolderError, match=f"in use by process {os.getpid()} on "):
        train.train_and_evaluate(_config(idx_dir), workdir, fresh=fresh)
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints", "run.lock"]
    assert not any((workdir / "checkpoints").iterdir())  # nothing written
    assert not workdir.with_name("run.old").exists()  # --fresh moved nothing
  finally:
    holder.release()
  # The CLI: exit 2 with one line naming the holder.
  holder_process = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys; from pathlib import Path; from experiments import run_folder; "
      "lock = run_folder.WorkdirLock(Path(sys.argv[1])); lock.acquire(); "
      "print('held', flush=True); "
      "sys.stdin.read()",
      str(workdir),
    ],
    cwd=REPO_ROOT,
    env=helpers.subprocess_env(),
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder_process.stdout.readline().strip() == "held"
    result = _run_worker("kill", 10**6, workdir, idx_dir)  # the fault never fires
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"is in use by process {holder_process.pid} on " in _error_line(result)
  finally:
    holder_process.kill()  # a killed holder leaves no stale lock:
    holder_process.wait()
  train.train_and_evaluate(_config(idx_dir), workdir)
  _assert_same_run(workdir, reference[1])


def test_pruned_weights_stay_exactly_zero_after_a_divergence():
  """p + (-p) is NaN for a NaN weight: the runner's step selects, so a pruned NaN weight
  is 0 after the step."""
  import jax
  import jax.numpy as jnp
  import optax

  import droppruning_jax as dp
  from experiments import models

  model = models.get_model("lenet300", num_classes=10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
  tx = dp.gradual_magnitude_pruning(optax.sgd(0.1), target_sparsity=0.5, end_step=100)
  opt_state = tx.init(params)
  state_masks = dp.PruningState(*opt_state).masks
  name = next(iter(params))
  mask = state_masks[name]["kernel"].at[0, 0].set(False)
  opt_state = dp.PruningState(*opt_state)._replace(
    masks={**state_masks, name: {**state_masks[name], "kernel": mask}}
  )
  params = {
    **params,
    name: {**params[name], "kernel": params[name]["kernel"].at[0, 0].set(jnp.nan)},
  }
  step = steps_lib.train_step_fn(model, tx, True, True, lambda tree: tree)
  state, _ = jax.jit(step)(
    steps_lib.TrainState(params, {}, opt_state), jnp.zeros((4, 28, 28, 1)), jnp.zeros(4, jnp.int32)
  )
  assert float(state.params[name]["kernel"][0, 0]) == 0.0


def test_cli_config_that_is_not_a_file_is_one_line_exit_2(tmp_path):
  for config in (str(tmp_path / "missing.py"), "experiments/configs"):
    result = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config", config, f"--workdir={tmp_path}/w"],
      cwd=REPO_ROOT,
      env=helpers.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert result.returncode == 2
    assert _error_line(result) == (
      f"error: --config={config!r} is not a file (e.g. experiments/configs/lenet300.py)."
    )


def test_cli_help_lists_the_config_fields():
  result = subprocess.run(
    [sys.executable, "-m", "experiments.main", "--help"],
    cwd=REPO_ROOT,
    env=helpers.subprocess_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  text = " ".join((result.stdout + result.stderr).split())
  assert "experiments/configs/default.py" in text
  for field in ("target_sparsity", "teacher_workdir", "lr_rewind_epoch", "parallel"):
    assert field in text


def test_no_progress_bars_when_the_output_is_not_a_terminal(idx_dir, tmp_path):
  fields = {**FIELDS, "idx_dir": str(idx_dir), "progress": True}
  result = subprocess.run(
    [sys.executable, "-c", helpers.TRAIN_WORKER, json.dumps(fields), str(tmp_path / "run")],
    cwd=REPO_ROOT,
    env=helpers.subprocess_env(),
    capture_output=True,
    text=True,
    timeout=180,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "\r" not in result.stderr and "step/s" not in result.stderr
  assert (tmp_path / "run" / "summary.json").exists()
