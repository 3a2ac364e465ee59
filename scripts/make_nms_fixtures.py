"""NMS fixtures for crates/kiln-models/tests/nms_vs_torchvision.rs.

Seeded crowded boxes with score ties (scores f32(k * 0.05), stored as k), exact duplicates, zero-area boxes
and several classes; torchvision.ops.nms and batched_nms's kept indices on CPU, for both of
batched_nms's strategies (at most 1000 boxes: coordinate offsets; more: one NMS per class).

    python3 scripts/make_nms_fixtures.py crates/kiln-models/tests/fixtures/nms/cases.json
"""
import json
import sys

import numpy as np
import torch
import torchvision
from torchvision.ops import batched_nms, nms


def make(rng, n, classes, spread):
    centres = rng.uniform(0, spread, (max(1, n // 8), 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(4, 60, (n, 2))
    # quarter pixels: exact in f32 and short in JSON
    boxes = (np.round(np.concatenate([c - wh / 2, c + wh / 2], 1) * 4) / 4).astype(np.float32)
    boxes[::17] = boxes[::17][:, [0, 1, 0, 3]]  # zero-width boxes
    boxes[5::23] = boxes[4::23][: len(boxes[5::23])]  # exact duplicates
    steps = np.round(rng.uniform(0, 1, n) / 0.05).astype(np.int64)
    scores = (steps * 0.05).astype(np.float32)  # f32(k * 0.05), computed in f64
    labels = rng.integers(0, classes, n)
    return boxes, steps, scores, labels


def main(out):
    rng = np.random.default_rng(7)
    cases = []
    for n, classes, spread, thr in [(40, 1, 100, 0.5), (300, 3, 400, 0.5), (300, 5, 200, 0.6),
                                    (1000, 4, 600, 0.5), (1500, 6, 800, 0.5), (2500, 80, 1200, 0.6)]:
        boxes, steps, scores, labels = make(rng, n, classes, spread)
        bt, st, lt = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)
        cases.append({
            "iou_threshold": thr,
            "boxes": boxes.tolist(), "score_steps": steps.tolist(), "labels": labels.tolist(),
            "nms": nms(bt, st, thr).tolist(),
            "batched_nms": batched_nms(bt, st, lt, thr).tolist(),
        })
        print(n, classes, len(cases[-1]["nms"]), len(cases[-1]["batched_nms"]))
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "cases": cases}, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/kiln-models/tests/fixtures/nms/cases.json")
