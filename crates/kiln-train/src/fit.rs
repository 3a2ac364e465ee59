//! The training loop.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_data::loader::panic_message;
use kiln_data::{BatchOrder, DataError};
use kiln_models::Classifier;
use kiln_transforms::ChwBatch;
use kiln_transforms::check::check_batch;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointOptions, CheckpointState};
use crate::error::RunPoint;
use crate::guard::{self, Caught};
use crate::loss::LossConfig;
use crate::metrics::{ConfusionMatrix, Verdict, VerdictConfig};
use crate::parallel::{DataParallel, ReplicaSetup, Replicas};
use crate::{BatchSource, LrGroup, MetricsLog, OptimizerConfig, Schedule, TrainError};

/// Settings of one training run (saved as part of the run's `config.json`).
///
/// The defaults are the SGD recipe of the PyTorch peer (`shared/bench/torch_fmnist.py`) with
/// PyTorch's semantics, plus cosine annealing of the learning rate: momentum 0.9 with
/// **dampening 0** (Burn's own default is 0.1) and coupled weight decay 5e-4 — not on biases and
/// BatchNorm γ/β (see [`OptimizerConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per forward/backward (a micro-batch when `accumulate` > 1). The last partial batch
    /// of an epoch is dropped.
    pub batch_size: usize,
    /// Micro-batches whose gradients are **averaged** into one optimizer step (effective batch
    /// `batch_size × accumulate`). Burn's own accumulator sums; kiln scales each loss by 1/k.
    pub accumulate: usize,
    /// Base (peak) learning rate.
    pub lr: f64,
    /// The optimizer and its settings.
    pub optimizer: OptimizerConfig,
    /// How the learning rate moves over the run (cosine annealing to 0 by default).
    pub schedule: Schedule,
    /// Label smoothing and class weights.
    pub loss: LossConfig,
    /// Clip the gradients' **global** L2 norm (over all parameters, as
    /// `torch.nn.utils.clip_grad_norm_`) to this value before each step. Burn clips per tensor.
    pub clip_grad_norm: Option<f64>,
    /// Stop when the monitored metric has not improved for `patience` epochs.
    pub early_stopping: Option<EarlyStopping>,
    /// Thresholds of the per-epoch overfitting verdict.
    pub verdict: VerdictConfig,
    /// Seed of parameter init, batch order and Burn's generator (re-seeded per epoch).
    pub seed: u64,
    /// Threads that build training batches ahead of the model (0: on the training thread).
    /// Each batch is the same whichever thread builds it, so the run's metrics do not depend on
    /// this, and a run may resume with another value.
    pub num_workers: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            accumulate: 1,
            lr: 0.05,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            loss: LossConfig::default(),
            clip_grad_norm: None,
            early_stopping: None,
            verdict: VerdictConfig::default(),
            seed: 42,
            num_workers: 2,
        }
    }
}

/// The metric that decides the best checkpoint and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation accuracy (higher is better).
    ValAcc,
    /// Validation loss (lower is better).
    ValLoss,
    /// Training loss (lower is better; for runs without a validation split).
    TrainLoss,
}

impl Monitor {
    fn value(self, r: &EpochRecord) -> Option<f64> {
        match self {
            Monitor::ValAcc => r.val_acc,
            Monitor::ValLoss => r.val_loss,
            Monitor::TrainLoss => Some(r.train_loss),
        }
    }

    fn better(self, new: f64, old: f64, min_delta: f64) -> bool {
        match self {
            Monitor::ValAcc => new > old + min_delta,
            Monitor::ValLoss | Monitor::TrainLoss => new < old - min_delta,
        }
    }
}

/// Early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// What to watch.
    pub monitor: Monitor,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

impl TrainConfig {
    /// Checks every field (the schedule against the run's length is checked when it starts).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field, value: String, reason: &str| {
            Err(TrainError::InvalidConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "0".into(), "must be at least 1");
        }
        if self.accumulate == 0 {
            return bad(
                "accumulate",
                "0".into(),
                "must be at least 1 (1: no accumulation)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be finite and > 0");
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("clip_grad_norm", c.to_string(), "must be finite and > 0");
        }
        if let Some(e) = self.early_stopping
            && e.patience == 0
        {
            return bad("early_stopping.patience", "0".into(), "must be at least 1");
        }
        self.loss.validate(None)?;
        self.optimizer.validate()
    }

    /// The metric that picks the best epoch: the early-stopping monitor, else validation accuracy
    /// when there is a validation split, else training loss.
    fn monitor(&self, has_val: bool) -> Monitor {
        match self.early_stopping {
            Some(e) => e.monitor,
            None if has_val => Monitor::ValAcc,
            None => Monitor::TrainLoss,
        }
    }
}

