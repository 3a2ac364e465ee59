"""Write a weight-import fixture: a model with torchvision's module names and random weights
(BatchNorm running statistics included), its state dict as .safetensors and .pth, an input and
PyTorch's eval-mode logits for it. The default model is a CIFAR ResNet-20.

Usage: python scripts/make_resnet_fixture.py crates/kiln-models/tests/fixtures/cifar_resnet20
       python scripts/make_resnet_fixture.py --arch resnet18 [--weights FILE.pth] [--calibrate] /tmp/r18
       python scripts/make_resnet_fixture.py --arch mobilenet_v3_small --width-mult 0.5 --num-classes 10 \
           --size 64 --calibrate crates/kiln-models/tests/fixtures/mobilenet_v3_small_w050
       python scripts/make_resnet_fixture.py --arch efficientnet_b0 --width-mult 0.35 --depth-mult 0.5 \
           --num-classes 10 --size 64 --calibrate crates/kiln-models/tests/fixtures/efficientnet_b0_w035_d050
       python scripts/make_resnet_fixture.py --arch convnext_tiny --depths 1,1,2,1 --widths 16,32,48,64 \
           --num-classes 10 --size 64 crates/kiln-models/tests/fixtures/convnext_d1121_w16
       python scripts/make_resnet_fixture.py --arch vit_b_16 --patch 8 --layers 2 --heads 4 --hidden 32 \
           --mlp 48 --num-classes 10 --size 64 crates/kiln-models/tests/fixtures/vit_p8_l2_h4_d32
--arch takes any torchvision classification model name; --width-mult, --depth-mult, --depths,
--widths, --num-classes and --size; for a ViT, --patch, --layers, --heads, --hidden and --mlp
(the input's height and width, 224 by default) are passed on / used for the input.
The second form writes a full torchvision model (random weights and BatchNorm statistics unless
--weights gives a real state dict) for the test `full_torchvision_resnet_when_a_fixture_is_supplied`
(run it with KILN_TORCHVISION_FIXTURE=/tmp/r18); it is too large to commit.
--calibrate sets the BatchNorm running statistics from the network's own activations on random
inputs (as a trained network's are): activations stay normalised through the depth and the logits
have the magnitude of a real classifier's (a few units), instead of the hundreds that arbitrary
statistics compound to in ResNet-34/50.
Needs: torch, safetensors (and torchvision for --arch). The layout follows torchvision's ResNet (conv1/bn1, layerN.M.conv1..,
downsample.0/1, fc) with a 3x3 stem, no max-pool, widths 16/32/64 and 3 blocks per stage.
"""
import json, os, sys
import torch, torch.nn as nn
from safetensors.torch import save_file

from cifar_resnet import CifarResNet20

args = sys.argv[1:]
arch = "cifar_resnet20"; weights = None
if "--arch" in args:
    i = args.index("--arch"); arch = args[i + 1]; del args[i:i + 2]
calibrate = "--calibrate" in args
if calibrate:
    args.remove("--calibrate")
if "--weights" in args:
    i = args.index("--weights"); weights = args[i + 1]; del args[i:i + 2]
def option(name, cast, default):
    if name not in args:
        return default
    i = args.index(name); v = cast(args[i + 1]); del args[i:i + 2]
    return v
width_mult = option("--width-mult", float, None)
depth_mult = option("--depth-mult", float, None)
int_list = lambda v: [int(x) for x in v.split(",")]
depths = option("--depths", int_list, None)
widths = option("--widths", int_list, None)
num_classes = option("--num-classes", int, None)
size = option("--size", int, 224)
vit = {k: option("--" + flag, int, None) for k, flag in [("patch_size", "patch"), ("num_layers", "layers"),
       ("num_heads", "heads"), ("hidden_dim", "hidden"), ("mlp_dim", "mlp")]}
out = args[0]; os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
if arch == "cifar_resnet20":
    m = CifarResNet20(); shape = (2, 3, 32, 32)
