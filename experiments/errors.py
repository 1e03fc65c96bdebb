"""The exceptions of the experiment runner.

``RunError`` and its subclasses are errors the user can act on (the command line prints
the message as one line); ``Preempted`` reports a run stopped by a signal after saving a
checkpoint; ``StopTraining`` is internal to the loop (``config.stop_after_steps``).
"""

from __future__ import annotations

import signal


class StopTraining(Exception):
  """Raised internally by ``config.stop_after_steps`` to simulate a crash."""


class RunError(Exception):
  """An error the user can act on; the command line prints its message as one line."""


class ConfigError(RunError, ValueError):
  """The config is invalid, or differs from the one the run folder was started with."""


class RunFolderError(RunError):
  """The run folder cannot be used (not writable, or a file is unreadable)."""


class DivergedError(RunError):
  """The train loss (or a parameter) became non-finite; the run stopped.

  Attributes:
    step: the global step (1-based) whose loss was not finite.
  """

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class Preempted(Exception):
  """SIGTERM or SIGINT (Ctrl-C) arrived: a checkpoint of the current step was saved and
  the run stopped.

  Attributes:
    step: the global step of that checkpoint.
    signum: the signal that stopped the run (the CLI exits with ``128 + signum``).
  """

  def __init__(self, message: str, step: int, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.step = step
    self.signum = int(signum)
