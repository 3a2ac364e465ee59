//! The training loop.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_data::BatchOrder;
use kiln_models::Classifier;
use serde::{Deserialize, Deserializer, Serialize};

use crate::checkpoint::{self, CheckpointOptions, CheckpointState};
use crate::cluster::Cluster;
use crate::evaluate::evaluate_task;
use crate::feed::Feed;
use crate::metrics::{ConfusionMatrix, Verdict};
use crate::parallel::{DataParallel, ReplicaSetup, Replicas};
use crate::step::{Micro, StepContext, clip_grad_norm, shard_grads};
use crate::task::{ClassStats, Classification, Metric, Task};
use crate::{BatchSource, LrGroup, MetricsLog, Monitor, TrainConfig, TrainError};

/// What one epoch measured (one line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation loss, when there is a validation split.
    pub val_loss: Option<f64>,
    /// The task's metrics ([`Metric`]) as `train_<key>` (over the epoch's steps, with the
    /// weights as they were at each step) and `val_<key>`: `train_acc`, `val_acc` and
    /// `val_top5` for classification. Written as top-level fields of the record's JSON line.
    #[serde(flatten, deserialize_with = "present_metrics")]
    pub metrics: BTreeMap<String, f64>,
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

/// Metric fields of a record's JSON line, leaving out those written as `null` (a non-finite
/// value, or a validation metric of a run without validation written by an older kiln).
fn present_metrics<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let all = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(all.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
}

impl EpochRecord {
    /// A metric by its record key (`train_acc`, `val_acc`, `val_top5`).
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }

    /// The training value of `m` (`train_<key>`).
    pub fn train(&self, m: &Metric) -> Option<f64> {
        self.metric(&format!("train_{}", m.key))
    }

    /// The validation value of `m` (`val_<key>`).
    pub fn val(&self, m: &Metric) -> Option<f64> {
        self.metric(&format!("val_{}", m.key))
    }

    /// The epoch as one line of a run's output (`epoch 3/10  lr=0.0327  train_loss=… train_acc=…
    /// val_loss=… val_acc=…`).
    pub fn line(&self, epochs: usize) -> String {
        let part = |prefix: &str| -> String {
            self.metrics
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| format!(" {k}={v:.4}"))
                .collect()
        };
        let val = match self.val_loss {
            Some(l) => format!("val_loss={l:.4}{}", part("val_")),
            None => "no validation split".to_string(),
        };
        format!(
            "epoch {}/{epochs}  lr={:.4}  train_loss={:.4}{}  {val}  {:.0} img/s  {:.1}s",
            self.epoch,
            self.lr,
            self.train_loss,
            part("train_"),
            self.train_images_per_s,
            self.seconds
        )
    }
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
    /// Train as one of several processes ([`crate::cluster`]): this rank takes its shard of each
    /// global batch and the gradients are summed over the ranks. Only rank 0 evaluates, writes
    /// checkpoints and calls `log`, `on_epoch` and `on_warning`; the other ranks' results hold
    /// no validation figures.
    pub cluster: Option<&'a dyn Cluster>,
}

/// The trained model and what the run measured (`S`: the task's statistics).
#[derive(Debug)]
pub struct FitResult<M, S = ClassStats> {
    /// The trained model, on the autodiff device (call `.valid()` for inference).
    pub model: M,
    /// The running average of the weights (`train.ema`), in evaluation mode on the plain device.
    pub ema: Option<M>,
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
    /// The task's validation statistics after the last epoch (for classification, with the
    /// confusion matrix: [`FitResult::val_confusion`]).
    pub val_stats: Option<S>,
    /// Training samples left out as bad ([`crate::OnBadSample::Skip`]), by dataset index.
    pub skipped: Vec<crate::SkippedSample>,
    /// Checkpoints that could not be written under
    /// [`OnCheckpointError::Continue`](crate::checkpoint::OnCheckpointError::Continue).
    pub checkpoint_failures: Vec<checkpoint::CheckpointFailure>,
    /// What summing the gradients over the ranks cost (a run across processes only).
    pub allreduce: Option<AllReduceCost>,
}

/// The time the ranks spent summing gradients, over the steps this call ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllReduceCost {
    /// Steps whose gradients were summed.
    pub steps: usize,
    /// Seconds spent (copying the gradients out and back included), in all.
    pub seconds: f64,
    /// Bytes each rank sends into the sum per step (f32 gradients and one flag per parameter).
    pub bytes_per_step: usize,
    /// Training seconds of the same steps, the sums included.
    pub train_seconds: f64,
}