/// Loss and accuracy over a whole split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per sample.
    pub loss: f64,
    /// Fraction of samples whose arg-max logit is the label.
    pub accuracy: f64,
    /// Fraction of samples whose label is among the 5 highest logits (all of them with ≤ 5 classes).
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// What one epoch measured (one line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Training accuracy over the epoch (with the weights as they were at each step).
    pub train_acc: f64,
    /// Validation loss, when there is a validation split.
    pub val_loss: Option<f64>,
    /// Validation accuracy, when there is a validation split.
    pub val_acc: Option<f64>,
    /// Validation top-5 accuracy, when there is a validation split.
    #[serde(default)]
    pub val_top5: Option<f64>,
    /// Learning rate of the epoch's first step.
    pub lr: f64,
    /// Training throughput (batch assembly + forward + backward + step), evaluation excluded.
    pub train_images_per_s: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
    /// The overfitting verdict after this epoch (`healthy`, `overfitting: ...`).
    #[serde(default)]
    pub verdict: Option<String>,
    /// Mean training loss of each optimizer step, in order (the per-step curve of `loss.png`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_losses: Vec<f64>,
}

/// Where a run reports and keeps its state as it goes. `Default` reports nowhere (tests).
#[derive(Default)]
pub struct FitOutputs<'a> {
    /// Appended (and flushed) with each epoch's record.
    pub log: Option<&'a mut MetricsLog>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Called with each epoch's record as it is made (the CLI prints it).
    pub on_epoch: Option<&'a mut dyn FnMut(&EpochRecord)>,
    /// Called with each warning as it is found (the first-batch check's; the CLI prints them).
    pub on_warning: Option<&'a mut dyn FnMut(&str)>,
    /// Checkpoint each epoch (and resume from the latest one).
    pub checkpoints: Option<CheckpointOptions>,
    /// Parameter groups with their own learning-rate scale (e.g. a fine-tuned backbone at 0.1×).
    pub lr_groups: Vec<LrGroup>,
    /// Train on several devices at once, one replica each (the first is `fit`'s device).
    pub data_parallel: Option<DataParallel>,
}

/// The trained model and what the run measured.
#[derive(Debug)]
pub struct FitResult<M> {
    /// The trained model, on the autodiff device (call `.valid()` for inference).
    pub model: M,
    /// One record per epoch (including those before a resume).
    pub epochs: Vec<EpochRecord>,
    /// Mean training throughput over the epochs this call ran.
    pub train_images_per_s: f64,
    /// Warnings raised during the run (e.g. by the first-batch normalisation check).
    pub warnings: Vec<String>,
    /// The best epoch by the monitored metric, and its value.
    pub best: Option<(f64, usize)>,
    /// Whether early stopping ended the run before `epochs`.
    pub stopped_early: bool,
    /// The epoch a resumed run continued after (0 for a fresh run).
    pub resumed_after: usize,
    /// The verdict after the last epoch.
    pub verdict: Verdict,
    /// The validation confusion matrix after the last epoch.
    pub val_confusion: Option<ConfusionMatrix>,
    /// Training samples left out as bad ([`crate::OnBadSample::Skip`]), by dataset index.
    pub skipped: Vec<crate::SkippedSample>,
    /// Checkpoints that could not be written under
    /// [`OnCheckpointError::Continue`](crate::checkpoint::OnCheckpointError::Continue).
    pub checkpoint_failures: Vec<checkpoint::CheckpointFailure>,
}

/// Trains `model` on `train` for `cfg.epochs`, evaluating on `val` after each epoch.
///
/// The model is moved to `device` with autodiff on (so BatchNorm trains in batch-statistics mode);
/// evaluation runs `model.valid()` on the plain device. Where each epoch's record goes, the
/// progress bar, checkpoints and learning-rate groups are set in [`FitOutputs`].
///
/// # Errors
///
/// An invalid config, a training set smaller than one step, a bad input shape (checked on the
/// first batch, before any step), data errors, a non-finite loss (naming the step, the lr and the
/// last good checkpoint), a checkpoint that cannot be written or resumed, or a metrics write
/// failure.
pub fn fit<M: Classifier>(
    model: M,
    train: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M>, TrainError> {
    // The batch workers borrow `train`: scoped threads, joined before `fit` returns.
    std::thread::scope(|scope| fit_in(scope, model, train, val, cfg, device, outputs))
}

/// Training batches of one epoch, in order, built on the calling thread or ahead by workers
/// (batch `i` by worker `i mod n`, each with its own bounded queue, read round-robin: the same
/// sequence for any `n`).
enum Feed<'env> {
    Inline {
        train: &'env dyn BatchSource,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        next: usize,
    },
    Workers {
        receivers: Vec<Receiver<Result<ChwBatch, TrainError>>>,
        next: usize,
        total: usize,
    },
}

/// Finished batches each worker may hold ahead of the training thread.
const PREFETCH: usize = 2;

