//! Learning-rate schedules as pure functions of the step (no hidden mutable state, so a resumed
//! run gets the same rate as an uninterrupted one), equal to `torch.optim.lr_scheduler`'s.
//!
//! A [`Schedule`] is a shape ([`LrSchedule`]), the unit it advances in ([`Unit`]: every optimizer
//! step, or once per epoch as a PyTorch loop that calls `scheduler.step()` after each epoch), and an
//! optional linear [`Warmup`]. Warmup always advances per step and never starts at 0: it goes from
//! `start_factor × base` to `base` over its length, then the main schedule runs over the remaining
//! steps — PyTorch's `SequentialLR([LinearLR(start_factor, total_iters=W), main], milestones=[W])`.
//! Learning rates above 1 are fine (Burn's own schedulers refuse them).
//!
//! | kiln | PyTorch |
//! |---|---|
//! | `constant` | no scheduler |
//! | `step { step_size, gamma = 0.1 }` | `StepLR` |
//! | `multi-step { milestones, gamma = 0.1 }` | `MultiStepLR` |
//! | `exponential { gamma }` | `ExponentialLR` |
//! | `cosine { min_lr = 0 }` | `CosineAnnealingLR(T_max = the run's length, eta_min)` |
//! | `one-cycle { pct_start = 0.3, div_factor = 25, final_div_factor = 1e4, three_phase, anneal = cos }` | `OneCycleLR(max_lr = base, cycle_momentum=False)` |
//! | `polynomial { power = 1 }` | `PolynomialLR(total_iters = the run's length)` |
//!
//! `tests/schedule_vs_pytorch.rs` compares every one, per step and per epoch, with and without
//! warmup, against rates recorded from PyTorch (`scripts/make_schedule_fixture.py`) within 1e-9.
//!
//! ```
//! use kiln_train::schedule::{LrSchedule, Schedule, Unit, Warmup};
//!
//! let s = Schedule {
//!     schedule: LrSchedule::Cosine { min_lr: 0.0 },
//!     per: Unit::Step,
//!     warmup: Some(Warmup { length: 5, unit: Unit::Step, start_factor: 0.1 }),
//! };
//! s.validate(0.1, 10, 100).unwrap();
//! assert!((s.lr_at(0.1, 0, 10, 100) - 0.01).abs() < 1e-12); // warmup starts at 10 %
//! assert!((s.lr_at(0.1, 5, 10, 100) - 0.1).abs() < 1e-12); // then cosine from the base rate
//! ```

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The shape of the schedule. Serialised with a `name` tag: `{"name": "step", "step_size": 30}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// `StepLR`: multiply by `gamma` every `step_size` units.
    Step {
        /// Units between decays.
        step_size: usize,
        /// Decay factor.
        #[serde(default = "tenth")]
        gamma: f64,
    },
    /// `MultiStepLR`: multiply by `gamma` at each milestone.
    MultiStep {
        /// Strictly increasing unit indices.
        milestones: Vec<usize>,
        /// Decay factor.
        #[serde(default = "tenth")]
        gamma: f64,
    },
    /// `ExponentialLR`: multiply by `gamma` every unit.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// `CosineAnnealingLR` over the whole run (after warmup), from the base rate to `min_lr`.
    Cosine {
        /// The rate at the end.
        #[serde(default)]
        min_lr: f64,
    },
    /// `OneCycleLR` with `max_lr` = the base rate (momentum is not cycled).
    OneCycle {
        /// Fraction of the run spent increasing the rate.
        #[serde(default = "three_tenths")]
        pct_start: f64,
        /// Initial rate = base / `div_factor`.
        #[serde(default = "twenty_five")]
        div_factor: f64,
        /// Final rate = initial / `final_div_factor`.
        #[serde(default = "ten_thousand")]
        final_div_factor: f64,
        /// Up, down to the initial rate, then down to the final one (fast.ai's variant).
        #[serde(default)]
        three_phase: bool,
        /// Cosine or linear annealing between phases.
        #[serde(default)]
        anneal: Anneal,
    },
    /// `PolynomialLR`: `base · (1 − t/T)^power`.
    Polynomial {
        /// The exponent.
        #[serde(default = "one")]
        power: f64,
    },
}

fn tenth() -> f64 {
    0.1
}
fn three_tenths() -> f64 {
    0.3
}
fn twenty_five() -> f64 {
    25.0
}
fn ten_thousand() -> f64 {
    1e4
}
fn one() -> f64 {
    1.0
}

/// How one-cycle interpolates between its phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anneal {
    /// `end + (start − end)/2 · (1 + cos(π·pct))` (PyTorch's default).
    #[default]
    Cos,
    /// `start + (end − start)·pct`.
    Linear,
}

/// What a schedule's `t` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Optimizer steps.
    #[default]
    Step,
    /// Epochs (the rate changes at epoch boundaries, as with `scheduler.step()` once per epoch).
    Epoch,
}

/// Linear warmup from `start_factor × base` to `base`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// How long, in `unit`s.
    pub length: usize,
    /// Steps or epochs.
    #[serde(default)]
    pub unit: Unit,
    /// The first step's rate as a fraction of the base rate, in (0, 1].
    #[serde(default = "tenth")]
    pub start_factor: f64,
}

/// A schedule: its shape, the unit it advances in, and an optional warmup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The shape after warmup.
    pub schedule: LrSchedule,
    /// Whether the shape advances per step or per epoch.
    #[serde(default)]
    pub per: Unit,
    /// Linear warmup before it.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

impl Default for Schedule {
    /// Cosine annealing to 0, per step, no warmup.
    fn default() -> Self {
        LrSchedule::Cosine { min_lr: 0.0 }.into()
    }
}

impl From<LrSchedule> for Schedule {
    fn from(schedule: LrSchedule) -> Self {
        Schedule {
            schedule,
            per: Unit::Step,
            warmup: None,
        }
    }
}

impl LrSchedule {
    /// The rate at unit `t` of `total` (PyTorch's closed forms; `t` past `total` holds the end).
    pub fn lr_at(&self, base: f64, t: usize, total: usize) -> f64 {
        let tf = t.min(total) as f64;
        let total_f = total.max(1) as f64;
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => base * gamma.powi((t / (*step_size).max(1)) as i32),
            LrSchedule::MultiStep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= t).count();
                base * gamma.powi(passed as i32)
            }
            LrSchedule::Exponential { gamma } => base * gamma.powi(t as i32),
            LrSchedule::Cosine { min_lr } => {
                min_lr + (base - min_lr) * (1.0 + (PI * tf / total_f).cos()) / 2.0
            }
            LrSchedule::Polynomial { power } => base * (1.0 - tf / total_f).powf(*power),
            LrSchedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
                three_phase,
                anneal,
            } => {
                let initial = base / div_factor;
                let min = initial / final_div_factor;
                let up_end = pct_start * total_f - 1.0;
                let phases: Vec<(f64, f64, f64)> = if *three_phase {
                    vec![
                        (up_end, initial, base),
                        (2.0 * pct_start * total_f - 2.0, base, initial),
                        (total_f - 1.0, initial, min),
                    ]
                } else {
                    vec![(up_end, initial, base), (total_f - 1.0, base, min)]
                };
                let step = tf;
                let mut start_step = 0.0;
                let last = phases.len() - 1;
                for (i, &(end_step, from, to)) in phases.iter().enumerate() {
                    if step <= end_step || i == last {
                        let pct = (step - start_step) / (end_step - start_step);
                        return match anneal {
                            Anneal::Cos => to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0),
                            Anneal::Linear => (to - from) * pct + from,
                        };
                    }
                    start_step = end_step;
                }
                base
            }
        }
    }

    /// The name used in configs.
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Step { .. } => "step",
            LrSchedule::MultiStep { .. } => "multi-step",
            LrSchedule::Exponential { .. } => "exponential",
            LrSchedule::Cosine { .. } => "cosine",
            LrSchedule::OneCycle { .. } => "one-cycle",
            LrSchedule::Polynomial { .. } => "polynomial",
        }
    }
}

impl Schedule {
    /// Warmup length in steps.
    fn warmup_steps(&self, steps_per_epoch: usize) -> usize {
        match self.warmup {
            Some(Warmup {
                length,
                unit: Unit::Step,
                ..
            }) => length,
            Some(Warmup {
                length,
                unit: Unit::Epoch,
                ..
            }) => length * steps_per_epoch,
            None => 0,
        }
    }

    /// The learning rate of 0-based optimizer `step` in a run of `total_steps` steps with
    /// `steps_per_epoch` steps per epoch.
    pub fn lr_at(&self, base: f64, step: usize, steps_per_epoch: usize, total_steps: usize) -> f64 {
        let spe = steps_per_epoch.max(1);
        let w = self.warmup_steps(spe);
        if let Some(warmup) = self.warmup
            && step < w
        {
            let f = warmup.start_factor;
            return base * (f + (1.0 - f) * step as f64 / w as f64);
        }
        let (t, total) = match self.per {
            Unit::Step => (step - w, total_steps.saturating_sub(w)),
            Unit::Epoch => ((step - w) / spe, total_steps.saturating_sub(w).div_ceil(spe)),
        };
        self.schedule.lr_at(base, t, total)
    }

    /// Checks the schedule against the run it will drive.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the field: a zero step size, unordered milestones,
    /// a non-positive gamma or factor, `min_lr` not below the base rate, a warmup that starts at
    /// 0 or does not end before the run does, or an epoch schedule after a warmup of partial
    /// epochs.
    pub fn validate(&self, base: f64, steps_per_epoch: usize, total_steps: usize) -> Result<(), TrainError> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(TrainError::InvalidConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(field, v.to_string(), "must be finite and > 0")
            }
        };
        match &self.schedule {
            LrSchedule::Constant => {}
            LrSchedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return bad("schedule.step_size", "0".into(), "must be at least 1");
                }
                positive("schedule.gamma", *gamma)?;
            }
            LrSchedule::MultiStep { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(
                        "schedule.milestones",
                        format!("{milestones:?}"),
                        "must be strictly increasing",
                    );
                }
                positive("schedule.gamma", *gamma)?;
            }
            LrSchedule::Exponential { gamma } => positive("schedule.gamma", *gamma)?,
            LrSchedule::Cosine { min_lr } => {
                if !(min_lr.is_finite() && *min_lr >= 0.0 && *min_lr < base) {
                    return bad(
                        "schedule.min_lr",
                        min_lr.to_string(),
                        &format!("must be >= 0 and below the base rate {base}"),
                    );
                }
            }
            LrSchedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
                three_phase,
                ..
            } => {
                if !(*pct_start > 0.0 && *pct_start < 1.0) || (*three_phase && *pct_start >= 0.5) {
                    return bad(
                        "schedule.pct_start",
                        pct_start.to_string(),
                        "must be in (0, 1), and below 0.5 with three_phase",
                    );
                }
                positive("schedule.div_factor", *div_factor)?;
                positive("schedule.final_div_factor", *final_div_factor)?;
            }
            LrSchedule::Polynomial { power } => positive("schedule.power", *power)?,
        }
        if let Some(w) = self.warmup {
            if !(w.start_factor > 0.0 && w.start_factor <= 1.0) {
                return bad(
                    "schedule.warmup.start_factor",
                    w.start_factor.to_string(),
                    "must be in (0, 1]: a warmup from 0 wastes its first step",
                );
            }
            if w.length == 0 {
                return bad(
                    "schedule.warmup.length",
                    "0".into(),
                    "must be at least 1 (or no warmup)",
                );
            }
            let steps = self.warmup_steps(steps_per_epoch);
            if steps >= total_steps {
                return bad(
                    "schedule.warmup.length",
                    w.length.to_string(),
                    &format!("a warmup of {steps} steps leaves nothing of a {total_steps}-step run"),
                );
            }
            if self.per == Unit::Epoch
                && w.unit == Unit::Step
                && !steps.is_multiple_of(steps_per_epoch.max(1))
            {
                return bad(
                    "schedule.warmup.unit",
                    "step".into(),
                    "an epoch schedule needs a warmup of whole epochs",
                );
            }
        }
        self.check_finite(base, steps_per_epoch, total_steps)
    }

    /// Every step's rate is a finite number: a base rate near f64's limit overflows inside the
    /// schedule (cosine's `(base − min) · (1 + cos) / 2`, one-cycle's ramps).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the first step whose rate is not finite.
    pub fn check_finite(
        &self,
        base: f64,
        steps_per_epoch: usize,
        total_steps: usize,
    ) -> Result<(), TrainError> {
        let at = |s| self.lr_at(base, s, steps_per_epoch, total_steps);
        match (0..total_steps.max(1)).find(|&s| !(at(s).is_finite() && at(s) >= 0.0)) {
            Some(step) => Err(TrainError::InvalidConfig {
                field: "lr",
                // 1e308 as `1e308`, not its 309 digits.
                value: if base.abs() >= 1e16 {
                    format!("{base:e}")
                } else {
                    base.to_string()
                },
                reason: format!(
                    "the schedule gives lr = {} at step {step}: not a finite rate",
                    at(step)
                ),
            }),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.schedule.name())?;
        if self.per == Unit::Epoch {
            f.write_str(" per epoch")?;
        }
        if let Some(w) = self.warmup {
            let unit = if w.unit == Unit::Epoch { "epochs" } else { "steps" };
            write!(f, " after {} warmup {unit} from {}×", w.length, w.start_factor)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// A schedule by name with its defaults, for the command line: `constant`, `cosine`,
    /// `one-cycle` or `polynomial` (the others need parameters: set them in the config).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let schedule = match s.trim().to_ascii_lowercase().as_str() {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { min_lr: 0.0 },
            "one-cycle" | "onecycle" => LrSchedule::OneCycle {
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
                three_phase: false,
                anneal: Anneal::Cos,
            },
            "polynomial" => LrSchedule::Polynomial { power: 1.0 },
            "step" | "multi-step" | "exponential" => {
                return Err(format!(
                    "the `{s}` schedule needs parameters (step size, milestones or gamma): set it in the config's [schedule] table"
                ));
            }
            other => {
                return Err(format!(
                    "unknown schedule `{other}`: expected constant, cosine, one-cycle or polynomial (step, multi-step and exponential in the config)"
                ));
            }
        };
        Ok(schedule.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_the_schedule_overflows_is_refused_naming_the_step() {
        // 1e308 is a finite f64, but cosine's (base - min) * (1 + cos) / 2 computes 2e308 = inf
        // at step 0; constant never overflows; 1e307 is fine everywhere.
        let cosine = Schedule::default();
        let err = cosine.validate(1e308, 10, 100).unwrap_err().to_string();
        assert!(
            err.contains("lr = inf at step 0") && err.contains("not a finite rate"),
            "{err}"
        );
        assert!(
            Schedule::from(LrSchedule::Constant)
                .validate(1e308, 10, 100)
                .is_ok()
        );
        assert!(cosine.validate(1e307, 10, 100).is_ok());
        let cfg = crate::TrainConfig {
            lr: 1e308,
            ..Default::default()
        };
        assert!(
            cfg.validate().is_err(),
            "refused before the run's length is known"
        );
    }

    #[test]
    fn names_parse_and_bad_schedules_are_refused_with_the_field() {
        assert_eq!("cosine".parse::<Schedule>().unwrap(), Schedule::default());
        assert_eq!("constant".parse::<Schedule>().unwrap().to_string(), "constant");
        assert!("step".parse::<Schedule>().unwrap_err().contains("config"));
        assert!(
            "linear"
                .parse::<Schedule>()
                .unwrap_err()
                .contains("expected constant")
        );
        let s: Schedule = serde_json::from_str(
            r#"{"schedule": {"name": "multi-step", "milestones": [5, 3]}, "per": "epoch"}"#,
        )
        .unwrap();
        let err = s.validate(0.1, 10, 100).unwrap_err().to_string();
        assert!(
            err.contains("schedule.milestones") && err.contains("[5, 3]"),
            "{err}"
        );
        let warm = |start_factor, length| Schedule {
            warmup: Some(Warmup {
                length,
                unit: Unit::Step,
                start_factor,
            }),
            ..Schedule::default()
        };
        assert!(
            warm(0.0, 5)
                .validate(0.1, 10, 100)
                .unwrap_err()
                .to_string()
                .contains("start_factor")
        );
        assert!(
            warm(0.1, 100)
                .validate(0.1, 10, 100)
                .unwrap_err()
                .to_string()
                .contains("leaves nothing")
        );
        // Rates above 1 are allowed.
        warm(0.5, 10).validate(3.0, 10, 100).unwrap();
        assert!((warm(0.5, 10).lr_at(3.0, 10, 10, 100) - 3.0).abs() < 1e-12);
        let cos = Schedule::from(LrSchedule::Cosine { min_lr: 0.2 });
        assert!(
            cos.validate(0.1, 10, 100)
                .unwrap_err()
                .to_string()
                .contains("min_lr")
        );
        assert!(
            serde_json::from_str::<Schedule>(r#"{"schedule": {"name": "cosine", "eta_min": 0}}"#)
                .unwrap_err()
                .to_string()
                .contains("eta_min")
        );
    }
}
