"""Write the optimizer fixture: 10 steps of each optimizer config on a fixed tiny model.

Usage: python scripts/make_optim_fixture.py crates/kiln-train/tests/fixtures/optim/steps.json
Needs: torch, and timm for RMSpropTF, Lamb and Lars (timm.optim).

Model: Linear(6, 5, bias=False) -> BatchNorm1d(5) -> ReLU -> Linear(5, 3), cross-entropy (mean) on a fixed
batch of 8, training mode (BatchNorm uses batch statistics). No bias before BatchNorm: its
gradient is ~0 and Adam would turn float noise into full-size steps. Parameters are grouped as kiln does
by default: no weight decay on 1-D parameters (biases, BatchNorm weight/bias) unless the config
says "decay_norm_and_bias". Records the initial parameters and the parameters after steps 1 and 10
(PyTorch layouts: Linear weight [out, in]).
"""
import json, sys
import torch, torch.nn as nn

torch.manual_seed(0)
x = torch.randn(8, 6)
y = torch.tensor([0, 1, 2, 0, 1, 2, 1, 0])

def model():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():  # non-trivial BatchNorm affine parameters
        m[1].weight.uniform_(0.5, 1.5); m[1].bias.uniform_(-0.3, 0.3)
    return m

def params(m):
    return {
        "fc1.weight": m[0].weight,
        "bn.gamma": m[1].weight, "bn.beta": m[1].bias,
        "fc2.weight": m[3].weight, "fc2.bias": m[3].bias,
    }

def flat(m):
    return {k: v.detach().flatten().tolist() for k, v in params(m).items()}

CONFIGS = [
    {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.1},
    {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "lr": 0.1},
    {"name": "sgd", "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2, "decay_norm_and_bias": True, "lr": 0.05},
    {"name": "sgd", "lr": 0.2},
    {"name": "adam", "lr": 0.01},
    {"name": "adam", "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05, "lr": 0.02},
    {"name": "adamw", "lr": 0.01},
    {"name": "adamw", "weight_decay": 0.1, "decay_norm_and_bias": True, "lr": 0.03},
    {"name": "rmsprop", "lr": 0.01},
    {"name": "rmsprop", "momentum": 0.9, "centered": True, "weight_decay": 1e-3, "alpha": 0.95, "lr": 0.005},
    {"name": "rmsprop-tf", "momentum": 0.9, "eps": 1e-3, "weight_decay": 1e-4, "lr": 0.02},
    {"name": "rmsprop-tf", "centered": True, "lr_in_momentum": False, "momentum": 0.5, "decoupled_decay": True, "weight_decay": 0.05, "lr": 0.01},
    {"name": "lamb", "lr": 0.01},
    {"name": "lamb", "weight_decay": 0.1, "trust_clip": True, "always_adapt": True, "decay_norm_and_bias": True, "lr": 0.02},
    {"name": "lamb", "weight_decay": 0.05, "decoupled_decay": True, "grad_averaging": False, "lr": 0.01},
    {"name": "lars", "momentum": 0.9, "weight_decay": 1e-4, "lr": 1.0},
    {"name": "lars", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "trust_coeff": 0.01, "always_adapt": True, "lr": 0.5},
    {"name": "lars", "weight_decay": 1e-3, "trust_clip": True, "lr": 0.1},
]

def make_opt(cfg, m):
    p = params(m)
    decay_all = cfg.get("decay_norm_and_bias", False)
    wd = cfg.get("weight_decay", 0.01 if cfg["name"] in ("adamw", "lamb") else 0.0)
    decay = [v for v in p.values() if decay_all or v.ndim > 1]
    no_decay = [v for v in p.values() if not (decay_all or v.ndim > 1)]
    groups = [{"params": decay, "weight_decay": wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    lr = cfg["lr"]
    if cfg["name"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.get("momentum", 0.0),
                               dampening=cfg.get("dampening", 0.0), nesterov=cfg.get("nesterov", False))
    rest = {k: v for k, v in cfg.items() if k not in ("name", "lr", "weight_decay", "decay_norm_and_bias")}
    if cfg["name"] == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, **rest)
    import timm.optim
    if cfg["name"] == "rmsprop-tf":
        return timm.optim.RMSpropTF(groups, lr=lr, **rest)
    if cfg["name"] == "lamb":
        # kiln leaves global-norm clipping to train.clip_grad_norm.
        return timm.optim.Lamb(groups, lr=lr, max_grad_norm=None, **rest)
    if cfg["name"] == "lars":
        return timm.optim.Lars(groups, lr=lr, **rest)
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    eps = cfg.get("eps", 1e-8)
    cls = torch.optim.Adam if cfg["name"] == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=betas, eps=eps)

import timm
out = {"torch": torch.__version__, "timm": timm.__version__, "x": x.flatten().tolist(), "y": y.tolist(), "initial": flat(model()), "runs": []}
for cfg in CONFIGS:
    m = model(); m.train(); opt = make_opt(cfg, m)
    snaps = {}
    for step in range(1, 11):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        if step in (1, 10):
            snaps[str(step)] = flat(m)
    out["runs"].append({"config": cfg, "after": snaps, "final_loss": nn.functional.cross_entropy(m(x), y).item()})
json.dump(out, open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1], len(CONFIGS), "runs")
