#!/usr/bin/env bash
# Training throughput of the reference CNN: kiln (Burn flex) next to PyTorch, same machine, same
# sitting, same data (full Fashion-MNIST train set, batch 128, 1 epoch, SGD momentum 0.9).
#
#   bash bench/fmnist.sh [RUNS=3] [PEER=../shared/bench/torch_fmnist.py]
#
# Needs Debian's dataset-fashion-mnist; the PyTorch column needs `pip install torch numpy`.
# Prints each run and the medians as a table. Threads: both use 2 (this machine's cores).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
PEER="${2:-../shared/bench/torch_fmnist.py}"
DATA=/usr/share/datasets/fashion-mnist
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
[ -d "$DATA" ] || { echo "needs $DATA: apt-get install dataset-fashion-mnist" >&2; exit 2; }

cargo build --release -q
KILN="$CARGO_TARGET_DIR/release/kiln"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for i in $(seq 1 "$RUNS"); do
  "$KILN" --data "$DATA" --epochs 1 --val-fraction 0 --no-progress --out "$tmp/run$i" \
    | sed -n 's/.*train_images_per_s=\([0-9.]*\).*/\1/p' | tee -a "$tmp/kiln.txt" | sed "s/^/kiln run $i: img\/s /"
  if python3 -c "import torch" 2>/dev/null; then
    python3 "$PEER" --epochs 1 --threads 2 \
      | sed -n 's/.*train_images_per_s=\([0-9.]*\).*/\1/p' | tee -a "$tmp/torch.txt" | sed "s/^/torch run $i: img\/s /"
  fi
done

k=$(median < "$tmp/kiln.txt")
echo
echo "| reference CNN, batch 128, 2 cores | train img/s (median of $RUNS) |"
echo "|---|---|"
echo "| kiln (Burn 0.22.1 flex) | $k |"
if [ -s "$tmp/torch.txt" ]; then
  t=$(median < "$tmp/torch.txt")
  echo "| PyTorch $(python3 -c 'import torch; print(torch.__version__)') CPU | $t |"
  echo "| ratio kiln / PyTorch | $(awk -v k="$k" -v t="$t" 'BEGIN{printf "%.3f", k/t}') |"
else
  echo "| PyTorch | not installed (pip install torch numpy) |"
fi
