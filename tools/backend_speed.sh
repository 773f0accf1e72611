#!/usr/bin/env bash
# Train img/s of the default model on each Keras backend, printed as a Markdown table.
# Usage: tools/backend_speed.sh [CIFAR-10 path (default: $CIFAR10_PATH)]; run it on an idle machine.
# Each backend trains 2 epochs on N_TRAIN images (default 2048); the table uses epoch 2
# (no compilation), whose time includes evaluating N_TEST test images (default 512).
set -euo pipefail
data=${1:-${CIFAR10_PATH:?pass the CIFAR-10 path or set CIFAR10_PATH}}
n_train=${N_TRAIN:-2048}
n_test=${N_TEST:-512}
out=runs/speed-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
echo "Runs and logs in $out (epoch 2 of $n_train train + $n_test test images)" >&2
echo "| backend | epoch 2 seconds | train img/s |"
echo "|---|---:|---:|"
for backend in tensorflow torch jax; do
    KERAS_BACKEND=$backend python -m keras_ultimus.train --data "$data" --out "$out/$backend" \
        --epochs 2 --limit-train "$n_train" --limit-test "$n_test" >"$out/$backend.log" 2>&1 \
        || { echo "error: $backend run failed, see $out/$backend.log" >&2; exit 1; }
    python - "$out/$backend/log.csv" "$backend" "$n_train" <<'PY'
import sys

import pandas as pd

csv, backend, n_train = sys.argv[1], sys.argv[2], int(sys.argv[3])
seconds = float(pd.read_csv(csv).set_index("epoch").loc[1, "epoch_seconds"])
print(f"| {backend} | {seconds:.1f} | {n_train / seconds:.0f} |")
PY
done
