#!/usr/bin/env bash
# FCOS training speed: kiln (examples/fcos.rs) against torchvision's FCOS (bench/torch_fcos.py),
# the same ResNet-18 body, 64-channel FPN and heads, 128-pixel images, batch 16, SGD, 2 threads,
# on the same made detection set (256 training images). Each run trains 2 epochs; the second
# epoch's images/s is taken. Prints every run and the medians.
#
#   bash bench/fcos.sh [RUNS=3]
#
# Needs python3 with torch and torchvision. Results in docs/detection.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
cargo build --release -q -p kiln
cargo build --release -q -p kiln-suite --example fcos
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$CARGO_TARGET_DIR/release/kiln" make-detection --out "$tmp/data" --train 256 --val 32 --size 128 > /dev/null 2>&1

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for i in $(seq 1 "$RUNS"); do
  RAYON_NUM_THREADS=2 "$CARGO_TARGET_DIR/release/examples/fcos" --data "$tmp/data" --out "$tmp/run" \
    --epochs 2 --batch 16 --size 128 --channels 64 2>/dev/null \
    | sed -n 's/^epoch  2 .* \([0-9.]*\) img\/s$/\1/p' | tee -a "$tmp/kiln.txt" | sed "s/^/kiln, run $i: img\/s /"
  python3 bench/torch_fcos.py "$tmp/data" --epochs 2 --batch 16 --size 128 --channels 64 --threads 2 \
    | sed -n 's/^epoch 2 .* \([0-9.]*\) img\/s$/\1/p' | tee -a "$tmp/torch.txt" | sed "s/^/torchvision, run $i: img\/s /"
done
k=$(median < "$tmp/kiln.txt"); t=$(median < "$tmp/torch.txt")
echo
echo "| FCOS ResNet-18 FPN (64 ch), 128 px, batch 16, 2 threads | kiln img/s | torchvision img/s | kiln / torchvision |"
echo "|---|---|---|---|"
echo "| median of $RUNS | $k | $t | $(awk -v k="$k" -v t="$t" 'BEGIN {printf "%.2f", k / t}') |"