else:
    import torchvision
    kwargs = {k: v for k, v in [("width_mult", width_mult), ("num_classes", num_classes)] if v is not None}
    if arch.startswith("vit") and any(v is not None for v in vit.values()):
        # vit_b_16() fixes its shape: build torchvision's VisionTransformer itself.
        from torchvision.models.vision_transformer import VisionTransformer
        m = VisionTransformer(image_size=size, num_classes=num_classes or 1000, **vit)
    elif arch.startswith("convnext") and (depths or widths):
        # convnext_tiny() fixes its stages: build from torchvision's own block config instead.
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt
        outs = widths[1:] + [None]
        setting = [CNBlockConfig(w, o, n) for w, o, n in zip(widths, outs, depths)]
        m = ConvNeXt(setting, stochastic_depth_prob=0.1, num_classes=num_classes or 1000)
    elif arch.startswith("efficientnet_b") and (width_mult or depth_mult):
        # efficientnet_bN() fixes its multipliers: build from torchvision's own config instead.
        from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
        setting, last = _efficientnet_conf(arch, width_mult=width_mult or 1.0, depth_mult=depth_mult or 1.0)
        m = EfficientNet(setting, 0.2, last_channel=last, num_classes=num_classes or 1000)
    else:
        m = getattr(torchvision.models, arch)(weights=None, **kwargs)
    shape = (2, 3, size, size)
    if weights:
        m.load_state_dict(torch.load(weights, map_location="cpu"))
# Non-trivial BatchNorm state so that eval mode is really tested.
for mod in ([] if weights else m.modules()):
    if isinstance(mod, nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.5, 0.5); mod.running_var.uniform_(0.5, 2.0)
        mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.2, 0.2)
if arch != "cifar_resnet20" and not weights:
    # torchvision starts some linear layers at N(0, 0.01) and every bias at 0, which leaves logits
    # of ~1e-3 and untested biases: draw them wider so the comparison means something.
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0.0, mod.in_features ** -0.5)
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None:
            mod.bias.data.uniform_(-0.2, 0.2)
        if isinstance(mod, nn.LayerNorm):
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.2, 0.2)
        if isinstance(mod, nn.MultiheadAttention):
            # Xavier weights and zero biases: draw them as for the linear layers.
            nn.init.normal_(mod.in_proj_weight, 0.0, mod.embed_dim ** -0.5)
            mod.in_proj_bias.data.uniform_(-0.2, 0.2)
        if hasattr(mod, "class_token"):
            # Zero and N(0, 0.02) at the start: wide enough that a wrong token order shows.
            mod.class_token.data.normal_(0.0, 1.0)
        if hasattr(mod, "pos_embedding"):
            mod.pos_embedding.data.normal_(0.0, 0.5)
        if hasattr(mod, "layer_scale"):
            # ConvNeXt starts it at 1e-6, which would hide every block.
            mod.layer_scale.data.uniform_(0.5, 1.5)
if calibrate and not weights:
    # Cumulative averages (momentum=None) over a few batches: the running statistics become those
    # of the activations this network produces, layer after layer.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats(); mod.momentum = None
    m.train()
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn(8, *shape[1:]))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.1
m.eval()
x = torch.randn(*shape)
with torch.no_grad():
    y = m(x)
sd = {k: v.contiguous() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
save_file(sd, os.path.join(out, "weights.safetensors"))
torch.save(m.state_dict(), os.path.join(out, "weights.pth"))
x.numpy().astype("<f4").tofile(os.path.join(out, "input.f32"))
y.numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
json.dump({"arch": arch, "width_mult": width_mult or 1.0, "depth_mult": depth_mult, "depths": depths, "widths": widths, "vit": vit, "torch": torch.__version__, "batchnorm": "real" if weights else ("calibrated" if calibrate else "random"), "input": list(x.shape), "logits": list(y.shape)}, open(os.path.join(out, "manifest.json"), "w"))
print("logits", y[0, :4].tolist())