impl<'env> Feed<'env> {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        train: &'env dyn BatchSource,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        workers: usize,
    ) -> Self {
        let total = batches.len();
        let workers = workers.min(total);
        if workers == 0 {
            return Feed::Inline {
                train,
                batches,
                epoch,
                next: 0,
            };
        }
        let batches = Arc::new(batches);
        let receivers = (0..workers)
            .map(|w| {
                let (tx, rx) = sync_channel(PREFETCH);
                let batches = Arc::clone(&batches);
                scope.spawn(move || {
                    for i in (w..total).step_by(workers) {
                        let built = build(train, &batches[i], epoch, i);
                        let failed = built.is_err();
                        // A closed queue: the training thread stopped (an error); stop too.
                        if tx.send(built).is_err() || failed {
                            break;
                        }
                    }
                });
                rx
            })
            .collect();
        Feed::Workers {
            receivers,
            next: 0,
            total,
        }
    }

    fn next_batch(&mut self) -> Result<ChwBatch, TrainError> {
        match self {
            Feed::Inline {
                train,
                batches,
                epoch,
                next,
            } => {
                let positions = batches.get(*next).ok_or_else(|| exhausted(*next))?;
                *next += 1;
                build(*train, positions, *epoch, *next - 1)
            }
            Feed::Workers {
                receivers,
                next,
                total,
            } => {
                if *next >= *total {
                    return Err(exhausted(*next));
                }
                let i = *next;
                *next += 1;
                receivers[i % receivers.len()].recv().map_err(|_| {
                    TrainError::Data(DataError::WorkerPanic {
                        batch: i,
                        message: "the batch worker stopped without a result".into(),
                    })
                })?
            }
        }
    }
}

/// One micro-batch of a step and the positions it came from.
pub(crate) struct Micro {
    pub(crate) batch: ChwBatch,
    pub(crate) positions: Vec<usize>,
}

/// What every replica needs to know to compute a step's gradients.
pub(crate) struct StepContext<'a> {
    pub(crate) loss: &'a LossConfig,
    /// Multiplies each micro-batch's mean loss (1/k for k accumulated micro-batches, and 1/n
    /// more when n replicas' gradients are summed).
    pub(crate) scale: f64,
    pub(crate) epoch: usize,
    /// 1-based step within the epoch.
    pub(crate) step: usize,
    /// `train.batch_size` and `train.accumulate`, for an out-of-memory error's hint.
    pub(crate) batch_size: usize,
    /// See `batch_size`.
    pub(crate) accumulate: usize,
    /// Check the loss settings against the model's output width (the run's first step).
    pub(crate) validate_loss: bool,
}

/// The metrics and gradients of one replica's share of a step.
#[derive(Default)]
pub(crate) struct ShardOut {
    pub(crate) loss_sum: f64,
    pub(crate) correct: usize,
    pub(crate) seen: usize,
    /// The first non-finite micro-batch loss and that micro-batch's size. Every backward pass
    /// still runs (replicas in a collective must all take part), but no step is taken.
    pub(crate) non_finite: Option<(f32, usize)>,
    pub(crate) grads: Option<GradientsParams>,
}

/// A panic caught inside a training step or an evaluation batch, as an error: an allocation
/// failure (recognised by the messages of Burn's backends, see [`allocation_failure`]) becomes
/// [`TrainError::OutOfMemory`] with the batch size and a hint, anything else
/// [`TrainError::BackendPanic`] naming where (and where it was raised).
pub(crate) fn device_failure(
    caught: &Caught,
    device: &str,
    at: RunPoint,
    batch: usize,
    accumulate: usize,
) -> TrainError {
    let message = panic_message(caught.payload.as_ref());
    match allocation_failure(&message) {
        Some(message) => TrainError::OutOfMemory {
            device: device.to_string(),
            at,
            batch,
            accumulate,
            message,
        },
        None => TrainError::BackendPanic {
            device: device.to_string(),
            at,
            message,
            location: caught.location.clone(),
        },
    }
}

