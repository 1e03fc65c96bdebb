"""The runner accepts nothing the library refuses: settings that pass the config checks
but that the library's constructors or ``init`` reject end as one ``ConfigError`` naming
the value, before anything is written to the run folder or trained."""

import pytest

from experiments import errors, train
from tests import helpers

# (overrides, a fragment of the library's message). Each passes validate_config.
LIBRARY_REFUSALS = [
  ({"method": "drop", "drop_away_prob": 0.0}, "drop_away_prob"),
  ({"method": "drop", "drop_away_prob": 0.05, "drop_back_prob": 0.9}, "cannot follow"),
  ({"method": "drop_back_only", "drop_back_prob": 1.0}, "drop_back_prob"),
  ({"method": "rigl", "update_every": 1000}, "update_every"),
]


@pytest.mark.parametrize(
  "overrides,fragment", LIBRARY_REFUSALS, ids=[f for _, f in LIBRARY_REFUSALS]
)
def test_a_setting_the_library_refuses_is_a_config_error_before_anything_runs(
  idx_dir, tmp_path, overrides, fragment
):
  config = helpers.idx_config(idx_dir, **overrides)
  workdir = tmp_path / "run"
  with pytest.raises(errors.ConfigError, match=fragment):
    train.train_and_evaluate(config, workdir)
  assert not workdir.exists() or not any(workdir.iterdir())
