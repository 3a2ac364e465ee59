"""Write the Mixup/CutMix fixture: timm's Mixup on a fixed batch, with its random draws recorded.

Usage: python scripts/make_mixup_fixture.py crates/kiln-train/tests/fixtures/mixup/cases.json
Needs: torch, timm, numpy.

kiln draws its own λ and boxes (its generator is not numpy's), so the fixture pins the draws and
checks everything after them: each case fixes timm's per-batch or per-element parameters
(`_params_per_batch` / `_params_per_elem`), seeds numpy for the CutMix box, runs `Mixup(x, target)`,
and records the mixed batch, the soft targets, and — replaying the same numpy draws through timm's
`cutmix_bbox_and_lam` — each image's box and corrected λ.
"""
import json, sys
import numpy as np
import torch
import timm
from timm.data.mixup import Mixup, cutmix_bbox_and_lam

N, C, H, W, CLASSES = 6, 2, 5, 7, 4
torch.manual_seed(0)
x0 = torch.randn(N, C, H, W)
target = torch.tensor([0, 3, 1, 1, 2, 0])

CASES = [
    {"mode": "batch", "lam": 0.3, "cutmix": False, "smoothing": 0.0},
    {"mode": "batch", "lam": 0.62, "cutmix": True, "smoothing": 0.1, "seed": 4},
    {"mode": "elem", "lam": [0.9, 1.0, 0.4, 0.55, 0.2, 0.7], "cutmix": [False, False, True, False, True, True], "smoothing": 0.1, "seed": 9},
    {"mode": "pair", "lam": [0.35, 0.8, 1.0], "cutmix": [True, False, False], "smoothing": 0.0, "seed": 2},
]

out = {"torch": torch.__version__, "timm": timm.__version__, "shape": [N, C, H, W], "classes": CLASSES,
       "x": x0.flatten().tolist(), "target": target.tolist(), "cases": []}
for case in CASES:
    m = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode=case["mode"], label_smoothing=case["smoothing"], num_classes=CLASSES)
    if case["mode"] == "batch":
        m._params_per_batch = lambda c=case: (c["lam"], c["cutmix"])
    else:
        m._params_per_elem = lambda n, c=case: (np.array(c["lam"], dtype=np.float32), np.array(c["cutmix"], dtype=bool))
    np.random.seed(case.get("seed", 0))
    x = x0.clone()
    xm, t = m(x, target.clone())
    # Replay the numpy draws to learn each image's box and λ.
    np.random.seed(case.get("seed", 0))
    each = []
    if case["mode"] == "batch":
        lam, box = case["lam"], None
        if case["cutmix"]:
            box, lam = cutmix_bbox_and_lam(x0.shape, lam, correct_lam=True)
        each = [[float(lam), [int(v) for v in box] if box else None]] * N
    else:
        draws = len(case["lam"])
        per = []
        for i in range(draws):
            lam, box = float(case["lam"][i]), None
            if lam != 1.0 and case["cutmix"][i]:
                box, lam = cutmix_bbox_and_lam(x0[i].shape, lam, correct_lam=True)
                box = [int(v) for v in box]
            per.append([float(lam), box])
        each = per if case["mode"] == "elem" else [per[min(i, N - 1 - i)] for i in range(N)]
    out["cases"].append({"case": case, "each": each, "x": xm.flatten().tolist(), "targets": t.flatten().tolist()})
json.dump(out, open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1], len(CASES), "cases")
