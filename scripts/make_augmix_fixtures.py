"""Write the AugMix and affine-sampling fixture: torchvision.transforms.v2 on uint8 images.

Usage: python scripts/make_augmix_fixtures.py crates/kiln-transforms/tests/fixtures/augmix/cases.json
Needs: torch, torchvision, numpy.

Part 1, the affine operations as the automatic augmentations call them (F.affine with center
[0, 0] for the shears, F.rotate), under nearest and bilinear interpolation, with fill None, one
value, and one value per channel, on three images: uniform random 3x12x17, a smooth 3x16x16
gradient (where bilinear weights show), and a grey 1x9x11.

Part 2, AugMix itself: T.AugMix's forward on those images under several settings, with its draws
recorded (a subclass wraps _sample_dirichlet and _apply_image_or_video_transform; a chain starts
at each draw of its depth, torch.randint(low=1, high=4), or every chain_depth operations when the
depth is fixed: an operation may return its input itself, e.g. Color on a grey image, so storage
cannot tell). kiln replays the draws through its own mix and compares the images. Values are
listed flat, CHW.
"""
import json, math, sys
import numpy as np
import torch, torchvision
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode as IM

rng = np.random.default_rng(21)
a = rng.integers(0, 256, (3, 12, 17), dtype=np.uint8)
yy, xx = np.mgrid[0:16, 0:16]
g = np.stack([xx * 15 + 7, yy * 13 + 20, (xx + yy) * 7 + 3]).astype(np.uint8)
c = (rng.random((1, 9, 11)) ** 2 * 255).astype(np.uint8)
IMAGES = [("random", a), ("gradient", g), ("grey", c)]

def affine_op(op, m, interpolation, fill):
    if op == "shear-x":
        return lambda t: F.affine(t, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0], interpolation=interpolation, fill=fill, center=[0, 0])
    if op == "shear-y":
        return lambda t: F.affine(t, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))], interpolation=interpolation, fill=fill, center=[0, 0])
    if op == "translate-x":
        return lambda t: F.affine(t, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0], interpolation=interpolation, fill=fill)
    if op == "translate-y":
        return lambda t: F.affine(t, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0], interpolation=interpolation, fill=fill)
    if op == "rotate":
        return lambda t: F.rotate(t, angle=m, interpolation=interpolation, fill=fill)
    raise ValueError(op)

OPS = [("shear-x", 0.3), ("shear-x", -0.2), ("shear-y", 0.25), ("translate-x", 3), ("translate-x", -5),
       ("translate-y", 4), ("rotate", 17.5), ("rotate", -30.0), ("rotate", 90.0)]
affine = []
for name, img in IMAGES:
    t = torch.from_numpy(img)
    fills = [None, [37.0]] + ([[200.0, 10.0, 90.5]] if img.shape[0] == 3 else [])
    for interp in (IM.NEAREST, IM.BILINEAR):
        for fill in fills:
            for op, m in OPS:
                out = affine_op(op, m, interp, fill)(t)
                affine.append({"image": name, "op": op, "magnitude": m, "interpolation": interp.value,
                               "fill": fill, "out": out.flatten().tolist()})

class Recorded(T.AugMix):
    def _sample_dirichlet(self, params):
        out = super()._sample_dirichlet(params)
        self.dirichlets.append(out.clone())
        return out
    def _apply_image_or_video_transform(self, image, transform_id, magnitude, interpolation, fill):
        self.calls.append((transform_id, float(magnitude)))
        return super()._apply_image_or_video_transform(image, transform_id, magnitude, interpolation, fill)

_randint = torch.randint
def randint_marking_chains(*args, **kwargs):
    if kwargs.get("low") == 1 and kwargs.get("high") == 4:
        CURRENT.calls.append("chain")
    return _randint(*args, **kwargs)
torch.randint = randint_marking_chains

SETTINGS = [
    ("random", {}, 1), ("random", {}, 2), ("random", {}, 3),
    ("gradient", {}, 4),
    ("gradient", {"severity": 6, "mixture_width": 2, "chain_depth": 2, "alpha": 0.5, "all_ops": False}, 5),
    ("random", {"interpolation": "nearest", "fill": [10.0, 20.0, 30.0]}, 6),
    ("gradient", {"severity": 10, "mixture_width": 4, "alpha": 3.0, "fill": [128.0]}, 7),
    ("grey", {}, 8), ("grey", {"severity": 1, "chain_depth": 3}, 9),
]
augmix = []
images = dict(IMAGES)
for name, settings, seed in SETTINGS:
    kw = dict(settings)
    if "interpolation" in kw:
        kw["interpolation"] = IM(kw["interpolation"])
    if "fill" in kw and len(kw["fill"]) == 1:
        kw["fill"] = kw["fill"][0]
    aug = Recorded(**kw)
    aug.dirichlets, aug.calls = [], []
    CURRENT = aug
    t = torch.from_numpy(images[name]).clone()
    torch.manual_seed(seed)
    out = aug(t)
    chains = []
    depth = kw.get("chain_depth", -1)
    for call in aug.calls:
        if call == "chain" or (depth > 0 and (not chains or len(chains[-1]) == depth)):
            chains.append([])
        if call != "chain":
            chains[-1].append(list(call))
    beta = aug.dirichlets[0][0].tolist()
    weights = aug.dirichlets[1][0].tolist()
    assert len(chains) == len(weights), (chains, weights)
    augmix.append({"image": name, "settings": settings, "seed": seed, "beta": beta, "weights": weights,
                   "chains": chains, "out": out.flatten().tolist()})

json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__,
           "images": [{"name": n, "shape": list(i.shape), "data": i.flatten().tolist()} for n, i in IMAGES],
           "affine": affine, "augmix": augmix}, open(sys.argv[1], "w"))
print("wrote", sys.argv[1], len(affine), "affine cases,", len(augmix), "AugMix cases")
