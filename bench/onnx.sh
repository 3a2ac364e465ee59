#!/usr/bin/env bash
# Inference of torchvision's ResNet-18 (224×224×3, 1000 classes, random seeded weights): kiln on
# its flex kernels next to the same model exported with `kiln export` and run in ONNX Runtime on 2
# threads (this machine's cores), on the same inputs, alternately, in one sitting.
#
#   bash bench/onnx.sh [RUNS=3] [BATCH=16]
#
# Columns: kiln's eval-mode forwards (examples/bench_train.rs --mode infer), ONNX Runtime's
# `session.run` (bench/ort_infer.py), both in images/s after two untimed warm-up batches; and the
# whole `kiln predict --input x.npy` command (process start, weight load, one batch) in seconds.
# Also checks that ONNX Runtime's probabilities equal kiln predict's on that batch. Needs
# `pip install onnxruntime numpy`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
BATCH="${2:-16}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
python3 -c "import onnxruntime, numpy" 2>/dev/null || { echo "bench/onnx.sh skipped: needs pip install onnxruntime numpy" >&2; exit 0; }
cargo build --release -q -p kiln-suite --example bench_train
cargo build --release -q -p kiln
BENCH="$CARGO_TARGET_DIR/release/examples/bench_train"
KILN="$CARGO_TARGET_DIR/release/kiln"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { sed -n "s/.*$1=\([0-9.e+-]*\).*/\1/p" <<<"$2"; }
stats() { sort -g "$1" | awk '{a[NR]=$1} END {m=(NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "%.2f (%.2f–%.2f)", m, a[1], a[NR]}'; }
median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$BENCH" --model resnet18 --mode infer --batch 2 --steps 1 --save-weights "$tmp/model.bpk" >/dev/null
"$KILN" export --weights "$tmp/model.bpk" --out "$tmp/model.onnx" --dynamic-batch >/dev/null
# torch-imagenet inputs: normalized pixels, (U(0, 255) - mean) / std per channel.
python3 - "$tmp/x.npy" "$BATCH" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
mean = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
std = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)
x = (rng.uniform(0, 255, (int(sys.argv[2]), 3, 224, 224)).astype(np.float32) - mean) / std
np.save(sys.argv[1], x.astype(np.float32))
PY

for i in $(seq 1 "$RUNS"); do
  out=$("$BENCH" --model resnet18 --mode infer --batch "$BATCH" --steps 4)
  field infer_images_per_s "$out" >>"$tmp/kiln"
  t0=$(date +%s.%N)
  "$KILN" predict --weights "$tmp/model.bpk" --input "$tmp/x.npy" --out "$tmp/probs.npy" --json >/dev/null
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}' >>"$tmp/predict"
  out=$(python3 bench/ort_infer.py "$tmp/model.onnx" "$tmp/x.npy" --threads 2 --steps 4 --expect "$tmp/probs.npy")
  field ort_images_per_s "$out" >>"$tmp/ort"
  field max_abs_diff "$out" >>"$tmp/diff"
  echo "run $i: kiln $(tail -1 "$tmp/kiln") img/s, ONNX Runtime $(tail -1 "$tmp/ort") img/s, kiln predict $(tail -1 "$tmp/predict") s, max |ORT - kiln| $(tail -1 "$tmp/diff")" >&2
done

echo
echo "| ResNet-18, 224×224, batch $BATCH | kiln img/s | ONNX Runtime (2 threads) img/s | kiln / ORT | kiln predict, whole command (s) | max abs diff of probabilities |"
echo "|---|---|---|---|---|---|"
ratio=$(awk -v k="$(median "$tmp/kiln")" -v t="$(median "$tmp/ort")" 'BEGIN{printf "%.2f", k/t}')
echo "| median (min–max) of $RUNS | $(stats "$tmp/kiln") | $(stats "$tmp/ort") | $ratio | $(stats "$tmp/predict") | $(sort -g "$tmp/diff" | tail -1) |"
