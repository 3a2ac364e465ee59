"""FCOS fixture for crates/kiln-models/tests/fcos_vs_torchvision.rs.

torchvision's FCOS on a ResNet-18 FPN backbone (`_resnet_fpn_extractor(resnet18(), 5,
returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))`, 3 classes), with every tensor of
its state dict set by a formula both sides compute (so no weights are stored): u_i = ((i *
2654435761 + fnv1a32(name)) mod 2^32) / 2^32, then by kind
  running_var: 0.5 + u;  running_mean: 0.2 (2u - 1);  1-D weight: 1 + 0.2 (2u - 1);
  1-D bias: 0.1 (2u - 1);  4-D weight: (2u - 1) sqrt(3 / fan_in)
computed in float64 and rounded to float32. The input [2, 3, 64, 96] is 2u - 1 of the name "input"; the two images given to the whole model
(64x96 and 64x80, values in 0..1) are u of "image0" and "image1".
Writes the state dict's names and shapes, and the head's outputs in eval mode.

    python3 scripts/make_fcos_fixture.py crates/kiln-models/tests/fixtures/fcos/cases.json
"""
import json
import sys

import numpy as np
import torch
import torchvision
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.fcos import FCOS
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


def fnv1a32(name):
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) % 2**32
    return h


def unit(name, n):
    i = np.arange(n, dtype=np.uint64)
    return ((i * np.uint64(2654435761) + np.uint64(fnv1a32(name))) % np.uint64(2**32)).astype(np.float64) / 2**32


def formula(name, shape):
    n = int(np.prod(shape))
    u = unit(name, n)
    if name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean"):
        v = 0.2 * (2 * u - 1)
    elif len(shape) == 1 and name.endswith("weight"):
        v = 1 + 0.2 * (2 * u - 1)
    elif len(shape) == 1:
        v = 0.1 * (2 * u - 1)
    else:
        fan_in = n // shape[0]
        v = (2 * u - 1) * np.sqrt(3.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def main(out):
    backbone = _resnet_fpn_extractor(resnet18(), 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = FCOS(backbone, num_classes=3).eval()
    state = model.state_dict()
    params = []
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        state[name] = torch.from_numpy(formula(name, list(t.shape)))
        params.append({"name": name, "shape": list(t.shape)})
    model.load_state_dict(state)
    x = torch.from_numpy((2 * unit("input", 2 * 3 * 64 * 96) - 1).astype(np.float32).reshape(2, 3, 64, 96))
    with torch.no_grad():
        features = list(model.backbone(x).values())
        head = model.head(features)
    # The whole model on two images of different sizes whose shorter side is min_size (no resize):
    # normalisation, padding to 64x96, the heads, post-processing (threshold 0.55, no cap: see below).
    model.transform.min_size = (64,)
    model.transform.max_size = 1000
    # Random weights score hundreds of locations within 1e-6 of each other; a higher threshold and
    # no cap keep the comparison off the knife-edge of the 100th detection.
    model.score_thresh = 0.55
    model.detections_per_img = 1000
    images = [torch.from_numpy(unit(f"image{i}", 3 * 64 * w).astype(np.float32).reshape(3, 64, w)) for i, w in enumerate([96, 80])]
    with torch.no_grad():
        detections = model(images)
    fixture_dets = [{"boxes": d["boxes"].tolist(), "scores": d["scores"].tolist(), "labels": d["labels"].tolist()}
                    for d in detections]
    # The training loss (FCOS.compute_loss) on the heads' eval-mode outputs for two 128-pixel-high
    # images: three overlapping boxes of three sizes on the first, none on the second.
    model.transform.min_size = (128,)
    loss_images = [torch.from_numpy(unit(f"loss_image{i}", 3 * 128 * w).astype(np.float32).reshape(3, 128, w))
                   for i, w in enumerate([160, 128])]
    loss_boxes = [[[10, 12, 50, 60], [20, 10, 150, 120], [30, 30, 70, 90]], []]
    loss_labels = [[0, 2, 1], []]
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(l, dtype=torch.int64)}
               for b, l in zip(loss_boxes, loss_labels)]
    with torch.no_grad():
        image_list, targets = model.transform(loss_images, targets)
        feats = list(model.backbone(image_list.tensors).values())
        head_outputs = model.head(feats)
        anchors = model.anchor_generator(image_list, feats)
        losses = model.compute_loss(targets, head_outputs, anchors, [f.size(2) * f.size(3) for f in feats])
    fixture = {
        "loss": {"boxes": loss_boxes, "labels": loss_labels, "padded": list(image_list.tensors.shape[-2:]),
                 **{k: float(v) for k, v in losses.items()}},
        "detections": fixture_dets,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "params": params,
        "level_sizes": [list(f.shape[-2:]) for f in features],
        "cls_logits": head["cls_logits"].flatten().tolist(),
        "bbox_regression": head["bbox_regression"].flatten().tolist(),
        "bbox_ctrness": head["bbox_ctrness"].flatten().tolist(),
        "shapes": {k: list(v.shape) for k, v in head.items()},
    }
    with open(out, "w") as f:
        json.dump(fixture, f)
    print({k: list(v.shape) for k, v in head.items()}, len(params), "tensors",
          [len(d["scores"]) for d in fixture_dets], "detections", {k: float(v) for k, v in losses.items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/kiln-models/tests/fixtures/fcos/cases.json")