/// The line of a backend's panic message that says an allocation failed, made readable; `None`
/// when nothing in it is about memory. cubecl (Burn's GPU backends) says
/// `can't allocate buffer of size: N` for one tensor larger than any buffer the device allows
/// (wgpu's binding limit: 128 MiB on Mesa's lavapipe) and `out of device memory allocating N
/// bytes` when the device is full; the message chains several `Caused by:` lines around it.
pub(crate) fn allocation_failure(message: &str) -> Option<String> {
    const MARKERS: [&str; 7] = [
        "can't allocate buffer",
        "out of device memory",
        "out of memory",
        "outofmemory",
        "out_of_memory",
        "memory allocation",
        "failed to allocate",
    ];
    let line = message.lines().map(str::trim).find(|line| {
        let lower = line.to_ascii_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    })?;
    let too_big = line
        .strip_prefix("can't allocate buffer of size: ")
        .and_then(|n| n.trim().parse::<u64>().ok());
    Some(match too_big {
        Some(bytes) => format!(
            "one tensor needs a buffer of {:.1} MiB ({bytes} bytes), more than the device allows in one buffer",
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => line.to_string(),
    })
}

/// Forward, loss and backward over `micro` on `model`, gradients summed over the micro-batches
/// (each loss scaled by `context.scale`). A panic inside the backend (out of memory, most often)
/// is caught, unprinted ([`guard::catch`]), and becomes an error naming the step.
pub(crate) fn shard_grads<M: Classifier>(
    model: &M,
    micro: Vec<Micro>,
    context: &StepContext<'_>,
    ad: &Device,
) -> Result<ShardOut, TrainError> {
    guard::catch(|| shard_grads_unguarded(model, micro, context, ad)).unwrap_or_else(|caught| {
        Err(device_failure(
            &caught,
            &crate::device::name(ad),
            RunPoint::Training {
                epoch: context.epoch,
                step: context.step,
            },
            context.batch_size,
            context.accumulate,
        ))
    })
}

fn shard_grads_unguarded<M: Classifier>(
    model: &M,
    micro: Vec<Micro>,
    context: &StepContext<'_>,
    ad: &Device,
) -> Result<ShardOut, TrainError> {
    let mut out = ShardOut::default();
    let mut accumulated: Option<GradientsAccumulator<M>> = (micro.len() > 1).then(GradientsAccumulator::new);
    for Micro { batch, positions } in micro {
        let n = batch.labels.len();
        let labels = batch.labels.clone();
        let (images, targets) = batch.into_tensors(ad);
        let logits = model.logits(images);
        if context.validate_loss {
            context.loss.validate(Some(logits.dims()[1]))?;
        }
        check_labels(&labels, &positions, logits.dims()[1], || {
            format!("training, epoch {}", context.epoch)
        })?;
        let loss = context.loss.forward(logits.clone(), targets.clone());
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() && out.non_finite.is_none() {
            out.non_finite = Some((loss_value, n));
        }
        out.correct += count_correct(logits.detach(), targets);
        out.loss_sum += f64::from(loss_value) * n as f64;
        out.seen += n;
        let loss = if context.scale == 1.0 {
            loss
        } else {
            loss.mul_scalar(context.scale)
        };
        let g = GradientsParams::from_grads(loss.backward(), model);
        match accumulated.as_mut() {
            Some(acc) => acc.accumulate(model, g),
            None => out.grads = Some(g),
        }
    }
    if let Some(mut acc) = accumulated {
        out.grads = Some(acc.grads());
    }
    Ok(out)
}

/// Batch `i`; a panicking dataset or transform becomes an error naming the batch (the panic hook
/// has already printed where it happened).
fn build(train: &dyn BatchSource, positions: &[usize], epoch: u64, i: usize) -> Result<ChwBatch, TrainError> {
    catch_unwind(AssertUnwindSafe(|| train.epoch_batch(positions, epoch))).unwrap_or_else(|payload| {
        Err(DataError::WorkerPanic {
            batch: i,
            message: panic_message(&*payload),
        }
        .into())
    })
}

fn exhausted(i: usize) -> TrainError {
    TrainError::Data(DataError::Custom(format!(
        "internal: batch {i} requested past the end of the epoch"
    )))
}

fn fit_in<'scope, 'env, M: Classifier>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    model: M,
    train: &'env dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M>, TrainError> {
    let FitOutputs {
        mut log,
        progress,
        mut on_epoch,
        mut on_warning,
        checkpoints,
        lr_groups,
        data_parallel,
    } = outputs;
    let mut warnings = Vec::new();
    let mut checkpoint_failures = Vec::new();
    cfg.validate()?;
    let micro = cfg.batch_size * cfg.accumulate;
    if train.len() < micro {
        return Err(TrainError::InvalidConfig {
            field: "batch_size",
            value: cfg.batch_size.to_string(),
            reason: format!(
                "the training set has only {} samples, fewer than one step of {} × {} (the last partial batch is dropped); lower the batch size or accumulation",
                train.len(),
                cfg.batch_size,
                cfg.accumulate
            ),
        });
    }
    let plain = device.clone().without_autodiff();
    let ad = plain.clone().autodiff();
    ad.seed(cfg.seed);
    // `fork` moves the parameters; `train` turns gradient tracking and BatchNorm training on.
    let mut model = model.fork(&ad).train();
    let mut optim = cfg.optimizer.build(lr_groups.clone())?;
    let order = BatchOrder::new(train.len(), cfg.batch_size, Some(cfg.seed), true)?;
    let steps_per_epoch = order.num_batches() / cfg.accumulate;
    let total_steps = steps_per_epoch * cfg.epochs;
    cfg.schedule.validate(cfg.lr, steps_per_epoch, total_steps)?;
    let has_val = val.is_some_and(|v| !v.is_empty());
    let monitor = cfg.monitor(has_val);
    if matches!(monitor, Monitor::ValAcc | Monitor::ValLoss) && !has_val {
        return Err(TrainError::InvalidConfig {
            field: "early_stopping.monitor",
            value: format!("{monitor:?}"),
            reason: "there is no validation split to monitor; use train_loss or add one".into(),
        });
    }

    let mut records: Vec<EpochRecord> = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize)> = None;
    let mut since_best = 0usize;
    let mut start_epoch = 1;
    let mut last_checkpoint: Option<std::path::PathBuf> = None;
    if let Some(opts) = &checkpoints {
        for path in checkpoint::remove_stale_temporaries(&opts.dir) {
            let w = format!(
                "removed {}, left by a write that was interrupted (a kill or a crash); the complete checkpoints are untouched",
                path.display()
            );
            if let Some(f) = on_warning.as_deref_mut() {
                f(&w);
            }
            warnings.push(w);
        }
    }
    if let Some(opts) = checkpoints.as_ref().filter(|o| o.resume)
        && let Some(folder) = checkpoint::latest(&opts.dir)
    {
        let restored = checkpoint::load(&folder, model)?;
        // The worker count does not change results: resuming with another one is fine.
        let saved = TrainConfig {
            num_workers: cfg.num_workers,
            ..restored.state.config.clone()
        };
        if saved != *cfg {
            return Err(TrainError::Resume {
                path: folder.join("state.json"),
                reason: "the checkpoint was written with another training config; resume with the same one (see its state.json)".into(),
            });
        }
        model = restored.model.fork(&ad).train();
        optim = optim.load_record(restored.optimizer);
        records = restored.state.records;
        best = restored.state.best;
        since_best = restored.state.epochs_since_best;
        start_epoch = restored.state.epoch + 1;
        last_checkpoint = Some(folder);
    }
    let resumed_after = start_epoch - 1;
    let mut replicas = match &data_parallel {
        Some(parallel) => {
            model = crate::parallel::prepare_main(model, parallel.sync);
            let setup = ReplicaSetup {
                optimizer: &cfg.optimizer,
                groups: &lr_groups,
                resume: last_checkpoint.clone(),
                batch_size: cfg.batch_size,
            };
            Some(Replicas::start(scope, parallel, &plain, &model, setup)?)
        }
        None => None,
    };

    let (mut seen_total, mut train_secs_total) = (0usize, 0f64);
    let mut verdict = crate::metrics::judge(&records, &cfg.verdict);
    let mut val_confusion = None;
    let mut stopped_early = false;
    for epoch in start_epoch..=cfg.epochs {
        // A generator state that depends only on (seed, epoch): resumed runs draw the same numbers.
        ad.seed(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let epoch_start = Instant::now();
        let mut batches = order.epoch(epoch as u64 - 1);
        batches.truncate(steps_per_epoch * cfg.accumulate);
        let mut feed = Feed::start(scope, train, batches.clone(), epoch as u64 - 1, cfg.num_workers);
        let bar = progress_bar(progress, steps_per_epoch, epoch, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut step_losses = Vec::with_capacity(steps_per_epoch);
        let mut train_secs = 0f64;
        let first_step = (epoch - 1) * steps_per_epoch;
        let epoch_lr = cfg
            .schedule
            .lr_at(cfg.lr, first_step, steps_per_epoch, total_steps);
        for (step, group) in batches.chunks(cfg.accumulate).take(steps_per_epoch).enumerate() {
            let global_step = first_step + step;
            let lr = cfg
                .schedule
                .lr_at(cfg.lr, global_step, steps_per_epoch, total_steps);
            // Throughput counts batch assembly too, as the PyTorch peer's timed loop does.
            let t = Instant::now();
            let mut micro = Vec::with_capacity(group.len());
            for positions in group {
                let batch = feed.next_batch()?;
                if epoch == start_epoch && step == 0 && micro.is_empty() {
                    model.check_input(&batch.shape)?;
                    // Does the first batch look normalised? (mean ≈ 0, std ≈ 1 per channel)
                    if let Some(norm) = train.normalization() {
                        for w in check_batch(&batch.data, batch.shape, norm).warnings {
                            let w = w.to_string();
                            if let Some(f) = on_warning.as_deref_mut() {
                                f(&w);
                            }
                            warnings.push(w);
                        }
                    }
                }
                micro.push(Micro {
                    batch,
                    positions: positions.clone(),
                });
            }
            let context = StepContext {
                loss: &cfg.loss,
                // Averaging, not summing: each micro-batch contributes loss / k.
                scale: 1.0 / cfg.accumulate as f64,
                epoch,
                step: step + 1,
                batch_size: cfg.batch_size,
                accumulate: cfg.accumulate,
                validate_loss: epoch == start_epoch && step == 0,
            };
            let (out, grads) = match replicas.as_mut() {
                None => {
                    let out = shard_grads(&model, micro, &context, &ad)?;
                    let grads = out.grads.unwrap_or_default();
                    (ShardOut { grads: None, ..out }, grads)
                }
                Some(r) => r.grads(&model, micro, &context, &ad)?,
            };
            if let Some((loss, n)) = out.non_finite {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step: step + 1,
                    loss,
                    batch: n,
                    lr,
                    checkpoint: last_checkpoint.clone(),
                });
            }
            correct += out.correct;
            loss_sum += out.loss_sum;
            seen += out.seen;
            step_losses.push(out.loss_sum / out.seen.max(1) as f64);
            let mut grads = grads;
            if let Some(max_norm) = cfg.clip_grad_norm {
                clip_grad_norm(&model, &mut grads, max_norm);
            }
            if let Some(r) = replicas.as_mut() {
                r.apply(&model, &grads, lr, cfg.clip_grad_norm)?;
            }
            model = optim.step(lr, model, grads);
            train_secs += t.elapsed().as_secs_f64();
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4}  lr {lr:.4}  {:.0} img/s",
                loss_sum / seen as f64,
                seen as f64 / train_secs.max(1e-9)
            ));
        }
        bar.finish_and_clear();
        let val_eval = match val {
            Some(v) if !v.is_empty() => Some(evaluate_with_confusion(
                &model.valid(),
                v,
                cfg.batch_size,
                &plain,
            )?),
            _ => None,
        };
        let mut record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_acc: correct as f64 / seen as f64,
            val_loss: val_eval.as_ref().map(|(m, _)| m.loss),
            val_acc: val_eval.as_ref().map(|(m, _)| m.accuracy),
            val_top5: val_eval.as_ref().map(|(m, _)| m.top5),
            lr: epoch_lr,
            train_images_per_s: seen as f64 / train_secs.max(1e-9),
            seconds: 0.0,
            verdict: None,
            step_losses,
        };
        val_confusion = val_eval.map(|(_, c)| c);
        records.push(record.clone());
        verdict = crate::metrics::judge(&records, &cfg.verdict);
        record.verdict = Some(verdict.to_string());

        // Best model and early stopping.
        let min_delta = cfg.early_stopping.map_or(0.0, |e| e.min_delta);
        let improved = match (monitor.value(&record), best) {
            (Some(v), Some((b, _))) => monitor.better(v, b, min_delta),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            best = monitor.value(&record).map(|v| (v, epoch));
            since_best = 0;
        } else {
            since_best += 1;
        }
        record.seconds = epoch_start.elapsed().as_secs_f64();
        if let Some(last) = records.last_mut() {
            *last = record.clone();
        }
        if let Some(opts) = &checkpoints {
            let state = CheckpointState {
                kiln_version: env!("CARGO_PKG_VERSION").to_string(),
                epoch,
                global_step: first_step + steps_per_epoch,
                config: cfg.clone(),
                records: records.clone(),
                best,
                epochs_since_best: since_best,
            };
            let written = (|| -> Result<std::path::PathBuf, TrainError> {
                if improved {
                    std::fs::create_dir_all(&opts.dir).map_err(|e| TrainError::Write {
                        path: opts.dir.clone(),
                        reason: e.to_string(),
                    })?;
                    kiln_models::weights::save_weights(&model.valid(), &opts.dir.join("best.bpk"), None)?;
                }
                checkpoint::save(opts, &model, &optim, &state)
            })();
            match written {
                Ok(folder) => last_checkpoint = Some(folder),
                // Stop: the error ends the run now. Continue: a warning now (the user may be
                // hours from the end), and the failure is listed in the result.
                Err(e) => match opts.on_error {
                    checkpoint::OnCheckpointError::Stop => {
                        return Err(TrainError::CheckpointFailed {
                            epoch,
                            last_good: last_checkpoint,
                            error: Box::new(e),
                        });
                    }
                    checkpoint::OnCheckpointError::Continue => {
                        let last_good = last_checkpoint
                            .as_ref()
                            .map_or_else(|| "none".to_string(), |p| p.display().to_string());
                        let w = format!(
                            "epoch {epoch}'s checkpoint could not be written: {e}; training goes on (checkpoints.on_error = \"continue\"), last good checkpoint: {last_good}"
                        );
                        if let Some(f) = on_warning.as_deref_mut() {
                            f(&w);
                        }
                        warnings.push(w);
                        checkpoint_failures.push(checkpoint::CheckpointFailure {
                            epoch,
                            error: e.to_string(),
                        });
                    }
                },
            }
        }
        if let Some(log) = log.as_deref_mut() {
            log.append(&record)?;
        }
        if let Some(f) = on_epoch.as_deref_mut() {
            f(&record);
        }
        seen_total += seen;
        train_secs_total += train_secs;
        if let Some(e) = cfg.early_stopping
            && since_best >= e.patience
            && epoch < cfg.epochs
        {
            stopped_early = true;
            break;
        }
    }
    Ok(FitResult {
        model,
        epochs: records,
        train_images_per_s: seen_total as f64 / train_secs_total.max(1e-9),
        warnings,
        best,
        stopped_early,
        resumed_after,
        verdict,
        val_confusion,
        skipped: train.skipped(),
        checkpoint_failures,
    })
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`coef = max_norm / (norm + 1e-6)`, applied when < 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SquaredNorm<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for SquaredNorm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s: f32 = g.powi_scalar(2).sum().into_scalar();
                self.sum += f64::from(s);
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        coef: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.coef));
            }
        }
    }
    let mut norm = SquaredNorm { grads, sum: 0.0 };
    model.visit(&mut norm);
    let total = norm.sum.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        model.visit(&mut Scale { grads, coef });
    }
    total
}

