#!/usr/bin/env bash
# Training across processes on one machine: 2 MPI ranks × 1 thread against 1 process × 2 threads,
# the same global batch (128), one epoch on the vendored Fashion-MNIST subset (9,000 images), for
# the reference CNN and CIFAR ResNet-20. Prints each run, the medians, and the all-reduce cost
# rank 0 reports (ms per step, MB of gradients, share of the training time).
#
#   bash bench/mpi.sh [RUNS=3]
#
# Needs an MPI library (Debian: libopenmpi-dev openmpi-bin libclang-dev); builds kiln with
# `--features mpi`. Results in docs/distributed.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
command -v mpirun >/dev/null || { echo "needs mpirun: apt-get install libopenmpi-dev openmpi-bin libclang-dev" >&2; exit 2; }

cargo build --release -q -p kiln --features mpi
KILN="$CARGO_TARGET_DIR/release/kiln"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS=1)

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rate() { sed -n 's/.*train_images_per_s=\([0-9.]*\).*/\1/p'; }

for model in reference-cnn cifar-resnet20; do
  for i in $(seq 1 "$RUNS"); do
    args=(train --model "$model" --epochs 1 --batch-size 128 --no-progress)
    RAYON_NUM_THREADS=2 "$KILN" "${args[@]}" --out "$tmp/$model-one-$i" | rate \
      | tee -a "$tmp/$model-one.txt" | sed "s/^/$model 1 process × 2 threads, run $i: img\/s /"
    "${MPIRUN[@]}" "$KILN" "${args[@]}" --out "$tmp/$model-two-$i" > "$tmp/out.txt"
    rate < "$tmp/out.txt" | tee -a "$tmp/$model-two.txt" | sed "s/^/$model 2 ranks × 1 thread, run $i: img\/s /"
    grep "all-reduce:" "$tmp/out.txt" | tee -a "$tmp/$model-reduce.txt"
    sed -n 's/.*all-reduce: \([0-9.]*\) ms per step.*/\1/p' "$tmp/out.txt" >> "$tmp/$model-ms.txt"
  done
done

echo
echo "| model, batch 128, 2 cores | 1 process × 2 threads img/s | 2 ranks × 1 thread img/s | ratio | all-reduce ms/step | gradients MB |"
echo "|---|---|---|---|---|---|"
for model in reference-cnn cifar-resnet20; do
  one=$(median < "$tmp/$model-one.txt")
  two=$(median < "$tmp/$model-two.txt")
  ms=$(median < "$tmp/$model-ms.txt")
  mb=$(sed -n 's/.* for \([0-9.]*\) MB.*/\1/p' "$tmp/$model-reduce.txt" | head -1)
  echo "| $model | $one | $two | $(awk -v a="$two" -v b="$one" 'BEGIN{printf "%.2f", a/b}') | $ms | $mb |"
done
