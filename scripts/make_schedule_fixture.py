"""Write the learning-rate schedule fixture: torch.optim.lr_scheduler's rate at every step.

Usage: python scripts/make_schedule_fixture.py crates/kiln-train/tests/fixtures/schedule/lrs.json
Needs: torch.

Each case names kiln's schedule (as JSON), the base lr, steps per epoch and total steps, and the lr
PyTorch's optimizer holds before each optimizer step. "per": "epoch" cases step the PyTorch
scheduler once per epoch (milestones in epochs); warmup cases are
SequentialLR([LinearLR(start_factor, total_iters=W), main], milestones=[W]) stepped per step.
"""
import json, sys, math
import torch
from torch.optim import SGD
from torch.optim import lr_scheduler as S

def run(make, base, total_steps, spe=1, per="step"):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = SGD([p], lr=base, momentum=0.9)
    sched = make(opt)
    lrs = []
    for step in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if per == "step" or (step + 1) % spe == 0:
            sched.step()
    return lrs

T = 40
cases = []
def case(schedule, base, make, total=T, spe=4, per="step", warmup=None):
    lrs = run(make, base, total, spe, per)
    cases.append({"schedule": schedule, "per": per, "warmup": warmup, "base": base,
                  "steps_per_epoch": spe, "total_steps": total, "lrs": lrs})

case({"name": "constant"}, 0.1, lambda o: S.LambdaLR(o, lambda t: 1.0))
case({"name": "step", "step_size": 7, "gamma": 0.5}, 0.1, lambda o: S.StepLR(o, 7, 0.5))
case({"name": "step", "step_size": 3}, 0.1, lambda o: S.StepLR(o, 3, 0.1), per="epoch")
case({"name": "multi-step", "milestones": [10, 25, 33], "gamma": 0.2}, 0.4, lambda o: S.MultiStepLR(o, [10, 25, 33], 0.2))
case({"name": "multi-step", "milestones": [3, 6]}, 0.1, lambda o: S.MultiStepLR(o, [3, 6], 0.1), per="epoch")
case({"name": "exponential", "gamma": 0.93}, 0.05, lambda o: S.ExponentialLR(o, 0.93))
case({"name": "cosine"}, 0.1, lambda o: S.CosineAnnealingLR(o, T_max=T))
case({"name": "cosine", "min_lr": 0.001}, 0.1, lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=0.001))
case({"name": "cosine", "min_lr": 0.01}, 0.1, lambda o: S.CosineAnnealingLR(o, T_max=T // 4, eta_min=0.01), per="epoch")
case({"name": "one-cycle"}, 0.8, lambda o: S.OneCycleLR(o, max_lr=0.8, total_steps=T, cycle_momentum=False))
case({"name": "one-cycle", "pct_start": 0.25, "div_factor": 10, "final_div_factor": 100, "anneal": "linear"}, 2.0,
     lambda o: S.OneCycleLR(o, max_lr=2.0, total_steps=T, pct_start=0.25, div_factor=10, final_div_factor=100,
                            anneal_strategy="linear", cycle_momentum=False))
case({"name": "one-cycle", "three_phase": True}, 0.5,
     lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=T, three_phase=True, cycle_momentum=False))
case({"name": "polynomial"}, 0.1, lambda o: S.PolynomialLR(o, total_iters=T, power=1.0))
case({"name": "polynomial", "power": 2.0}, 3.0, lambda o: S.PolynomialLR(o, total_iters=T, power=2.0))
# Warmup: linear from start_factor x base over W steps, then the main schedule over the rest.
W = 6
case({"name": "cosine"}, 0.2,
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=W), S.CosineAnnealingLR(o, T_max=T - W)], milestones=[W]),
     warmup={"length": W, "unit": "step", "start_factor": 0.1})
case({"name": "multi-step", "milestones": [10, 20], "gamma": 0.1}, 1.6,
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.25, total_iters=8), S.MultiStepLR(o, [10, 20], 0.1)], milestones=[8]),
     warmup={"length": 2, "unit": "epoch", "start_factor": 0.25})
json.dump({"torch": torch.__version__, "cases": cases}, open(sys.argv[1], "w"), indent=1)
print("wrote", len(cases), "cases")
