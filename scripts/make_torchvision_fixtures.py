"""Write the transform fixtures: torchvision's (and mmcv-style numpy's) outputs for one small image.

Usage: python scripts/make_torchvision_fixtures.py crates/kiln-transforms/tests/fixtures/torchvision

Input: a 11x13 random RGB PNG (lossless, so every decoder agrees). Outputs are float32 CHW arrays
stored raw (little-endian) and listed in manifest.json with their shapes. Only exact operations are
used (crop, flip, pad, ToTensor, Normalize), so kiln must match them bit for bit.
Needs: torch, torchvision, numpy, pillow, opencv-python-headless.
"""
import json, os, sys
import cv2, numpy as np, torch, torchvision
import torchvision.transforms.functional as F
from PIL import Image

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(4)
rgb = rng.integers(0, 256, size=(11, 13, 3), dtype=np.uint8)
Image.fromarray(rgb).save(os.path.join(out, "input.png"))
x = F.pil_to_tensor(Image.open(os.path.join(out, "input.png")))  # uint8 CHW RGB

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CIFAR = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])

def to_norm(t, mean, std):  # ToTensor + Normalize, as torchvision computes them
    return F.normalize(t.float().div(255), mean, std)

cases = {
    # CenterCrop(7, 9) then ImageNet normalisation.
    "center_crop_7x9_imagenet": to_norm(F.center_crop(x, [7, 9]), *IMAGENET),
    # Horizontal flip then CIFAR-10 normalisation.
    "hflip_cifar10": to_norm(F.hflip(x), *CIFAR),
    # Crop rows 3..9, columns 2..12 (what RandomResizedCrop does before resizing), ImageNet.
    "crop_3_2_6x10_imagenet": to_norm(F.crop(x, 3, 2, 6, 10), *IMAGENET),
    # RandomCrop(8, padding=2, padding_mode="reflect") at corner (1, 4), ImageNet.
    "pad2_reflect_crop_1_4_8x8_imagenet": to_norm(F.crop(F.pad(x, 2, padding_mode="reflect"), 1, 4, 8, 8), *IMAGENET),
    # RandomCrop(8, padding=2) (zeros) at corner (0, 0), CIFAR-10.
    "pad2_zero_crop_0_0_8x8_cifar10": to_norm(F.crop(F.pad(x, 2), 0, 0, 8, 8), *CIFAR),
}
# Caffe preprocessing (mmcv style): BGR float32 minus [103.53, 116.28, 123.675], std 1, CHW.
bgr = cv2.imread(os.path.join(out, "input.png"), cv2.IMREAD_COLOR).astype(np.float32)
caffe = (bgr - np.array([103.53, 116.28, 123.675], np.float32)) / np.array([1, 1, 1], np.float32)
cases["caffe_imagenet_bgr"] = torch.from_numpy(np.ascontiguousarray(caffe.transpose(2, 0, 1)))

# Hue (torchvision's PIL path: RGB -> PIL HSV, shift H with uint8 wrap-around, back), on a 16x16
# random image with greys and pure colours in its first row; stored as raw RGB u8.
hue_img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
hue_img[0, :8] = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [1, 2, 3]]
Image.fromarray(hue_img).save(os.path.join(out, "hue_input.png"))
hue_cases = []
for factor in (-0.5, -0.13, 0.0, 0.07, 0.31, 0.5):
    res = np.asarray(F.adjust_hue(Image.open(os.path.join(out, "hue_input.png")), factor))
    name = f"hue_{factor:+.2f}"
    with open(os.path.join(out, name + ".u8"), "wb") as f:
        f.write(np.ascontiguousarray(res).tobytes())
    hue_cases.append({"name": name, "factor": factor})

manifest = {"torchvision": torchvision.__version__, "torch": torch.__version__, "cases": [], "hue": hue_cases}
for name, t in cases.items():
    arr = t.contiguous().numpy().astype("<f4")
    with open(os.path.join(out, name + ".f32"), "wb") as f:
        f.write(arr.tobytes())
    manifest["cases"].append({"name": name, "shape": list(arr.shape)})
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print("wrote", len(cases), "cases to", out)
