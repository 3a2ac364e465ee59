//! Learning-rate schedules as pure functions of the step (no hidden mutable state, so a resumed
//! run gets the same rate as an uninterrupted one).

use serde::{Deserialize, Serialize};

/// How the learning rate moves over a run of `total` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The base rate at every step.
    Constant,
    /// Cosine annealing from the base rate towards 0, stepped per optimizer step:
    /// `torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0)`.
    #[default]
    Cosine,
}

impl LrSchedule {
    /// The learning rate of 0-based `step` out of `total`.
    ///
    /// Cosine: `base · (1 + cos(π · step / total)) / 2`, the closed form PyTorch documents for
    /// `CosineAnnealingLR` with `eta_min = 0`.
    pub fn lr_at(self, base: f64, step: usize, total: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let t = step.min(total) as f64 / total.max(1) as f64;
                base * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        })
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;

    /// `constant` or `cosine` (the names used in configs and on the command line).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            other => Err(format!("unknown schedule `{other}`: expected constant or cosine")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_pytorch() {
        // torch: opt = SGD([p], lr=0.1); s = CosineAnnealingLR(opt, T_max=4)
        //        [opt.param_groups[0]["lr"] for _ in range(5) if not s.step()] ->
        //        0.1, 0.08535533905932738, 0.05, 0.014644660940672627, 0.0
        let want = [
            0.1,
            0.085_355_339_059_327_38,
            0.05,
            0.014_644_660_940_672_627,
            0.0,
        ];
        for (step, w) in want.iter().enumerate() {
            let got = LrSchedule::Cosine.lr_at(0.1, step, 4);
            assert!((got - w).abs() < 1e-12, "step {step}: {got} vs {w}");
        }
        assert_eq!(LrSchedule::Constant.lr_at(0.1, 3, 4), 0.1);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in [LrSchedule::Constant, LrSchedule::Cosine] {
            assert_eq!(s.to_string().parse::<LrSchedule>().unwrap(), s);
        }
        assert!(
            "linear"
                .parse::<LrSchedule>()
                .unwrap_err()
                .contains("constant or cosine")
        );
    }
}
