"""Peer: torchvision's input pipeline on a JPEG ImageFolder (images/s), the kiln half being
examples/pipeline.rs. Run both with `bash bench/pipeline.sh`.

Usage: python bench/torch_pipeline.py ROOT [--workers 2] [--batch 64] [--size 224] [--epochs 1] [--trivial-augment]
Decode JPEG (PIL) -> RandomResizedCrop(size) [-> TrivialAugmentWide] -> RandomHorizontalFlip ->
ToTensor -> Normalize (ImageNet), batched by the default collate; one thread per worker.
"""
import argparse, time, torch, torchvision.transforms as T
from torchvision.datasets import ImageFolder
from torch.utils.data import DataLoader

p = argparse.ArgumentParser(); p.add_argument("root"); p.add_argument("--workers", type=int, default=2)
p.add_argument("--batch", type=int, default=64); p.add_argument("--size", type=int, default=224)
p.add_argument("--epochs", type=int, default=1); p.add_argument("--trivial-augment", action="store_true")
a = p.parse_args()
torch.set_num_threads(1)
stages = [T.RandomResizedCrop(a.size)]
if a.trivial_augment:
    stages.append(T.TrivialAugmentWide())
stages += [T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
ds = ImageFolder(a.root, transform=T.Compose(stages))
dl = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=False,
                persistent_workers=a.workers > 0)
n = 0; t0 = time.perf_counter()
for _ in range(a.epochs):
    for x, y in dl:
        n += x.shape[0]
dt = time.perf_counter() - t0
print(f"pipeline_images_per_s={n/dt:.1f} images={n} seconds={dt:.2f}")
