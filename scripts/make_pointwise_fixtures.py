"""Write the pointwise-operation fixture: torchvision.transforms.v2.functional on uint8 images.

Usage: python scripts/make_pointwise_fixtures.py crates/kiln-transforms/tests/fixtures/pointwise/cases.json
Needs: torch, torchvision, numpy.

Three images (CHW uint8, RGB or grey): uniform random 3x12x17; a low-contrast 3x10x13 with one flat
channel (autocontrast's and equalize's edge cases); a skewed grey 1x9x11. Each goes through invert,
posterize (1, 3, 7 bits), solarize (0, 100.5, 255), adjust_brightness (0, 0.35, 1.7),
adjust_contrast, adjust_saturation and adjust_sharpness (0, 0.4, 1.8), autocontrast and equalize on
the tensor path. Values are listed flat, CHW.
"""
import json, sys
import numpy as np
import torch, torchvision
import torchvision.transforms.v2.functional as F

rng = np.random.default_rng(7)
a = rng.integers(0, 256, (3, 12, 17), dtype=np.uint8)
b = rng.integers(60, 121, (3, 10, 13), dtype=np.uint8)
b[1] = 77
c = (rng.random((1, 9, 11)) ** 3 * 255).astype(np.uint8)

OPS = [
    ("invert", {}, lambda t: F.invert(t)),
    *[("posterize", {"bits": k}, (lambda k: lambda t: F.posterize(t, k))(k)) for k in (1, 3, 7)],
    *[("solarize", {"threshold": th}, (lambda th: lambda t: F.solarize(t, th))(th)) for th in (0.0, 100.5, 255.0)],
    *[("brightness", {"factor": f}, (lambda f: lambda t: F.adjust_brightness(t, f))(f)) for f in (0.0, 0.35, 1.7)],
    *[("contrast", {"factor": f}, (lambda f: lambda t: F.adjust_contrast(t, f))(f)) for f in (0.0, 0.4, 1.8)],
    *[("color", {"factor": f}, (lambda f: lambda t: F.adjust_saturation(t, f))(f)) for f in (0.0, 0.4, 1.8)],
    *[("sharpness", {"factor": f}, (lambda f: lambda t: F.adjust_sharpness(t, f))(f)) for f in (0.0, 0.4, 1.8)],
    ("autocontrast", {}, lambda t: F.autocontrast(t)),
    ("equalize", {}, lambda t: F.equalize(t)),
]

images = []
for name, img in (("random", a), ("low-contrast", b), ("grey", c)):
    t = torch.from_numpy(img)
    outs = [{"op": op, "args": args, "out": fn(t).flatten().tolist()} for op, args, fn in OPS]
    images.append({"name": name, "shape": list(img.shape), "data": img.flatten().tolist(), "outs": outs})
json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "images": images},
          open(sys.argv[1], "w"))
print("wrote", sys.argv[1], len(images), "images x", len(OPS), "ops")
