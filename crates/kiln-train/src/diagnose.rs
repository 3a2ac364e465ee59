//! Before and around training: pre-flight checks ([`doctor`]), the overfit-one-batch test
//! ([`overfit_one_batch`]) and the learning-rate finder ([`lr_find`]).
//!
//! Each answers a question people otherwise answer after hours of a bad run: will the first step
//! even work (labels in range, data normalised, initial loss ≈ ln C)? Can the model fit anything at
//! all? Which learning rate?

use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_models::Classifier;
use kiln_transforms::check::check_batch;
use serde::{Deserialize, Serialize};

use crate::plot::{Series, line_chart};
use crate::step::{Micro, StepContext, shard_grads};
use crate::task::{Classification, Task, check_labels};
use crate::{BatchSource, TrainConfig, TrainError};

/// The training step's forward and backward of `task` on one batch: the batch's mean loss and
/// the gradients (device failures become errors, as in `fit`).
fn forward_backward<M: Module, T: Task<M>>(
    task: &T,
    model: &M,
    batch: T::Batch,
    positions: &[usize],
    batch_size: usize,
    ad: &Device,
    first: bool,
) -> Result<(f64, GradientsParams), TrainError> {
    let context = StepContext {
        scale: 1.0,
        epoch: 1,
        step: 1,
        batch_size,
        accumulate: 1,
        first,
    };
    let micro = vec![Micro {
        batch,
        positions: positions.to_vec(),
    }];
    let out = shard_grads(task, model, micro, &context, ad)?;
    Ok((
        out.loss_sum / out.seen.max(1) as f64,
        out.grads.unwrap_or_default(),
    ))
}

/// One pre-flight check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (numbers, the problem and what to do).
    pub detail: String,
}

/// Reads every sample of every split in batches of `batch` (the training split without its
/// augmentation): a file that cannot be read anywhere, the test split included, is found now,
/// not after the last epoch. Under the skip policy, what was skipped is counted.
pub fn read_every_split(splits: &[(&str, &dyn BatchSource)], batch: usize) -> Check {
    let mut sizes = Vec::new();
    for (name, src) in splits {
        let n = src.len();
        let positions: Vec<usize> = (0..n).collect();
        for chunk in positions.chunks(batch.max(1)) {
            if let Err(e) = src.batch(chunk) {
                return Check {
                    name: "every split reads".into(),
                    ok: false,
                    detail: format!("the {name} split: {e}"),
                };
            }
        }
        let skipped = src.skipped().len();
        sizes.push(match skipped {
            0 => format!("{name} {n}"),
            s => format!("{name} {n} ({s} skipped)"),
        });
    }
    Check {
        name: "every split reads".into(),
        ok: true,
        detail: format!("every sample decoded and transformed: {}", sizes.join(", ")),
    }
}

/// Everything [`doctor`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Samples per class in the training set.
    pub class_counts: Vec<usize>,
}

impl DoctorReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "[{}] {}: {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        Ok(())
    }
}

