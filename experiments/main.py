r"""Command line entry point of the experiments.

  python -m experiments.main --config experiments/configs/lenet300.py --workdir runs/NAME \
      --config.idx_dir=PATH --config.target_sparsity=0.98

Every config field can be overridden with ``--config.FIELD=VALUE``. Rerunning the
same command resumes from the latest checkpoint in ``--workdir``. At the end the
results row (Markdown) and the paths of the plots are printed.
"""

from __future__ import annotations

import logging as logging_std
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, e.g. experiments/configs/lenet300.py.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run folder: checkpoints, metrics.jsonl, summary.json and plots."
)
flags.mark_flags_as_required(["config", "workdir"])


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
  config = _CONFIG.value
  if config.host_devices:
    # Only works before JAX initialises a backend, i.e. before any computation:
    # nothing above has touched a device.
    jax.config.update("jax_num_cpu_devices", config.host_devices)

  # Imported after the device set-up on purpose (importing is harmless either way,
  # but keeps anything that might touch a device below the set-up).
  from experiments import report  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top

  workdir = Path(_WORKDIR.value)
  summary = train.train_and_evaluate(config, workdir)
  if jax.process_index() != 0:
    return
  if summary.get("stopped"):
    print(f"Stopped after epoch {summary['last_epoch']}; rerun the same command to resume.")
    return
  print()
  print(report.markdown_table([summary]), end="")
  print()
  for name in (report.CURVES_FILE, report.LAYERS_FILE, report.RESULTS_ROW_FILE,
               report.SUMMARY_FILE, report.METRICS_FILE):
    print(f"  {workdir / name}")
  logging.info("Done: %s", workdir)


if __name__ == "__main__":
  app.run(main)
