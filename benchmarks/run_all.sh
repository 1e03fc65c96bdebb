#!/usr/bin/env bash
# Runs every benchmark and writes its Markdown table and JSON rows to OUT_DIR.
#
#   bash benchmarks/run_all.sh OUT_DIR            # CPU defaults
#   MODELS=lenet300,lenet5,vgg16 SIZES=1e4,...,3e7 MAX_SORT=3e7 bash benchmarks/run_all.sh OUT_DIR
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -uo pipefail
OUT_DIR=${1:?usage: bash benchmarks/run_all.sh OUT_DIR}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
MODELS=${MODELS:-lenet300,lenet5,vgg16_w0.25}
SIZES=${SIZES:-1e4,1e5,1e6,3e6,1e7,3e7}
MAX_SORT=${MAX_SORT:-3e6}
# REPEATS fixes the overhead benchmark's rounds; by default it fits them in a time budget.
OVERHEAD_REPEATS=()
if [[ -n "${REPEATS:-}" ]]; then OVERHEAD_REPEATS=(--repeats "$REPEATS"); fi
mkdir -p "$OUT_DIR"
status=0
run() {  # one benchmark; a failure is reported and the others still run
  local name=$1; shift
  echo "== $name: $*"
  "$PYTHON" -m "benchmarks.$name" "$@" 2>&1 | tee "$OUT_DIR/$name.md" || { echo "!! $name failed"; status=1; }
}
run overhead --models "$MODELS" ${OVERHEAD_REPEATS[@]+"${OVERHEAD_REPEATS[@]}"} --out "$OUT_DIR/overhead.json"
run selection --sizes "$SIZES" --max-sort-size "$MAX_SORT" --out "$OUT_DIR/selection.json"
run memory --models lenet300,lenet5,vgg16 --out "$OUT_DIR/memory.json"
run sparse_inference --out "$OUT_DIR/sparse_inference.json"
exit $status
