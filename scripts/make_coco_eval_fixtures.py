"""COCO evaluation fixtures for crates/kiln-train/tests/coco_eval_vs_pycocotools.rs.

Writes, per case, ground truth (GT.json) and detections (DT.json) made by a seeded numpy generator,
and pycocotools' COCOeval (bbox) summary and per-category AP (precision[:, :, k, 0, -1] averaged
over defined values, as detectron2 does) in expected.json.

    pip install pycocotools==2.0.11 numpy
    python3 scripts/make_coco_eval_fixtures.py crates/kiln-train/tests/fixtures/coco_eval
"""
import contextlib
import importlib.metadata
import io
import json
import os
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def make_case(rng, n_images, cat_ids, per_image, crowd_p, empty_p, fp_per_image, dup_p, zero_id=False,
              extra_cat=None, score_decimals=2, many_dets_image=False):
    images, anns, dets = [], [], []
    ann_id = 0 if zero_id else 1
    for i in range(n_images):
        img_id = 1000 + 7 * i
        W, H = int(rng.integers(160, 640)), int(rng.integers(160, 480))
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": W, "height": H})
        n = 0 if rng.random() < empty_p else int(rng.integers(1, per_image + 1))
        for _ in range(n):
            # sizes spanning small (<32²), medium and large (>96²) areas
            w = float(np.round(rng.choice([rng.uniform(4, 30), rng.uniform(33, 95), rng.uniform(100, 200)]), 2))
            h = float(np.round(w * rng.uniform(0.5, 1.5), 2))
            x = float(np.round(rng.uniform(0, max(1, W - w)), 2))
            y = float(np.round(rng.uniform(0, max(1, H - h)), 2))
            cat = int(rng.choice(cat_ids))
            crowd = int(rng.random() < crowd_p)
            area = float(np.round(w * h * rng.uniform(0.6, 1.0), 2))  # a segmentation's area is below its box's
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": crowd})
            ann_id += 1
            # detections near the object: jittered, sometimes twice, sometimes the wrong class
            for _ in range(1 + int(rng.random() < dup_p)):
                if rng.random() < 0.15:
                    continue
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                det_cat = cat if rng.random() < 0.85 else int(rng.choice(cat_ids))
                dets.append({"image_id": img_id, "category_id": det_cat,
                             "bbox": [round(x + j[0], 2), round(y + j[1], 2), round(max(1.0, w + j[2]), 2),
                                      round(max(1.0, h + j[3]), 2)],
                             "score": round(float(rng.uniform(0.05, 1.0)), score_decimals)})
        n_fp = int(rng.integers(0, fp_per_image + 1))
        if many_dets_image and i == 0:
            n_fp = 150  # more than maxDets=100 on one image and category
        for _ in range(n_fp):
            w = float(rng.uniform(5, 150))
            h = float(rng.uniform(5, 150))
            cat = int(cat_ids[0]) if (many_dets_image and i == 0) else int(rng.choice(cat_ids))
            dets.append({"image_id": img_id, "category_id": cat,
                         "bbox": [round(float(rng.uniform(0, W - 5)), 2), round(float(rng.uniform(0, H - 5)), 2),
                                  round(w, 2), round(h, 2)],
                         "score": round(float(rng.uniform(0.0, 0.6)), score_decimals)})
    if extra_cat is not None:
        dets.append({"image_id": images[0]["id"], "category_id": extra_cat, "bbox": [1, 1, 10, 10], "score": 0.99})
    order = rng.permutation(len(dets))
    dets = [dets[k] for k in order]
    cats = [{"id": int(c), "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def evaluate(gt_path, dt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ev.summarize()
    per_cat = []
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p50 = ev.eval["precision"][0, :, k, 0, -1]
        per_cat.append({"id": int(cid),
                        "ap": float(np.mean(p[p > -1])) if (p > -1).any() else -1.0,
                        "ap50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0})
    return [float(s) for s in ev.stats], per_cat, printed.getvalue()


def main(out):
    rng = np.random.default_rng(2026)
    cases = {
        "mixed": make_case(rng, 24, [1, 3, 7, 20, 90], 6, 0.1, 0.2, 4, 0.3, extra_cat=55, many_dets_image=True),
        "crowded": make_case(rng, 10, [2, 4], 25, 0.3, 0.0, 10, 0.6, score_decimals=1),
        "many-categories": make_case(rng, 30, list(range(1, 81)), 8, 0.05, 0.1, 6, 0.2),
        "zero-id": make_case(rng, 8, [1, 2, 3], 5, 0.0, 0.0, 2, 0.2, zero_id=True),
        "few": make_case(rng, 3, [5, 6], 2, 0.0, 0.34, 1, 0.0),
    }
    os.makedirs(out, exist_ok=True)
    expected = {"pycocotools": importlib.metadata.version("pycocotools"), "numpy": np.__version__, "cases": {}}
    for name, (gt, dets) in cases.items():
        gt_path = os.path.join(out, f"{name}-gt.json")
        dt_path = os.path.join(out, f"{name}-dt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(dt_path, "w") as f:
            json.dump(dets, f)
        stats, per_cat, printed = evaluate(gt_path, dt_path)
        expected["cases"][name] = {"stats": stats, "per_category": per_cat, "printed": printed,
                                   "annotations": len(gt["annotations"]), "detections": len(dets)}
        print(name, len(gt["annotations"]), "annotations", len(dets), "detections", np.round(stats, 4))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/kiln-train/tests/fixtures/coco_eval")
