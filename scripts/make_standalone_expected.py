"""Write the standalone example's inputs and PyTorch's answer for them.

- examples/standalone/images/<class>/<n>.png: six real Fashion-MNIST test images (two each of
  trouser, bag, ankle boot) from the vendored subset, as grey PNGs.
- examples/standalone/expected.json: PyTorch's eval-mode logits for each image, in ImageFolder's
  order, from the CIFAR ResNet-20 fixture (crates/kiln-models/tests/fixtures/cifar_resnet20,
  random weights), with the pixels as cv2.imread gives them (grey replicated to 3 channels),
  /255, normalised with kiln's CIFAR-10 preset.

Usage: python scripts/make_standalone_expected.py   (from the repository root; needs torch, numpy, PIL)
"""
import gzip, json, os, struct
import numpy as np, torch
from PIL import Image
from cifar_resnet import CifarResNet20

OUT = "examples/standalone"
CLASSES = {1: "trouser", 8: "bag", 9: "ankle-boot"}
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32)

def idx(path):
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

images = idx("data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz")
labels = idx("data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz")
for label, name in CLASSES.items():
    os.makedirs(f"{OUT}/images/{name}", exist_ok=True)
    for n, i in enumerate(np.nonzero(labels == label)[0][:2]):
        Image.fromarray(images[i]).save(f"{OUT}/images/{name}/{n}.png")

model = CifarResNet20()
model.load_state_dict(torch.load("crates/kiln-models/tests/fixtures/cifar_resnet20/weights.pth"))
model.eval()
rows = []
for name in sorted(CLASSES.values()):  # ImageFolder's order: classes, then files, sorted
    for f in sorted(os.listdir(f"{OUT}/images/{name}")):
        grey = np.asarray(Image.open(f"{OUT}/images/{name}/{f}"), dtype=np.float32) / 255
        x = (np.repeat(grey[:, :, None], 3, axis=2) - MEAN) / STD
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])[0]
        rows.append({"path": f"{name}/{f}", "logits": [float(v) for v in logits]})
json.dump({"torch": torch.__version__, "images": rows}, open(f"{OUT}/expected.json", "w"), indent=1)
print(f"wrote {len(rows)} images and their logits under {OUT}")
