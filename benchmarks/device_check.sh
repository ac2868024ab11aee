#!/usr/bin/env bash
# The prepared check for a lent GPU (H100/H200), about 6 minutes, JSON out.
#
#   python benchmarks/device_wheels.py             # here, once: the wheels the image lacks
#   bash benchmarks/device_check.sh                # there, from the repo root (device tool:
#                                                  #   carry [".device_wheels"], OUT is set)
#   DRY_RUN=1 OUT=/tmp/dc bash benchmarks/device_check.sh   # tiny shapes on CPU
#
# The GPU machine reaches no registry and has its own Python (benchmarks/device_image/
# packages.txt). The carried wheels (WHEELS, default .device_wheels) are installed without
# index or dependency resolution into PREFIX, which goes on PYTHONPATH with the repository;
# then benchmarks/device_check.py runs its three parts (training step, decoding, a short fit),
# each on its own. Results: $OUT/{train_step,decode,fit,summary}.json and $OUT/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/device}
WHEELS=${WHEELS:-.device_wheels}
PREFIX=${PREFIX:-${TMPDIR:-/tmp}/explainable_ser_device_prefix}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "[device_check] installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $PREFIX" >&2
  if ! $PY -m pip install -q --no-index --no-deps --upgrade --target "$PREFIX" "$WHEELS"/*.whl; then
    echo "[device_check] installing the wheels failed; the parts run with what the image has" >&2
  fi
else
  echo "[device_check] no wheels in $WHEELS (python benchmarks/device_wheels.py makes them)" >&2
fi
export PYTHONPATH="$PWD:$PREFIX${PYTHONPATH:+:$PYTHONPATH}"
exec $PY benchmarks/device_check.py --out "$OUT" ${DRY_RUN:+$([ "$DRY_RUN" = 1 ] && echo --dry-run)}