/// Mean loss and accuracy of `model` (already in eval mode, e.g. `model.valid()`) over `source`,
/// in dataset order, in batches of `batch_size`, on `device` (a plain device: no autodiff graph).
///
/// # Errors
///
/// Data errors, a bad input shape, a zero batch size, a label the model has no output for, or
/// a device failure ([`TrainError::OutOfMemory`] when a batch does not fit).
pub fn evaluate<M: Classifier>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<EvalMetrics, TrainError> {
    evaluate_with_confusion(model, source, batch_size, device).map(|(m, _)| m)
}

/// [`evaluate`] plus the confusion matrix (rows: true class, columns: predicted), from which
/// per-class accuracy follows.
///
/// # Errors
///
/// As [`evaluate`].
pub fn evaluate_with_confusion<M: Classifier>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<(EvalMetrics, ConfusionMatrix), TrainError> {
    let order = BatchOrder::new(source.len(), batch_size, None, false)?;
    let loss_fn = LossConfig::default();
    let (mut loss_sum, mut top5, mut seen) = (0f64, 0usize, 0usize);
    let mut confusion: Option<ConfusionMatrix> = None;
    for (i, positions) in order.epoch(0).into_iter().enumerate() {
        let batch = source.batch(&positions)?;
        model.check_input(&batch.shape)?;
        let n = batch.labels.len();
        // The device's part, guarded: an out-of-memory panic becomes an error naming the batch.
        let scored = guard::catch(|| score_batch(model, batch, &positions, &loss_fn, device))
            .unwrap_or_else(|caught| {
                Err(device_failure(
                    &caught,
                    &crate::device::name(device),
                    RunPoint::Evaluation { batch: i + 1 },
                    batch_size,
                    1,
                ))
            })?;
        loss_sum += f64::from(scored.loss) * n as f64;
        top5 += scored.within_top5;
        let m = confusion.get_or_insert_with(|| ConfusionMatrix::new(scored.classes));
        for (t, p) in scored.truth.iter().zip(&scored.predicted) {
            m.add(*t as usize, *p as usize);
        }
        seen += n;
    }
    let confusion = confusion.unwrap_or_else(|| ConfusionMatrix::new(0));
    let denom = seen.max(1) as f64;
    Ok((
        EvalMetrics {
            loss: loss_sum / denom,
            accuracy: confusion.accuracy(),
            top5: top5 as f64 / denom,
            samples: seen,
        },
        confusion,
    ))
}

