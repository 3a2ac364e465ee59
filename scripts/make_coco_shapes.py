"""Write examples/data/coco-shapes: a tiny COCO-style detection set for the detection demo
(`examples/configs/coco-detection.toml`, `kiln inspect`).

Usage: python scripts/make_coco_shapes.py examples/data/coco-shapes
Six PNGs of different sizes on a grey background with filled rectangles (person = red,
car = blue, dog = green), annotations in COCO's instances format: xywh boxes, category ids 1, 3
and 18 (not contiguous, as in COCO), one crowd box, one image without boxes.
"""
import json, os, sys
from PIL import Image, ImageDraw

out = sys.argv[1]
os.makedirs(os.path.join(out, "images"), exist_ok=True)
colours = {1: (220, 40, 40), 3: (40, 40, 220), 18: (40, 200, 40)}
spec = [
    ("street.png", 96, 64, [(3, 8, 8, 30, 20, 0), (18, 50, 30, 40, 30, 0)]),
    ("park.png", 64, 80, [(18, 10, 10, 20, 40, 0)]),
    ("crowd.png", 120, 72, [(1, 0, 0, 60, 72, 1), (1, 70, 10, 20, 50, 0), (3, 95, 40, 20, 20, 0)]),
    ("empty.png", 72, 72, []),
    ("garage.png", 80, 48, [(3, 4, 4, 36, 24, 0), (3, 42, 20, 34, 24, 0)]),
    ("walk.png", 56, 96, [(1, 10, 20, 16, 60, 0), (18, 30, 70, 20, 20, 0)]),
]
images, annotations = [], []
for image_id, (name, w, h, boxes) in enumerate(spec, start=1):
    img = Image.new("RGB", (w, h), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for cat, x, y, bw, bh, crowd in boxes:
        d.rectangle([x, y, x + bw - 1, y + bh - 1], fill=colours[cat])
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                            "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd})
    img.save(os.path.join(out, "images", name), optimize=True)
    images.append({"id": image_id, "file_name": name, "width": w, "height": h})
categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
with open(os.path.join(out, "annotations.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": categories}, f, indent=1)
