"""torchvision's FCOS trained on a COCO folder (`kiln make-detection`'s), as examples/fcos.rs
trains kiln's: ResNet-18 body, a 64-channel FPN P3-P7 (LastLevelP6P7), four GroupNorm convolutions
per head branch, images resized to SIZE by GeneralizedRCNNTransform, random horizontal flips,
SGD (lr 0.01, momentum 0.9, weight decay 1e-4), gradients clipped at 10, batch BATCH, EPOCHS
epochs; prints each epoch's training images/s (data loading included, 2 workers).

    python3 bench/torch_fcos.py DATA_DIR [--epochs 2] [--batch 16] [--size 128] [--threads 2]
"""
import argparse
import json
import os
import time

import torch
import torchvision
from torchvision.io import read_image
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOS
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


class CocoFolder(torch.utils.data.Dataset):
    def __init__(self, root):
        ann = json.load(open(os.path.join(root, "annotations.json")))
        self.root = root
        self.images = sorted(ann["images"], key=lambda i: i["id"])
        cats = sorted(c["id"] for c in ann["categories"])
        self.label = {c: i for i, c in enumerate(cats)}
        self.boxes = {i["id"]: [] for i in self.images}
        for a in ann["annotations"]:
            if not a.get("iscrowd", 0):
                x, y, w, h = a["bbox"]
                self.boxes[a["image_id"]].append((x, y, x + w, y + h, self.label[a["category_id"]]))
        self.num_classes = len(cats)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        info = self.images[i]
        img = read_image(os.path.join(self.root, "images", info["file_name"])).float() / 255
        b = self.boxes[info["id"]]
        boxes = torch.tensor([t[:4] for t in b], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([t[4] for t in b], dtype=torch.int64)
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return img, {"boxes": boxes, "labels": labels}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ds = CocoFolder(os.path.join(a.data, "train"))
    backbone = BackboneWithFPN(resnet18(), {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512],
                               a.channels, extra_blocks=LastLevelP6P7(a.channels, a.channels))
    model = FCOS(backbone, num_classes=ds.num_classes, min_size=a.size, max_size=a.size)
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=2,
                                         collate_fn=lambda b: tuple(zip(*b)), drop_last=True)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {a.threads} threads, "
          f"{len(ds)} images, batch {a.batch}, size {a.size}, {a.channels} channels")
    for epoch in range(1, a.epochs + 1):
        start, seen = time.perf_counter(), 0
        for images, targets in loader:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            seen += len(images)
        rate = seen / (time.perf_counter() - start)
        print(f"epoch {epoch}  train_loss {loss.item():.4f}  {rate:.1f} img/s")


if __name__ == "__main__":
    main()