/// One evaluation batch's results.
struct Scored {
    loss: f32,
    within_top5: usize,
    classes: usize,
    truth: Vec<i64>,
    predicted: Vec<i64>,
}

/// Mean loss, top-5 hits, labels and predictions of one batch.
fn score_batch<M: Classifier>(
    model: &M,
    batch: ChwBatch,
    positions: &[usize],
    loss_fn: &LossConfig,
    device: &Device,
) -> Result<Scored, TrainError> {
    let labels = batch.labels.clone();
    let (images, targets) = batch.into_tensors(device);
    let logits = model.logits(images);
    let classes = logits.dims()[1];
    check_labels(&labels, positions, classes, || "evaluation".into())?;
    let loss: f32 = loss_fn.forward(logits.clone(), targets.clone()).into_scalar();
    // Top-k: the label's logit is beaten by fewer than k others.
    let k = classes.min(5);
    let label_logit = logits.clone().gather(1, targets.clone().unsqueeze_dim(1));
    let beaten_by: Tensor<1, Int> = logits
        .clone()
        .greater(label_logit)
        .int()
        .sum_dim(1)
        .squeeze_dim(1);
    let within: i64 = beaten_by.lower_elem(k as i64).int().sum().into_scalar();
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    Ok(Scored {
        loss,
        within_top5: usize::try_from(within).unwrap_or(0),
        classes,
        truth: targets.into_data().try_into_vec_as::<i64>().unwrap_or_default(),
        predicted: predicted.into_data().try_into_vec_as::<i64>().unwrap_or_default(),
    })
}

