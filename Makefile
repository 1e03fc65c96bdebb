# `make demo`: set everything up and run the main job (offline, real Fashion-MNIST).
# `make test`: set everything up and run the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo data results clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

LINTED := droppruning_jax experiments benchmarks tests

# The suite runs on TEST_WORKERS processes (pytest-xdist), one test file per process at a
# time, so that each file's shared fixtures are built once; `make test TEST_WORKERS=auto`
# uses every core. Files are handed out in collection order, the longest first
# (tests/conftest.py).
TEST_WORKERS ?= 2

test: install lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile tests

# One style (pyproject.toml [tool.ruff]); `make format` applies it.
lint: install
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m ruff check $(LINTED)

format: install
	$(PY) -m ruff format $(LINTED)
	$(PY) -m ruff check --fix $(LINTED)

# Real Fashion-MNIST IDX files from the Debian package dataset-fashion-mnist
# (apt-get download + dpkg-deb -x into .cache/, no install needed).
data: install
	$(PY) -c "from experiments.data import fetch_fashion_mnist; print(fetch_fashion_mnist())"

demo: install
	$(PY) -m experiments.main --config experiments/configs/demo.py --workdir runs/demo \
	  --config.idx_dir="$$($(PY) -c 'from experiments.data import fetch_fashion_mnist; print(fetch_fashion_mnist())')"

# Regenerate every study report from its run folders (runs/studies/, not committed) and
# the tables of docs/results.md and README.md from those reports.
results: install
	for study in experiments/studies/[a-z]*.py; do \
	  $(PY) -m experiments.study --study $$study --report_only || exit 1; done
	$(PY) -m experiments.results_tables

clean:
	rm -rf runs/demo .pytest_cache
