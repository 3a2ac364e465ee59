"""Write the pointwise-operation fixture: torchvision.transforms.v2.functional on uint8 images.

Usage: python scripts/make_pointwise_fixtures.py crates/kiln-transforms/tests/fixtures/pointwise/cases.json
Needs: torch, torchvision, numpy.

Three images (CHW uint8, RGB or grey): uniform random 3x12x17; a low-contrast 3x10x13 with one flat
channel (autocontrast's and equalize's edge cases); a skewed grey 1x9x11. Each goes through invert,
posterize (1, 3, 7 bits), solarize (0, 100.5, 255), adjust_brightness (0, 0.35, 1.7),
adjust_contrast, adjust_saturation and adjust_sharpness (0, 0.4, 1.8), autocontrast and equalize on
the tensor path; and AutoAugment's geometric operations as its v2 transform calls them (nearest,
zero fill): shear-x, shear-y, translate-x, translate-y, rotate. Values are listed flat, CHW.
"""
import json, math, sys
import numpy as np
import torch, torchvision
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode
NEAREST = InterpolationMode.NEAREST

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
    # AutoAugment's geometric operations, as torchvision v2's _apply_image_or_video_transform calls them.
    *[("shear-x", {"magnitude": m}, (lambda m: lambda t: F.affine(t, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0], interpolation=NEAREST, center=[0, 0]))(m)) for m in (0.3, -0.2)],
    *[("shear-y", {"magnitude": m}, (lambda m: lambda t: F.affine(t, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))], interpolation=NEAREST, center=[0, 0]))(m)) for m in (0.25, -0.33)],
    *[("translate-x", {"pixels": p}, (lambda p: lambda t: F.affine(t, angle=0.0, translate=[int(p), 0], scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST))(p)) for p in (3, -5)],
    *[("translate-y", {"pixels": p}, (lambda p: lambda t: F.affine(t, angle=0.0, translate=[0, int(p)], scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST))(p)) for p in (4, -2)],
    *[("rotate", {"degrees": d}, (lambda d: lambda t: F.rotate(t, angle=d, interpolation=NEAREST))(d)) for d in (17.5, -30.0, 90.0, 180.0)],
    ("equalize", {}, lambda t: F.equalize(t)),
]

images = []
for name, img in (("random", a), ("low-contrast", b), ("grey", c)):
    t = torch.from_numpy(img)
    outs = [{"op": op, "args": args, "out": fn(t).flatten().tolist()} for op, args, fn in OPS]
    images.append({"name": name, "shape": list(img.shape), "data": img.flatten().tolist(), "outs": outs})
# The policies: their magnitude tables, and each operation applied through the policy's own
# _apply_image_or_video_transform at two magnitudes of its table (the random draws are kiln's own).
import torchvision.transforms.v2 as T
taw, ra = T.TrivialAugmentWide(), T.RandAugment()
def table(space, bins, h, w):
    return {op: (None if fn(bins, h, w) is None else [float(v) for v in fn(bins, h, w)]) for op, (fn, _) in space.items()}
tables = {"trivial-augment-wide": table(taw._AUGMENTATION_SPACE, 31, 12, 17),
          "rand-augment": table(ra._AUGMENTATION_SPACE, 31, 12, 17),
          "rand-augment-10": table(ra._AUGMENTATION_SPACE, 10, 9, 11)}
policy_ops = []
t = torch.from_numpy(a)
for op, mags in tables["trivial-augment-wide"].items():
    for m in ([0.0] if mags is None else [mags[7], -mags[30] if op not in ("Posterize", "Solarize") else mags[30]]):
        out = taw._apply_image_or_video_transform(t, op, m, interpolation=taw.interpolation, fill=taw._fill)
        policy_ops.append({"op": op, "magnitude": m, "out": out.flatten().tolist()})
for op in ("Invert",):
    out = taw._apply_image_or_video_transform(t, op, 0.0, interpolation=taw.interpolation, fill=taw._fill)
    policy_ops.append({"op": op, "magnitude": 0.0, "out": out.flatten().tolist()})
from torchvision.transforms import AutoAugmentPolicy
aa = T.AutoAugment()
tables["auto-augment"] = table(aa._AUGMENTATION_SPACE, 10, 12, 17)
policies = {p.value: [[list(step) for step in sub] for sub in T.AutoAugment(p)._policies] for p in AutoAugmentPolicy}
json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "images": images,
           "tables": tables, "policy_ops": policy_ops, "auto_augment_policies": policies}, open(sys.argv[1], "w"))
print("wrote", sys.argv[1], len(images), "images x", len(OPS), "ops")