/// Refuses a batch with a label ≥ `classes` before it reaches the loss (where Burn's gather would
/// panic).
pub(crate) fn check_labels(
    labels: &[u32],
    positions: &[usize],
    classes: usize,
    context: impl FnOnce() -> String,
) -> Result<(), TrainError> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(TrainError::LabelOutOfRange {
            label: labels[i],
            position: positions.get(i).copied().unwrap_or(i),
            classes,
            context: context(),
        }),
        None => Ok(()),
    }
}

fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let hits: i64 = predicted.equal(targets).int().sum().into_scalar();
    usize::try_from(hits).unwrap_or(0)
}

fn progress_bar(enabled: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation failures Burn's GPU backends raise as panics (cubecl 0.11's wording, inside
    /// its chain of causes), and any other panic, become errors naming where, the OOM one with
    /// the batch size and the fix. The wgpu message is the one `tests/backends.rs` provokes on
    /// lavapipe; the CUDA one is `IoError::OutOfMemory`'s text in cubecl-runtime 0.11.3.
    #[test]
    fn a_panic_in_the_backend_becomes_an_error_and_oom_gets_a_hint() {
        let caught = |message: String, location: Option<&str>| Caught {
            payload: Box::new(message),
            location: location.map(str::to_string),
        };
        let too_big = caught(
            "Error while reading data: use `try_into_scalar` instead to catch the error at runtime: Execution(An error happened during execution\nCaused by:\n  Several failures at once\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 135266304\nNo backtrace available)".to_string(),
            Some("burn-tensor/src/tensor/api/base.rs:1:1"),
        );
        let at = RunPoint::Training { epoch: 3, step: 17 };
        let msg = device_failure(&too_big, "Wgpu", at, 256, 1).to_string();
        assert_eq!(
            msg.lines().next(),
            Some(
                "out of memory on Wgpu at epoch 3, step 17 (batch_size 256): one tensor needs a buffer of 129.0 MiB (135266304 bytes), more than the device allows in one buffer"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("lower train.batch_size (e.g. 128)") && msg.contains("train.accumulate = 2"),
            "{msg}"
        );
        // An allocation failure's location is the backend's, of no use to the user.
        assert!(!msg.contains("base.rs"), "{msg}");
        let full = caught(
            "An IO error happened\nCaused by:\n  out of device memory allocating 2147483648 bytes\n"
                .to_string(),
            None,
        );
        let msg = device_failure(&full, "Cuda(0)", RunPoint::Evaluation { batch: 4 }, 1000, 1).to_string();
        assert!(
            msg.starts_with(
                "out of memory on Cuda(0) at evaluation batch 4 (batch_size 1000): out of device memory allocating 2147483648 bytes\n"
            ) && msg.contains("lower the batch size (e.g. 500;")
                && msg.contains("evaluation on its own can use a smaller one")
                && !msg.contains("accumulate"),
            "{msg}"
        );
        let other = caught("index out of bounds".into(), None);
        let msg = device_failure(&other, "Flex", RunPoint::Training { epoch: 1, step: 2 }, 8, 1).to_string();
        assert_eq!(
            msg,
            "the backend failed on Flex at epoch 1, step 2: index out of bounds"
        );
        // Where it was raised, when the guard saw it (the hook printed nothing).
        let located = caught("index out of bounds".into(), Some("src/model.rs:42:9"));
        let msg = device_failure(&located, "flex", RunPoint::Evaluation { batch: 1 }, 8, 1).to_string();
        assert_eq!(
            msg,
            "the backend failed on flex at evaluation batch 1: index out of bounds\n  panicked at src/model.rs:42:9 (RUST_BACKTRACE=1 prints the panic with its backtrace)"
        );
    }

    #[test]
    fn defaults_are_pytorch_sgd_semantics() {
        let c = TrainConfig::default();
        assert_eq!(c.optimizer, OptimizerConfig::sgd(0.9, 5e-4));
        assert!(
            matches!(c.optimizer, OptimizerConfig::Sgd { dampening, nesterov: false, .. } if dampening == 0.0)
        );
        c.validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases: [(TrainConfig, &str); 4] = [
            (
                TrainConfig {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                TrainConfig {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig::sgd(1.0, 0.0),
                    ..Default::default()
                },
                "optimizer.momentum",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig::Sgd {
                        momentum: 0.9,
                        dampening: 0.1,
                        nesterov: true,
                        weight_decay: 0.0,
                        decay_norm_and_bias: false,
                    },
                    ..Default::default()
                },
                "optimizer.nesterov",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(TrainError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn clipping_scales_the_global_norm_like_pytorch() {
        // torch.nn.utils.clip_grad_norm_(params, max_norm): total = ‖all grads‖₂,
        // each grad *= max_norm / (total + 1e-6) when that is < 1.
        use burn::nn::LinearConfig;
        let d = Device::flex().autodiff();
        d.seed(2);
        let layer = LinearConfig::new(4, 3).init(&d);
        let x = Tensor::<2>::random([5, 4], burn::tensor::Distribution::Normal(0.0, 3.0), &d);
        let loss = layer.forward(x).powi_scalar(2).mean();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let w0 = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let total = clip_grad_norm(&layer, &mut grads, 1e9);
        let by_hand: f64 = {
            let b = grads.get::<1>(layer.bias.as_ref().unwrap().id).unwrap();
            let sq = |v: Vec<f32>| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
            (sq(w0.clone()) + sq(b.into_data().try_to_vec::<f32>().unwrap())).sqrt()
        };
        assert!((total - by_hand).abs() < 1e-4 * by_hand, "{total} vs {by_hand}");
        let again = clip_grad_norm(&layer, &mut grads, total / 4.0);
        assert!((again - total).abs() < 1e-4 * total, "unchanged by a large max");
        let after = clip_grad_norm(&layer, &mut grads, 1e9);
        assert!(
            (after - total / 4.0).abs() < 1e-4 * total,
            "{after} vs {}",
            total / 4.0
        );
        let w1 = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in w1.iter().zip(&w0) {
            assert!(
                (a * 4.0 - b).abs() < 1e-4 * b.abs().max(1.0),
                "every tensor scaled by the same factor"
            );
        }
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert!(serde_json::from_str::<TrainConfig>(r#"{"epochs": 2, "learning_rate": 0.1}"#).is_err());
        let c: TrainConfig = serde_json::from_str(
            r#"{"epochs": 2, "optimizer": {"name": "adamw"}, "schedule": {"schedule": {"name": "one-cycle"}, "warmup": null}}"#,
        )
        .unwrap();
        assert_eq!(c.epochs, 2);
        assert_eq!(c.optimizer, OptimizerConfig::adamw());
        assert_eq!(c.schedule.schedule.name(), "one-cycle");
        assert_eq!(c.batch_size, 128);
    }
}
