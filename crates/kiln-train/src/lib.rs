//! # kiln-train
//!
//! The explicit training loop — forward, cross-entropy on logits with integer labels, mean loss,
//! backward, optimizer step — with the guards a careful practitioner adds by hand:
//!
//! * [`device`] — the device is chosen at run time ([`DeviceSpec`]: `flex`, `wgpu`, `cuda[:N]`,
//!   `ndarray`); a backend that was not compiled in is an error naming the cargo feature, never a
//!   panic and never a silent fallback to another backend.
//! * [`source`] — a dataset plus its normalization, served as float batches ([`BatchSource`]).
//! * [`task`] — what is learned ([`Task`]: the batch, the loss, the metrics); [`Classification`]
//!   is the first task, and the loop, evaluation, data parallelism and the diagnostics are written
//!   once over it.
//! * [`fit`](mod@fit) — the loop ([`fit_task`], [`fit()`] for classification, [`evaluate()`]) with PyTorch's SGD semantics (momentum
//!   0.9, **dampening 0**, coupled weight decay), evaluation each epoch through `model.valid()`
//!   (BatchNorm in eval mode, no autodiff), a NaN/inf loss stopping the run with the step that
//!   produced it, and a progress bar showing loss and images/s.
//! * [`optim`] — SGD, Adam and AdamW with PyTorch's update rules and defaults, no weight decay on
//!   biases and BatchNorm γ/β by default, learning-rate groups ([`OptimizerConfig`]).
//! * [`cluster`] — several processes training one model ([`Cluster`]; over MPI with the `mpi`
//!   feature, `mpirun -np N kiln train`): each rank's shard of every batch, gradients summed.
//! * [`schedule`] — learning-rate schedules as pure functions of the step ([`LrSchedule`]).
//! * [`data`] — a run file's data: the format detected from the folder, the three splits.
//! * [`runner`] — a whole run from a run file (what `kiln train` does), reporting through
//!   [`runner::RunEvent`]s.
//! * [`detection`], [`detection_run`] — detection as a task ([`detection::DetectionTask`] for any
//!   registered detector), a detector's run from a run file, detector weights evaluated with COCO
//!   AP ([`coco_eval`]) or asked for boxes.
//! * [`infer`] — trained weights rebuilt from their spec, evaluated or asked for probabilities.
//! * [`inspect`] — `dataset[N]` and the first batch as the model gets it (what `kiln inspect` shows).
//! * [`ablation`] — matched short runs that test one claim (what `kiln ablate` runs).
//! * [`run`] — the run directory: `config.json`, `metrics.jsonl` (one line per epoch, flushed as it
//!   is written), `model.bpk`.
//!
//! Why there is no `zero_grad`: Burn's `loss.backward()` returns a fresh gradient set each step and
//! the optimizer consumes it, so stale gradients cannot accumulate by accident.
//!
//! Invariant: library code returns [`TrainError`]; it prints nothing except the progress bar
//! (drawn only on a terminal).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod ablation;
pub mod checkpoint;
pub mod cluster;
pub mod coco_eval;
pub mod config;
pub mod data;
pub mod detection;
pub mod detection_run;
pub mod device;
pub mod diagnose;
pub mod ema;
pub mod error;
pub mod evaluate;
mod feed;
pub mod fit;
mod guard;
pub mod infer;
pub mod inspect;
pub mod loss;
pub mod metrics;
pub mod mixup;
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub mod mpi;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod report;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod source;
mod step;
pub mod task;
pub mod tensorboard;
pub mod train_config;

pub use checkpoint::{CheckpointFailure, CheckpointOptions, OnCheckpointError};
pub use cluster::{Cluster, LocalCluster};
pub use coco_eval::{CocoMetrics, coco_evaluate};
pub use config::RunFile;
pub use device::{DeviceError, DeviceSpec};
pub use ema::{EmaConfig, ModelEma};
pub use error::{RunPoint, TrainError};
pub use evaluate::{EvalMetrics, Evaluation, evaluate, evaluate_task, evaluate_with_confusion};
pub use fit::{AllReduceCost, EpochRecord, FitOutputs, FitResult, fit, fit_task};
pub use loss::LossConfig;
pub use metrics::{ConfusionMatrix, Verdict, VerdictConfig};
pub use optim::{LrGroup, OptimizerConfig};
pub use run::{MetricsLog, RunDir};
pub use runner::{RunEvent, RunOptions, RunSummary};
pub use schedule::{LrSchedule, Schedule};
pub use source::{BatchSource, ClassificationSource, OnBadSample, SkippedSample};
pub use step::clip_grad_norm;
pub use task::{Classification, Metric, Task};
pub use train_config::{EarlyStopping, Monitor, TrainConfig};

/// The README's examples run as doctests, so what crates.io shows stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
