"""The names that the generated tables of ``docs/results.md`` and ``README.md``
(experiments/results_tables.py) give to study series."""

# Row labels, in table order; a series missing here is shown by its own name, last.
LABELS = {
  "dense": "dense",
  "gradual": "gradual (p = 1, q = 0)",
  "drop_away_only": "drop away only (p = 0.5)",
  "drop_back_only": "drop back only (q = 0.1)",
  "drop": "drop (p = 0.5, q = 0.1, constant)",
  "han": "han (5 cycles)",
  "random": "random",
  "drop_cosine": "drop, cosine-annealed (p 0.25→1, q 0.2→0)",
  "drop_weighted": "drop, cosine-annealed, importance-weighted (away: importance, back: gradient)",
  "drop_weighted_tuned": "the same, p 0.5→1 and q 0.4→0 (chosen on validation at 99 %)",
  "gradual_uniform": "gradual, per-layer targets",
  "rigl": "RigL, per-layer targets (uniform)",
  "rigl_erk": "RigL, per-layer targets (ERK)",
  "set": "SET, per-layer targets (uniform)",
  "set_erk": "SET, per-layer targets (ERK)",
  "gradual_rewind": "gradual, learning-rate rewinding",
  "drop_weighted_tuned_rewind": "drop, importance-weighted, p 0.5→1 and q 0.4→0, rewinding",
  "gradual_plain": "gradual (p = 1, q = 0)",
  "drop_weighted_tuned_plain": "drop, importance-weighted, p 0.5→1 and q 0.4→0 (cosine)",
}
# A training variant (``gradual_rewind_wd5e-4``): the series' label and its weight decay.
for _series in ("dense", "gradual_rewind", "drop_weighted_tuned_rewind"):
  LABELS[f"{_series}_wd5e-4"] = f"{LABELS[_series]}, weight decay 5e-4"
  LABELS[f"{_series}_wd5e-4_warmup1"] = f"{LABELS[_series]}, weight decay 5e-4, 1-epoch warmup"
  LABELS[f"{_series}_wd5e-4_std"] = f"{LABELS[_series]}, weight decay 5e-4, standardised inputs"
# A budget's series (``gradual_e200``): the method's label and the budget.
for _series, _label in list(LABELS.items()):
  if _series == "drop_weighted_tuned":  # its own label reads after drop_weighted's only
    _label = "drop, importance-weighted, p 0.5→1 and q 0.4→0 (cosine)"
  for _epochs in (20, 40, 60, 200):
    LABELS[f"{_series}_e{_epochs}"] = f"{_label}, {_epochs} epochs"
# The front page's names for the series its `glance` table shows (README.md); a series
# missing here is named as in LABELS.
GLANCE_LABELS = {
  "dense": "dense (not pruned)",
  "gradual": "gradual magnitude pruning",
  "drop_cosine": "Drop Pruning, uniform drops, p 0.25→1, q 0.2→0",
  "weighted_p0.5_q0.4_T1": "Drop Pruning, importance-weighted drops, p 0.5→1, q 0.4→0",
  "drop_weighted": "Drop Pruning, importance-weighted drops, p 0.25→1, q 0.2→0",
  "dense_e200": "dense (not pruned), 200 epochs",
  "gradual_e200": "gradual magnitude pruning, 200 epochs",
  "drop_weighted_tuned_e200": (
    "Drop Pruning, importance-weighted drops, p 0.5→1, q 0.4→0, 200 epochs"
  ),
  "dense_e40": "dense (not pruned), 40 epochs",
  "gradual_rewind_e200": "gradual magnitude pruning, learning-rate rewinding, 200 epochs",
  "gradual_rewind_wd5e-4_e200": (
    "gradual magnitude pruning, learning-rate rewinding, weight decay 5e-4, 200 epochs"
  ),
  "dense_wd5e-4_e200": "dense (not pruned), weight decay 5e-4, 200 epochs",
  "drop_weighted_tuned_rewind_e200": (
    "Drop Pruning, importance-weighted drops, p 0.5→1, q 0.4→0, rewinding, 200 epochs"
  ),
  "gradual_rewind": "gradual magnitude pruning, learning-rate rewinding, 40 epochs",
  "drop_weighted_tuned_rewind": (
    "Drop Pruning, importance-weighted drops, p 0.5→1, q 0.4→0, rewinding, 40 epochs"
  ),
}
_WARMUP = "weight decay 5e-4, 1-epoch warmup, 40 epochs"
GLANCE_LABELS["gradual_rewind_wd5e-4_warmup1"] = f"gradual magnitude pruning, rewinding, {_WARMUP}"
GLANCE_LABELS["dense_wd5e-4_warmup1_e40"] = f"dense (not pruned), {_WARMUP}"
# The second LeNet-5 recipe (lenet5_fmnist_distill_check): the first, distilled.
GLANCE_LABELS["gradual_rewind_wd5e-4_warmup1_kd_w0.9_T2"] = (
  f"gradual magnitude pruning, rewinding, {_WARMUP}, "
  "distilled from the dense model trained alike (the last row)"
)
# The drop trained as the recipes are (lenet300_fmnist_drop_wd, lenet5_fmnist_drop_wd).
_DROP = "Drop Pruning, importance-weighted drops, p 0.5→1, q 0.4→0, rewinding"
GLANCE_LABELS["drop_weighted_tuned_rewind_wd5e-4_e200"] = f"{_DROP}, weight decay 5e-4, 200 epochs"
GLANCE_LABELS["drop_weighted_tuned_rewind_wd5e-4_warmup1"] = f"{_DROP}, {_WARMUP}"
