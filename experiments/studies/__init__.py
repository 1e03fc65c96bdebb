"""Study grids for ``python -m experiments.study``."""
