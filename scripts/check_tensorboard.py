"""Read a kiln run's TensorBoard folder with TensorBoard's own reader and check what it holds.

Usage: python scripts/check_tensorboard.py LOG_DIR EPOCHS STEPS_PER_EPOCH

LOG_DIR is `<--tensorboard DIR>/<run folder name>`. Prints what it read; exits non-zero when a
tag, a count or an image is missing. Needs: tensorboard (pip install tensorboard).
"""
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

log_dir, epochs, spe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ea = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
ea.Reload()
tags = ea.Tags()
print({k: v for k, v in tags.items() if v})
for tag, n in [("step/train_loss", epochs * spe), ("step/lr", epochs * spe), ("epoch/train_loss", epochs),
               ("epoch/val_loss", epochs), ("epoch/train_acc", epochs), ("epoch/val_acc", epochs),
               ("epoch/train_images_per_s", epochs)]:
    s = ea.Scalars(tag)
    assert len(s) == n, (tag, len(s), n)
    assert [e.step for e in s] == list(range(1, n + 1)), (tag, [e.step for e in s])
    print(f"{tag}: {n} values, last {s[-1].value:.4f}")
img = ea.Images("training samples (epoch 1)")[0]
assert img.encoded_image_string.startswith(b"\x89PNG") and img.width > 0 and img.height > 0
print(f"image: {img.width}x{img.height}")
text = ea.Tensors("config")[0].tensor_proto.string_val[0].decode()
assert "[train]" in text, text[:200]
print("text: config, %d characters" % len(text))
print("tensorboard read everything")
