"""Write the weight-average fixture: timm's ModelEmaV3 updated through a sequence of model states.

Usage: python scripts/make_ema_fixture.py crates/kiln-train/tests/fixtures/ema/updates.json
Needs: torch, timm.

Model: Linear(6, 5, bias=False) -> BatchNorm1d(5) -> ReLU -> Linear(5, 3) (the optimizer fixture's).
States 0..8 of the model are random (parameters and BatchNorm running statistics). The average is
created from state 0 (ModelEmaV3 deep-copies the model), then for t = 1..8 the model takes state t
and the average is updated with step=t — every step, or (config "every": 2) only at even steps, as
kiln's `ema.every` does. Records every state and the average's tensors after each update.
"""
import json, sys
import torch, torch.nn as nn
import timm
from timm.utils.model_ema import ModelEmaV3

def model():
    return nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))

NAMES = {"0.weight": "fc1.weight", "1.weight": "bn.gamma", "1.bias": "bn.beta",
         "1.running_mean": "bn.running_mean", "1.running_var": "bn.running_var",
         "3.weight": "fc2.weight", "3.bias": "fc2.bias"}

def flat(m):
    sd = m.state_dict()
    return {kiln: sd[tv].detach().flatten().tolist() for tv, kiln in NAMES.items()}

torch.manual_seed(3)
states = []
for _ in range(9):
    m = model()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 1)
        m[1].running_mean.normal_(0, 1)
        m[1].running_var.uniform_(0.5, 2.0)
    states.append(flat(m))

def load(m, state):
    sd = m.state_dict()
    for tv, kiln in NAMES.items():
        sd[tv].copy_(torch.tensor(state[kiln]).reshape(sd[tv].shape))

CONFIGS = [
    {"decay": 0.9, "warmup": True, "update_after_step": 1},
    {"decay": 0.8, "buffers": "copy", "every": 2},
    {"decay": 0.7, "warmup": True, "warmup_gamma": 2.0, "warmup_power": 0.75, "min_decay": 0.5},
]

runs = []
for cfg in CONFIGS:
    m = model(); load(m, states[0])
    ema = ModelEmaV3(m, decay=cfg["decay"], use_warmup=cfg.get("warmup", False),
                     update_after_step=cfg.get("update_after_step", 0),
                     warmup_gamma=cfg.get("warmup_gamma", 1.0), warmup_power=cfg.get("warmup_power", 2/3),
                     min_decay=cfg.get("min_decay", 0.0), exclude_buffers=cfg.get("buffers") == "copy")
    after = []
    for t in range(1, 9):
        load(m, states[t])
        if t % cfg.get("every", 1) == 0:
            ema.update(m, step=t)
        after.append(flat(ema.module))
    runs.append({"config": cfg, "after": after})
json.dump({"torch": torch.__version__, "timm": timm.__version__, "states": states, "runs": runs},
          open(sys.argv[1], "w"), indent=1)
print("wrote", sys.argv[1], len(runs), "runs")