impl<M> FitResult<M, ClassStats> {
    /// The validation confusion matrix after the last epoch.
    pub fn val_confusion(&self) -> Option<&ConfusionMatrix> {
        self.val_stats.as_ref().and_then(|s| s.confusion.as_ref())
    }
}

/// Trains the classifier `model` on `train` for `cfg.epochs` with cross-entropy (`cfg.loss`),
/// evaluating on `val` after each epoch: [`fit_task`] with [`Classification`].
///
/// # Errors
///
/// As [`fit_task`].
pub fn fit<M: Classifier>(
    model: M,
    train: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M>, TrainError> {
    fit_task(
        &Classification::for_training(cfg),
        model,
        train,
        val,
        cfg,
        device,
        outputs,
    )
}

/// Trains `model` on `task` with `train` for `cfg.epochs`, evaluating on `val` after each epoch.
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
pub fn fit_task<M: Module + 'static, T: Task<M>>(
    task: &T,
    model: M,
    train: &dyn BatchSource<T::Batch>,
    val: Option<&dyn BatchSource<T::Batch>>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M, T::Stats>, TrainError> {
    // The batch workers borrow `train`, the replicas `task`: scoped threads, joined before
    // `fit_task` returns.
    std::thread::scope(|scope| fit_in(scope, task, model, train, val, cfg, device, outputs))
}

#[allow(clippy::too_many_arguments)] // fit_task's arguments and the scope
fn fit_in<'scope, 'env, M: Module + 'static, T: Task<M>>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    task: &'env T,
    model: M,
    train: &'env dyn BatchSource<T::Batch>,
    val: Option<&dyn BatchSource<T::Batch>>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M, T::Stats>, TrainError> {
    let FitOutputs {
        log,
        progress,
        on_epoch,
        on_warning,
        checkpoints,
        lr_groups,
        data_parallel,
        cluster,
    } = outputs;
    let (rank, ranks) = cluster.map_or((0, 1), |c| (c.rank(), c.size()));
    // Rank 0 evaluates, writes and reports; the others train.
    let leader = rank == 0;
    let (mut log, mut on_epoch, mut on_warning) = if leader {
        (log, on_epoch, on_warning)
    } else {
        (None, None, None)
    };
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
    if let Some(c) = cluster {
        let devices = data_parallel.as_ref().map_or(1, |p| p.devices.len());
        crate::cluster::check_batch_size(c, cfg.batch_size, devices)?;
    }
    let plain = device.clone().without_autodiff();
    let ad = plain.clone().autodiff();
    ad.seed(cfg.seed);
    // `fork` moves the parameters; `train` turns gradient tracking and BatchNorm training on.
    let mut model = model.fork(&ad).train();
    if let Some(c) = cluster {
        model = crate::cluster::same_weights(c, model)?;
    }
    let mut optim = cfg.optimizer.build(lr_groups.clone())?;
    // timm's ModelEmaV3 starts as a copy of the model before the first step.
    let mut ema = cfg.ema.map(|c| crate::ModelEma::new(c, &model));
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
    if let Some(opts) = checkpoints.as_ref().filter(|_| leader) {
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
        // The worker count does not change results: resuming with another one is fine; more
        // epochs extend the run (the schedule is then planned over the new length).
        let saved = TrainConfig {
            num_workers: cfg.num_workers,
            epochs: cfg.epochs,
            ..restored.state.config.clone()
        };
        if saved != *cfg {
            return Err(TrainError::Resume {
                path: folder.join("state.json"),
                reason: "the checkpoint was written with another training config; resume with the same one (see its state.json)".into(),
            });
        }
        model = restored.model.fork(&ad).train();
        if let (Some(c), Some(weights)) = (cfg.ema, restored.ema) {
            ema = Some(crate::ModelEma::from_weights(c, weights.fork(&plain)));
        }
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
                batch_size: cfg.batch_size / ranks,
            };
            Some(Replicas::start(scope, task, parallel, &plain, &model, setup)?)
        }
        None => None,
    };

    let (mut seen_total, mut train_secs_total) = (0usize, 0f64);
    let mut allreduce: Option<AllReduceCost> = None;
    let primary = task.primary();
    let mut verdict = crate::metrics::judge(&records, &cfg.verdict, &primary);
    let mut val_stats = None;
    let mut stopped_early = false;
    for epoch in start_epoch..=cfg.epochs {
        // A generator state that depends only on (seed, epoch): resumed runs draw the same numbers.
        ad.seed(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let epoch_start = Instant::now();
        let mut batches = order.epoch(epoch as u64 - 1);
        batches.truncate(steps_per_epoch * cfg.accumulate);
        if ranks > 1 {
            // This rank's contiguous shard of every global batch: it reads only its samples.
            batches = batches
                .iter()
                .map(|b| crate::cluster::shard(b, rank, ranks))
                .collect();
        }
        let mut feed = Feed::start(scope, train, batches.clone(), epoch as u64 - 1, cfg.num_workers);
        let bar = progress_bar(
            progress && leader,
            steps_per_epoch,
            format!("epoch {epoch}/{}", cfg.epochs),
        );
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        let mut stats = T::Stats::default();
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
                    for w in task.check_first_batch(&model, &batch, train.normalization())? {
                        if let Some(f) = on_warning.as_deref_mut() {
                            f(&w);
                        }
                        warnings.push(w);
                    }
                }
                micro.push(Micro {
                    batch,
                    positions: positions.clone(),
                });
            }
            let context = StepContext {
                // Averaging, not summing: each micro-batch contributes loss / k, and each rank's
                // share 1/ranks more (the ranks' gradients are summed).
                scale: 1.0 / cfg.accumulate as f64 / ranks as f64,
                epoch,
                step: step + 1,
                batch_size: cfg.batch_size,
                accumulate: cfg.accumulate,
                first: epoch == start_epoch && step == 0,
            };
            let (mut out, mut grads) = match replicas.as_mut() {
                None => {
                    let mut out = shard_grads(task, &model, micro, &context, &ad)?;
                    let grads = out.grads.take().unwrap_or_default();
                    (out, grads)
                }
                Some(r) => r.grads(task, &model, micro, &context, &ad)?,
            };
            if let Some(c) = cluster {
                // The step's loss and sample count over all ranks; a non-finite loss on any rank
                // stops every rank at this step.
                let mut sums = [
                    out.loss_sum,
                    out.seen as f64,
                    f64::from(u8::from(out.non_finite.is_some())),
                ];
                c.sum_f64(&mut sums)?;
                out.loss_sum = sums[0];
                out.seen = sums[1] as usize;
                if sums[2] > 0.0 && out.non_finite.is_none() {
                    out.non_finite = Some((sums[0] as f32, out.seen));
                }
            }
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
            task.merge(&mut stats, out.stats);
            loss_sum += out.loss_sum;
            seen += out.seen;
            step_losses.push(out.loss_sum / out.seen.max(1) as f64);
            if let Some(c) = cluster {
                let t = Instant::now();
                let floats = crate::cluster::sum_grads(c, &model, &mut grads, &plain)?;
                let cost = allreduce.get_or_insert(AllReduceCost {
                    steps: 0,
                    seconds: 0.0,
                    bytes_per_step: floats * 4,
                    train_seconds: 0.0,
                });
                cost.steps += 1;
                cost.seconds += t.elapsed().as_secs_f64();
            }
            if let Some(max_norm) = cfg.clip_grad_norm {
                clip_grad_norm(&model, &mut grads, max_norm);
            }
            if let Some(r) = replicas.as_mut() {
                r.apply(&model, &grads, lr, cfg.clip_grad_norm)?;
            }
            model = optim.step(lr, model, grads);
            if let Some(e) = ema.as_mut() {
                // timm passes the number of optimizer steps taken so far.
                let taken = global_step + 1;
                if e.due(taken) {
                    e.update(&model, taken);
                }
            }
            train_secs += t.elapsed().as_secs_f64();
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4}  lr {lr:.4}  {:.0} img/s",
                loss_sum / seen as f64,
                seen as f64 / train_secs.max(1e-9)
            ));
        }
        bar.finish_and_clear();
        if let Some(c) = cluster {
            stats = crate::cluster::gather_stats(c, stats, |into, other| task.merge(into, other))?;
        }
        let val_eval = match val {
            Some(v) if !v.is_empty() && leader => {
                Some(evaluate_task(task, &model.valid(), v, cfg.batch_size, &plain)?)
            }
            _ => None,
        };
        // Finite losses at every step do not make a finite model: a step at a huge rate can leave
        // NaN weights that only the next forward pass shows.
        let diverged = |what, value: f64| TrainError::Diverged {
            epoch,
            what,
            value,
            checkpoint: last_checkpoint.clone(),
        };
        if let Some(v) = val_eval.as_ref().map(|e| e.loss).filter(|l| !l.is_finite()) {
            return Err(diverged("the validation loss", v));
        }
        if let Some(v) = crate::step::non_finite_weight(&model) {
            return Err(diverged("a weight", v));
        }
        let ema_eval = match (val, &ema) {
            (Some(v), Some(e)) if !v.is_empty() && leader => {
                Some(evaluate_task(task, e.model(), v, cfg.batch_size, &plain)?)
            }
            _ => None,
        };
        let mut metrics: BTreeMap<String, f64> = task
            .metrics(&stats, seen)
            .into_iter()
            .map(|(k, v)| (format!("train_{k}"), v))
            .collect();
        if let Some(e) = &val_eval {
            metrics.extend(
                task.metrics(&e.stats, e.samples)
                    .into_iter()
                    .map(|(k, v)| (format!("val_{k}"), v)),
            );
        }
        if let Some(e) = &ema_eval {
            metrics.insert("val_ema_loss".into(), e.loss);
            metrics.extend(
                task.metrics(&e.stats, e.samples)
                    .into_iter()
                    .map(|(k, v)| (format!("val_ema_{k}"), v)),
            );
        }
        let mut record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen as f64,
            val_loss: val_eval.as_ref().map(|e| e.loss),
            metrics,
            lr: epoch_lr,
            train_images_per_s: seen as f64 / train_secs.max(1e-9),
            seconds: 0.0,
            verdict: None,
            step_losses,
        };
        val_stats = val_eval.map(|e| e.stats);
        records.push(record.clone());
        verdict = crate::metrics::judge(&records, &cfg.verdict, &primary);
        record.verdict = Some(verdict.to_string());

        // Best model and early stopping (on the averaged weights' figures when they choose).
        let min_delta = cfg.early_stopping.map_or(0.0, |e| e.min_delta);
        let on_ema = ema_eval.is_some() && cfg.ema.is_some_and(|c| c.best_on == crate::ema::EmaBestOn::Ema);
        let current = monitor.value_of(&record, &primary, on_ema);
        let improved = match (current, best) {
            (Some(v), Some((b, _))) => monitor.better(v, b, min_delta, &primary),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            best = current.map(|v| (v, epoch));
            since_best = 0;
        } else {
            since_best += 1;
        }
        record.seconds = epoch_start.elapsed().as_secs_f64();
        if let Some(last) = records.last_mut() {
            *last = record.clone();
        }
        if let Some(opts) = checkpoints.as_ref().filter(|_| leader) {
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
                    let best_path = opts.dir.join("best.bpk");
                    match (&ema, on_ema) {
                        (Some(e), true) => kiln_models::weights::save_weights(e.model(), &best_path, None)?,
                        _ => kiln_models::weights::save_weights(&model.valid(), &best_path, None)?,
                    };
                }
                checkpoint::save(opts, &model, &optim, &state, ema.as_ref().map(|e| e.model()))
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
        if let Some(cost) = allreduce.as_mut() {
            cost.train_seconds = train_secs_total;
        }
        let mut stop = cfg.early_stopping.is_some_and(|e| since_best >= e.patience) && epoch < cfg.epochs;
        if let Some(c) = cluster {
            // Rank 0 alone saw the validation figures: its decision holds for every rank.
            let mut decision = [f64::from(u8::from(stop))];
            c.broadcast_f64(&mut decision)?;
            stop = decision[0] > 0.0;
        }
        if stop {
            stopped_early = true;
            break;
        }
    }
    // A resume with no epoch left to train: the rate of the epochs the run did train.
    let train_images_per_s = if seen_total == 0 && !records.is_empty() {
        records.iter().map(|r| r.train_images_per_s).sum::<f64>() / records.len() as f64
    } else {
        seen_total as f64 / train_secs_total.max(1e-9)
    };
    Ok(FitResult {
        model,
        ema: ema.map(|e| e.model().clone()),
        epochs: records,
        train_images_per_s,
        warnings,
        best,
        stopped_early,
        resumed_after,
        verdict,
        val_stats,
        skipped: train.skipped(),
        checkpoint_failures,
        allreduce,
    })
}

/// A bar of `len` steps on stderr (drawn only on a terminal), labelled `prefix`.
pub(crate) fn progress_bar(enabled: bool, len: usize, prefix: String) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}
