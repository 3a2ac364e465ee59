"""Check that a kiln safetensors export loads into PyTorch and gives the fixture's logits.

Usage: python scripts/check_export_in_torch.py EXPORTED.safetensors FIXTURE_DIR
FIXTURE_DIR is a folder from make_resnet_fixture.py (its manifest names the architecture).
Loads with load_state_dict(strict=True), prints the max |logits - fixture logits| and the
kiln.pretrained metadata, and exits non-zero above 1e-4.
"""
import json, os, sys
import numpy as np, torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
path, fixture = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(fixture, "manifest.json")))
arch = manifest.get("arch", "cifar_resnet20")
if arch == "cifar_resnet20":
    sys.argv = [sys.argv[0], "/dev/null"]  # the fixture script's classes, without running it
    src = open(os.path.join(os.path.dirname(__file__), "make_resnet_fixture.py")).read()
    ns = {}
    exec(src.split("args = sys.argv")[0], ns)
    m = ns["CifarResNet20"]()
else:
    import torchvision
    width, depth = manifest.get("width_mult", 1.0), manifest.get("depth_mult")
    if arch.startswith("efficientnet_b") and (width != 1.0 or depth):
        from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
        setting, last = _efficientnet_conf(arch, width_mult=width, depth_mult=depth or 1.0)
        m = EfficientNet(setting, 0.2, last_channel=last, num_classes=manifest["logits"][1])
    else:
        kwargs = {"width_mult": width} if width != 1.0 else {}
        m = getattr(torchvision.models, arch)(weights=None, num_classes=manifest["logits"][1], **kwargs)
missing, unexpected = m.load_state_dict(load_file(path), strict=True)
m.eval()
x = torch.from_numpy(np.fromfile(os.path.join(fixture, "input.f32"), dtype="<f4").reshape(manifest["input"]))
want = np.fromfile(os.path.join(fixture, "logits.f32"), dtype="<f4").reshape(manifest["logits"])
with torch.no_grad():
    got = m(x).numpy()
worst = float(np.abs(got - want).max())
with safe_open(path, "pt") as f:
    meta = f.metadata()
print(f"strict load ok; max |PyTorch(export) - fixture| = {worst:.3e}; metadata: {meta}")
sys.exit(0 if worst < 1e-4 else 1)
