r"""Command line entry point of the experiments.

  python -m experiments.main --config experiments/configs/lenet300.py --workdir runs/NAME \
      --config.idx_dir=PATH --config.target_sparsity=0.98

Every config field can be overridden with ``--config.FIELD=VALUE``. Rerunning the
same command resumes from the latest checkpoint in ``--workdir``; a rerun whose config
changes results is refused, ``--fresh`` starts over (the old folder is renamed to
``<workdir>.old``). At the end the results row (Markdown) and the paths of the plots
are printed.

Exit status: 0 finished (or stopped by ``stop_after_epochs``); 1 the run diverged
(non-finite loss); 2 a user error: command line, config file, config, data, or a run
folder that is unusable or in use by another run (one line on stderr, no traceback);
143 stopped by SIGTERM, 130 by Ctrl-C (SIGINT), each after saving a checkpoint (rerun
the same command to resume).
"""

from __future__ import annotations

import difflib
import logging as logging_std
import re
import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags


def _config_help() -> str:
  from experiments.configs import default  # pylint: disable=g-import-not-at-top

  fields = ", ".join(sorted(default.get_config().keys()))
  return (
    "Path to a config file, e.g. experiments/configs/lenet300.py. Any field can be "
    "overridden with --config.FIELD=VALUE; every field, its default and its meaning are "
    f"in experiments/configs/default.py. Fields: {fields}."
  )


_CONFIG = config_flags.DEFINE_config_file("config", None, _config_help(), lock_config=True)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Run folder: checkpoints, metrics.jsonl, summary.json and plots."
)
_FRESH = flags.DEFINE_bool(
  "fresh",
  False,
  "Start over: rename an existing --workdir to <workdir>.old (.old.1, ... if taken) "
  "and train from step 0.",
)
flags.mark_flags_as_required(["config", "workdir"])

EXIT_DIVERGED = 1
EXIT_USER_ERROR = 2
EXIT_SIGTERM = 128 + 15  # 128 + the signal number, as a shell reports a signal's death


def _one_line(text: str) -> str:
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  if any(line.startswith("Traceback") for line in lines):
    lines = lines[-1:]  # a config file that raised: its exception is the last line
  return " ".join(lines)


def _fail(message: str, status: int) -> None:
  print(f"error: {_one_line(message)}", file=sys.stderr)
  sys.exit(status)


def _unknown_fields(argv: list[str]) -> list[str]:
  """``--config.FIELD`` overrides naming a field no config has, with suggestions."""
  from experiments.configs import default  # pylint: disable=g-import-not-at-top

  known = list(default.get_config().keys())
  messages = []
  for arg in argv[1:]:
    match = re.match(r"--config\.([^=.]+)", arg)
    if match and match.group(1) not in known:
      name = match.group(1)
      close = difflib.get_close_matches(name, known, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else " (see experiments/configs/default.py)"
      messages.append(f"unknown config field {name!r}{hint}")
  return messages


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with any error as one line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except  # config_flags raises any type
    unknown = _unknown_fields(argv)
    _fail("; ".join(unknown) if unknown else str(error), EXIT_USER_ERROR)


class _OwnInfoOnly(logging_std.Filter):
  """Lets through warnings from anywhere but INFO lines only from this project.

  Orbax logs a dozen INFO lines per checkpoint; they would bury the epoch lines.
  """

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or _PROJECT_ROOT in record.pathname


_PROJECT_ROOT = str(Path(__file__).resolve().parents[1] / "experiments")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  config_file = flags.FLAGS["config"].config_filename
  if not Path(config_file.split(":")[0]).is_file():
    _fail(f"--config={config_file!r} is not a file (e.g. experiments/configs/lenet300.py).", 2)
  try:
    config = _CONFIG.value
    config.host_devices  # a config file that failed to load raises at the first field  # noqa: B018
  except Exception as error:  # pylint: disable=broad-except  # the config file raised
    _fail(f"--config={config_file!r} did not load: {error}", EXIT_USER_ERROR)
  if config.host_devices:
    # Only works before JAX initialises a backend, i.e. before any computation:
    # nothing above has touched a device.
    jax.config.update("jax_num_cpu_devices", config.host_devices)

  # Imported after the device set-up on purpose (importing is harmless either way,
  # but keeps anything that might touch a device below the set-up).
  from experiments import (
    data,  # pylint: disable=g-import-not-at-top
    errors,  # pylint: disable=g-import-not-at-top
    report,  # pylint: disable=g-import-not-at-top
    train,  # pylint: disable=g-import-not-at-top
  )

  workdir = Path(_WORKDIR.value)
  try:
    summary = train.train_and_evaluate(config, workdir, fresh=_FRESH.value)
  except errors.DivergedError as error:
    _fail(str(error), EXIT_DIVERGED)
  except (errors.RunError, data.DatasetError) as error:
    _fail(str(error), EXIT_USER_ERROR)
  except errors.Preempted as error:
    print(error, file=sys.stderr)
    sys.exit(128 + error.signum)
  if jax.process_index() != 0:
    return
  if summary.get("stopped"):
    print(f"Stopped after epoch {summary['last_epoch']}; rerun the same command to resume.")
    return
  print()
  print(report.markdown_table([summary]), end="")
  print()
  for name in (
    report.CURVES_FILE,
    report.LAYERS_FILE,
    report.RESULTS_ROW_FILE,
    report.SUMMARY_FILE,
    report.METRICS_FILE,
  ):
    print(f"  {workdir / name}")
  logging.info("Done: %s", workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
