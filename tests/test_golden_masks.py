"""Every policy gives the recorded masks bit for bit (see ``tests/golden_masks.py``)."""

import numpy as np
import pytest

from tests import golden_masks


@pytest.fixture(scope="module")
def recorded():
  with np.load(golden_masks.GOLDEN_PATH) as data:
    return dict(data)


@pytest.mark.parametrize("name", sorted(golden_masks.CASES))
def test_masks_equal_recorded(name, recorded):
  masks = golden_masks.run_case(name)
  assert set(masks) == {k for k in recorded if k.startswith(name + "/")}
  for key, packed in masks.items():
    np.testing.assert_array_equal(packed, recorded[key], err_msg=key)
  # The recorded run must actually prune (a run that never changes a mask would pass
  # trivially): the last step's masks are far from dense.
  last = np.unpackbits(masks[f"{name}/{golden_masks.NUM_STEPS - 1}"])
  assert last.mean() < 0.8, (name, last.mean())