/// Pre-flight checks on the data, the model and the device, all run (none stops the others):
/// the config; every training label in `0..C` (C from the model's output) with counts per class
/// and no empty class; the first batch normalised (per-channel mean ≈ 0, std ≈ 1 against the
/// source's normalization); one forward/backward on `device` with finite gradients; and an initial
/// loss near ln C (a model that starts far from it has a mis-scaled head or init).
///
/// # Errors
///
/// Only for failures that stop the checks themselves (the data cannot be read); every problem
/// found is a failed [`Check`] in the report.
pub fn doctor<M: Classifier>(
    model: M,
    train: &dyn BatchSource,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<DoctorReport, TrainError> {
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        })
    };
    match cfg.validate() {
        Ok(()) => check("config", true, "valid".into()),
        Err(e) => check("config", false, e.to_string()),
    }
    if train.len() < cfg.batch_size.max(1) {
        check(
            "data size",
            false,
            format!(
                "{} training samples, fewer than one batch of {}",
                train.len(),
                cfg.batch_size
            ),
        );
        return Ok(DoctorReport {
            checks,
            class_counts: Vec::new(),
        });
    }
    let first: Vec<usize> = (0..cfg.batch_size.max(1)).collect();
    let batch = train.batch(&first)?;
    let shape = batch.shape;
    match model.check_input(&shape) {
        Ok(()) => check("input shape", true, format!("{shape:?}")),
        Err(e) => check("input shape", false, e.to_string()),
    }
    let ad = device.clone().without_autodiff().autodiff();
    let model = model.fork(&ad).train();
    let (images, _) = batch.clone().into_tensors(&ad);
    let classes = model.logits(images).dims()[1];

    // Labels: range and per-class counts over the whole training set.
    let mut counts = vec![0usize; classes];
    let mut out_of_range = Vec::new();
    let step = 512;
    let mut start = 0;
    while start < train.len() {
        let positions: Vec<usize> = (start..(start + step).min(train.len())).collect();
        let b = train.batch(&positions)?;
        for (p, &l) in positions.iter().zip(&b.labels) {
            match usize::try_from(l).ok().filter(|&l| l < classes) {
                Some(l) => counts[l] += 1,
                None if out_of_range.len() < 5 => out_of_range.push((*p, l)),
                None => {}
            }
        }
        start += step;
    }
    if out_of_range.is_empty() {
        check(
            "labels in range",
            true,
            format!("all {} labels in 0..{classes}", train.len()),
        );
    } else {
        check(
            "labels in range",
            false,
            format!(
                "labels outside 0..{classes} (the model's outputs) at (position, label) {out_of_range:?}; check the dataset or num_classes"
            ),
        );
    }
    let empty: Vec<usize> = (0..classes).filter(|&c| counts[c] == 0).collect();
    let (min, max) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    if empty.is_empty() {
        check(
            "class balance",
            true,
            format!(
                "{classes} classes, {min}–{max} samples each{}",
                if min > 0 && max >= 10 * min {
                    " (imbalanced ≥ 10×: consider class weights)"
                } else {
                    ""
                }
            ),
        );
    } else {
        check(
            "class balance",
            false,
            format!("classes {empty:?} have no training samples: the model cannot learn them"),
        );
    }

    // The first batch against its normalization.
    match train.normalization() {
        Some(norm) => {
            let report = check_batch(&batch.data, batch.shape, norm);
            let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
            check(
                "first batch normalised",
                warnings.is_empty(),
                if warnings.is_empty() {
                    format!("per-channel mean/std near 0/1 with {}", norm.name)
                } else {
                    warnings.join("; ")
                },
            );
        }
        None => check(
            "first batch normalised",
            true,
            "no normalization declared; not checked".into(),
        ),
    }

    // One forward/backward on the device, and the initial loss (not with labels the loss cannot take).
    if check_labels(&batch.labels, &first, classes, || "first batch".into()).is_err() {
        check(
            "forward/backward",
            false,
            "skipped: the first batch has labels outside the model's outputs".into(),
        );
        return Ok(DoctorReport {
            checks,
            class_counts: counts,
        });
    }
    let task = Classification::new(cfg.loss.clone());
    let (loss_value, mut grads) =
        match forward_backward(&task, &model, batch, &first, cfg.batch_size, &ad, true) {
            Ok(done) => done,
            Err(e) => {
                check("forward/backward", false, e.to_string());
                return Ok(DoctorReport {
                    checks,
                    class_counts: counts,
                });
            }
        };
    let grad_norm = crate::clip_grad_norm(&model, &mut grads, f64::INFINITY);
    check(
        "forward/backward",
        loss_value.is_finite() && grad_norm.is_finite() && grad_norm > 0.0,
        format!(
            "loss {loss_value:.4}, gradient norm {grad_norm:.4} on {}",
            crate::device::name(device)
        ),
    );
    let ln_c = (classes as f64).ln();
    let off = (loss_value - ln_c).abs();
    check(
        "initial loss ≈ ln C",
        off < 0.5 * ln_c,
        format!(
            "{loss_value:.3} vs ln {classes} = {ln_c:.3}{}",
            if off < 0.5 * ln_c {
                String::new()
            } else {
                " — the untrained model is confidently wrong: check the head's init, the input scale and the labels".into()
            }
        ),
    );
    Ok(DoctorReport {
        checks,
        class_counts: counts,
    })
}

