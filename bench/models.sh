#!/usr/bin/env bash
# Training and inference throughput and peak memory of the reference CNN (batch 128, 28×28×1),
# the CIFAR ResNet-18 (batch 128, 32×32×3), MobileNetV3-Large and EfficientNet-B0 (batch 32,
# 224×224×3, 1000 classes; ConvNeXt-Tiny and ViT-S/16 at batch 16 when named in MODELS): kiln
# with its own flex kernels, kiln with them off (Burn 0.22.1's flex ops), and PyTorch,
# alternately, in one sitting, on the same random data.
#
#   bash bench/models.sh [RUNS=3]
#   MODELS="mobilenet_v3_large efficientnet_b0" bash bench/models.sh 5   # a subset
#   MODELS="vit_s_16 convnext_tiny" bash bench/models.sh 3
#
# kiln: examples/bench_train.rs; PyTorch: bench/torch_models.py (needs `pip install torch
# torchvision`; its column is left out when torch is not importable). Each figure is one
# process; the table gives the median and the range of RUNS. Threads: PyTorch 2 (this machine's
# cores); kiln uses rayon's default (one per core).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
cargo build --release -q -p kiln-suite --example bench_train
KILN="$CARGO_TARGET_DIR/release/examples/bench_train"
TORCH=0
python3 -c "import torch, torchvision" 2>/dev/null && TORCH=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# field NAME LINE: the value of NAME=… in LINE.
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
# stats FILE: "median (min–max)".
stats() { sort -g "$1" | awk '{a[NR]=$1} END {m=(NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "%.1f (%.1f–%.1f)", m, a[1], a[NR]}'; }
median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

MODELS="${MODELS:-reference resnet18-cifar mobilenet_v3_large efficientnet_b0}"
# batch MODEL / steps MODEL: what each model is timed with.
batch() { case "$1" in reference|resnet18-cifar) echo 128 ;; convnext_tiny|vit_s_16) echo 16 ;; *) echo 32 ;; esac; }
steps() { case "$1" in reference) echo 40 ;; resnet18-cifar) echo 4 ;; *) echo 3 ;; esac; }

for model in $MODELS; do
  steps=$(steps "$model"); b=$(batch "$model")
  for mode in train infer; do
    for i in $(seq 1 "$RUNS"); do
      key="$model.$mode"
      out=$("$KILN" --model "$model" --mode "$mode" --steps "$steps" --batch "$b")
      field "${mode}_images_per_s" "$out" >>"$tmp/$key.kiln"; field peak_rss_mb "$out" >>"$tmp/$key.kiln.rss"
      out=$(KILN_FAST_KERNELS=0 "$KILN" --model "$model" --mode "$mode" --steps "$steps" --batch "$b")
      field "${mode}_images_per_s" "$out" >>"$tmp/$key.burn"; field peak_rss_mb "$out" >>"$tmp/$key.burn.rss"
      if [ "$TORCH" = 1 ]; then
        out=$(python3 bench/torch_models.py --model "$model" --mode "$mode" --steps "$steps" --batch "$b" --threads 2)
        field "${mode}_images_per_s" "$out" >>"$tmp/$key.torch"; field peak_rss_mb "$out" >>"$tmp/$key.torch.rss"
      fi
      echo "$key run $i: kiln $(tail -1 "$tmp/$key.kiln") img/s, kiln without kernels $(tail -1 "$tmp/$key.burn")$([ "$TORCH" = 1 ] && echo ", PyTorch $(tail -1 "$tmp/$key.torch")") img/s" >&2
    done
  done
done

echo
echo "| model (batch) | mode | kiln img/s | kiln, kernels off | PyTorch img/s | kiln / PyTorch | peak RSS MB kiln / off / PyTorch |"
echo "|---|---|---|---|---|---|---|"
for model in $MODELS; do
  for mode in train infer; do
    key="$model.$mode"
    if [ "$TORCH" = 1 ]; then
      t=$(stats "$tmp/$key.torch"); ratio=$(awk -v k="$(median "$tmp/$key.kiln")" -v t="$(median "$tmp/$key.torch")" 'BEGIN{printf "%.2f", k/t}')
      trss=$(median "$tmp/$key.torch.rss")
    else
      t="not installed"; ratio="–"; trss="–"
    fi
    echo "| $model ($(batch "$model")) | $mode | $(stats "$tmp/$key.kiln") | $(stats "$tmp/$key.burn") | $t | $ratio | $(median "$tmp/$key.kiln.rss") / $(median "$tmp/$key.burn.rss") / $trss |"
  done
done
