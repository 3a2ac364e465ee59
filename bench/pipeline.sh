#!/usr/bin/env bash
# Input-pipeline throughput: kiln's loader next to torchvision's, same machine, same sitting, same
# JPEG ImageFolder (made by ../shared/bench/make_imagefolder.py: 10 classes × 200 images, 256×256).
#
#   bash bench/pipeline.sh [RUNS=5] [WORKERS=2]
#
# Both: decode → RandomResizedCrop 224 → random horizontal flip → ImageNet-normalised CHW f32 →
# shuffled batches of 64. AUGMENT=trivial-augment-wide adds torchvision's TrivialAugmentWide after
# the crop on both sides (issue 26's target: kiln ≥ 2× torchvision's images/s). kiln decodes as cv2.imread and resizes bilinearly (OpenCV geometry);
# torchvision decodes with PIL and resizes with antialiasing. Extra kiln flags (e.g. --resize-only)
# can follow in KILN_FLAGS.
# Needs: pip install torch torchvision pillow scikit-learn numpy. Prints each run and medians.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
WORKERS="${2:-2}"
DATA="${KILN_BENCH_IMAGEFOLDER:-$HOME/.cache/kiln-bench/imagefolder}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"

KILN_FLAGS="${KILN_FLAGS:-}"
PEER_FLAGS=""
if [ "${AUGMENT:-}" = trivial-augment-wide ]; then
  KILN_FLAGS="$KILN_FLAGS --trivial-augment"
  PEER_FLAGS="--trivial-augment"
fi
if [ ! -d "$DATA" ]; then
  python3 ../shared/bench/make_imagefolder.py "$DATA"
fi
cargo build --release -q -p kiln-suite --example pipeline
KILN="$CARGO_TARGET_DIR/release/examples/pipeline"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for i in $(seq 1 "$RUNS"); do
  "$KILN" "$DATA" --workers "$WORKERS" ${KILN_FLAGS:-} \
    | sed -n 's/.*pipeline_images_per_s=\([0-9.]*\).*/\1/p' | tee -a "$tmp/kiln.txt" | sed "s/^/kiln run $i: img\/s /"
  python3 bench/torch_pipeline.py "$DATA" --workers "$WORKERS" ${PEER_FLAGS} \
    | sed -n 's/.*pipeline_images_per_s=\([0-9.]*\).*/\1/p' | tee -a "$tmp/torch.txt" | sed "s/^/torchvision run $i: img\/s /"
done

k=$(median < "$tmp/kiln.txt")
t=$(median < "$tmp/torch.txt")
echo
echo "| JPEG ImageFolder → RandomResizedCrop 224 ${AUGMENT:++ $AUGMENT }+ flip → normalised batch of 64, $WORKERS workers | img/s (median of $RUNS) |"
echo "|---|---|"
echo "| kiln loader | $k |"
echo "| torchvision $(python3 -c 'import torchvision; print(torchvision.__version__)') DataLoader | $t |"
echo "| ratio kiln / torchvision | $(awk -v k="$k" -v t="$t" 'BEGIN{printf "%.2f", k/t}') |"