/// The outcome of [`overfit_one_batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverfitReport {
    /// The loss before each step.
    pub losses: Vec<f64>,
    /// Whether the loss fell below `target × first loss`.
    pub passed: bool,
    /// The verdict and, when it failed, what to check.
    pub message: String,
}

/// Trains `task` on the first batch only, at the config's optimizer and a constant `cfg.lr`, for
/// up to `max_steps` steps: a model that can learn at all drives the loss below `target` (e.g.
/// 0.05) of its start. Stops as soon as it does.
///
/// # Errors
///
/// Data, shape and config errors.
pub fn overfit_one_batch<M: Module, T: Task<M>>(
    task: &T,
    model: M,
    train: &dyn BatchSource<T::Batch>,
    cfg: &TrainConfig,
    device: &Device,
    max_steps: usize,
    target: f64,
) -> Result<OverfitReport, TrainError> {
    cfg.validate()?;
    let n = cfg.batch_size.min(train.len()).max(1);
    let positions: Vec<usize> = (0..n).collect();
    let batch = train.batch(&positions)?;
    task.check_first_batch(&model, &batch, None)?;
    let ad = device.clone().without_autodiff().autodiff();
    ad.seed(cfg.seed);
    let mut model = model.fork(&ad).train();
    let mut optim = cfg.optimizer.build(Vec::new())?;
    let mut losses = Vec::new();
    for i in 0..max_steps.max(1) {
        let (value, grads) = forward_backward(task, &model, batch.clone(), &positions, n, &ad, i == 0)?;
        losses.push(value);
        if !value.is_finite() || value < target * losses[0] {
            break;
        }
        model = optim.step(cfg.lr, model, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap_or(&losses[0]));
    let passed = last.is_finite() && last < target * first;
    let message = if passed {
        format!(
            "fits one batch of {n}: loss {first:.4} → {last:.4} in {} steps",
            losses.len() - 1
        )
    } else {
        format!(
            "cannot fit one batch of {n} in {} steps (loss {first:.4} → {last:.4}, target < {:.4}): check that labels match the images, the learning rate ({}), the model's capacity and output size, and the input normalization",
            losses.len(),
            target * first,
            cfg.lr
        )
    };
    Ok(OverfitReport {
        losses,
        passed,
        message,
    })
}

/// Settings of [`lr_find`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrFindConfig {
    /// First learning rate.
    pub start_lr: f64,
    /// Last learning rate.
    pub end_lr: f64,
    /// Steps of the exponential sweep.
    pub steps: usize,
    /// Exponential smoothing of the loss (0.98 as fast.ai).
    pub smoothing: f64,
    /// Stop when the smoothed loss exceeds this multiple of its minimum.
    pub diverge: f64,
    /// Show a progress bar of the sweep on stderr (on a terminal).
    pub progress: bool,
}

impl Default for LrFindConfig {
    fn default() -> Self {
        Self {
            start_lr: 1e-6,
            end_lr: 10.0,
            steps: 100,
            smoothing: 0.98,
            diverge: 4.0,
            progress: false,
        }
    }
}

/// The sweep and its suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFindResult {
    /// The learning rate of each step.
    pub lrs: Vec<f64>,
    /// The bias-corrected smoothed loss after each step.
    pub losses: Vec<f64>,
    /// The rate at the steepest descent of the smoothed loss (before it diverged).
    pub suggested: Option<f64>,
}

