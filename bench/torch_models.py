"""PyTorch peer of examples/bench_train.rs: the same models, batch, random data and SGD rule.

    python3 bench/torch_models.py --model reference|resnet18-cifar|NAME --mode train|infer [--steps N]

NAME: any torchvision classification model (mobilenet_v3_large, ...), on 224x224 inputs.

reference: Net of ../shared/bench/torch_fmnist.py (Conv3x3 1->32 no bias, BN, ReLU, MaxPool2;
Conv3x3 32->64 no bias, BN, ReLU, MaxPool2; Linear 3136->128 no bias, BN1d, ReLU; Linear 128->10).
resnet18-cifar: torchvision resnet18 with a 3x3 stride-1 stem and no max-pool (as
../shared/bench/torch_resnet_cifar.py). SGD momentum 0.9, weight decay 5e-4, lr 0.05.
Prints train_images_per_s= / infer_images_per_s= and peak_rss_mb= (ru_maxrss of this process).
"""
import argparse, resource, time
import torch, torch.nn as nn, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--model", default="reference")
p.add_argument("--mode", default="train")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--steps", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 32, 3, padding=1, bias=False); s.b1 = nn.BatchNorm2d(32)
        s.c2 = nn.Conv2d(32, 64, 3, padding=1, bias=False); s.b2 = nn.BatchNorm2d(64)
        s.f1 = nn.Linear(64 * 7 * 7, 128, bias=False); s.b3 = nn.BatchNorm1d(128)
        s.f2 = nn.Linear(128, 10)

    def forward(s, x):
        x = F.max_pool2d(F.relu(s.b1(s.c1(x))), 2)
        x = F.max_pool2d(F.relu(s.b2(s.c2(x))), 2)
        return s.f2(F.relu(s.b3(s.f1(x.flatten(1)))))


if a.model == "reference":
    m, chw, steps = Net(), (1, 28, 28), 40
elif a.model == "resnet18-cifar":
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); m.maxpool = nn.Identity()
    chw, steps = (3, 32, 32), 6
else:
    # A torchvision classification model by name (kiln's registry uses the same names): 224x224,
    # 1000 classes, as examples/bench_train.rs runs kiln's.
    import torchvision
    if a.model == "vit_s_16":
        # ViT-S/16 (timm's vit_small_patch16_224 shape) in torchvision's module, as kiln's preset.
        from torchvision.models.vision_transformer import VisionTransformer
        torchvision.models.vit_s_16 = lambda num_classes: VisionTransformer(224, 16, 12, 6, 384, 1536, num_classes=num_classes)
    if not hasattr(torchvision.models, a.model):
        raise SystemExit(f"unknown model {a.model}")
    m, chw, steps = getattr(torchvision.models, a.model)(num_classes=1000), (3, 224, 224), 3
steps = a.steps or steps
x = torch.randn(a.batch, *chw)
y = torch.arange(a.batch) * 7 % 10  # classes 0-9 of any head
if a.mode == "train":
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    m.train()
    for i in range(steps + 2):
        if i == 2: t0 = time.perf_counter()
        loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step(); loss.item()
else:
    m.eval()
    with torch.no_grad():
        for i in range(steps + 2):
            if i == 2: t0 = time.perf_counter()
            m(x).numpy()
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{a.mode}_images_per_s={steps * a.batch / dt:.1f} steps={steps} batch={a.batch} peak_rss_mb={rss:.0f}")