/// The learning-rate range test (Smith 2015, fast.ai's `lr_find`): one step per batch at rates
/// growing exponentially from `start_lr` to `end_lr`, recording the smoothed loss, stopping when it
/// diverges. Suggests the rate where the smoothed loss falls fastest per decade (measured over a
/// window of a tenth of the sweep, before the loss's minimum). When `plot` is
/// given, draws loss against log10(lr) there.
///
/// # Errors
///
/// Data, shape and config errors, or a plot that cannot be written.
pub fn lr_find<M: Module, T: Task<M>>(
    task: &T,
    model: M,
    train: &dyn BatchSource<T::Batch>,
    cfg: &TrainConfig,
    device: &Device,
    sweep: &LrFindConfig,
    plot: Option<&Path>,
) -> Result<LrFindResult, TrainError> {
    cfg.validate()?;
    if !(sweep.start_lr > 0.0 && sweep.end_lr > sweep.start_lr && sweep.steps >= 2) {
        return Err(TrainError::InvalidConfig {
            field: "lr_find",
            value: format!("{} → {} in {} steps", sweep.start_lr, sweep.end_lr, sweep.steps),
            reason: "needs 0 < start < end and at least 2 steps".into(),
        });
    }
    // The plot's folder before the sweep, not after it.
    if let Some(path) = plot {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(TrainError::Write {
                path: path.to_path_buf(),
                reason: format!("the folder {} does not exist", dir.display()),
            });
        }
    }
    let ad = device.clone().without_autodiff().autodiff();
    ad.seed(cfg.seed);
    let mut model = model.fork(&ad).train();
    let mut optim = cfg.optimizer.build(Vec::new())?;
    let order = kiln_data::BatchOrder::new(train.len(), cfg.batch_size, Some(cfg.seed), true)?;
    let bar = crate::fit::progress_bar(sweep.progress, sweep.steps, "lr-find".into());
    let ratio = (sweep.end_lr / sweep.start_lr).powf(1.0 / (sweep.steps - 1) as f64);
    let (mut lrs, mut losses) = (Vec::new(), Vec::new());
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    let mut epoch = 0;
    let mut batches = order.epoch(0).into_iter();
    for i in 0..sweep.steps {
        let positions = match batches.next() {
            Some(p) => p,
            None => {
                epoch += 1;
                batches = order.epoch(epoch).into_iter();
                match batches.next() {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let lr = sweep.start_lr * ratio.powi(i as i32);
        let batch = train.batch(&positions)?;
        if i == 0 {
            task.check_first_batch(&model, &batch, None)?;
        }
        let (value, grads) = forward_backward(task, &model, batch, &positions, cfg.batch_size, &ad, i == 0)?;
        if !value.is_finite() {
            break;
        }
        avg = sweep.smoothing * avg + (1.0 - sweep.smoothing) * value;
        let smoothed = avg / (1.0 - sweep.smoothing.powi(i as i32 + 1));
        lrs.push(lr);
        losses.push(smoothed);
        best = best.min(smoothed);
        bar.inc(1);
        bar.set_message(format!("lr {lr:.1e} loss {smoothed:.3}"));
        if smoothed > sweep.diverge * best {
            break;
        }
        model = optim.step(lr, model, grads);
    }
    bar.finish_and_clear();
    // Steepest descent per decade of lr, measured over a window of ±n/10 steps (single-step
    // slopes are mostly noise) and only before the loss's minimum.
    let end = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let k = (losses.len() / 10).max(2);
    let suggested = (k..=end.min(losses.len().saturating_sub(1)))
        .map(|i| {
            let (a, b) = (i - k, (i + k).min(end));
            let slope = (losses[b] - losses[a]) / (lrs[b].log10() - lrs[a].log10()).max(1e-12);
            (i, slope)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, slope)| *slope < 0.0)
        .map(|(i, _)| lrs[i]);
    if let Some(path) = plot {
        let drawn = line_chart(
            path,
            &format!(
                "LR finder{}",
                suggested.map_or(String::new(), |s| format!(" (suggested {s:.2e})"))
            ),
            "log10(lr)",
            "smoothed loss",
            &[Series {
                label: "loss",
                points: lrs.iter().zip(&losses).map(|(l, v)| (l.log10(), *v)).collect(),
            }],
        );
        // A plot that fails at the end still tells what the sweep found.
        if let Err(TrainError::Write { path, reason }) = drawn {
            let found = suggested.map_or_else(
                || "the loss never fell".to_string(),
                |s| format!("the sweep suggested lr {s:.3e}"),
            );
            return Err(TrainError::Write {
                path,
                reason: format!("{reason} ({found})"),
            });
        }
        drawn?;
    }
    Ok(LrFindResult {
        lrs,
        losses,
        suggested,
    })
}
