//! The error type of kiln-train.

use std::path::PathBuf;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    /// A transform did not fit the data.
    #[error(transparent)]
    Transform(#[from] kiln_transforms::TransformError),
    /// The model config or input shape is wrong.
    #[error(transparent)]
    Model(#[from] kiln_models::ModelError),
    /// The device cannot be used.
    #[error(transparent)]
    Device(#[from] crate::DeviceError),

    /// A training setting with an unusable value.
    #[error("invalid training config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it cannot work.
        reason: String,
    },

    /// The weights a run starts from (`run.init_from`) do not fit it.
    #[error("{}", starting(path, source))]
    StartingWeights {
        /// The weights.
        path: PathBuf,
        /// What is wrong.
        source: kiln_models::ModelError,
    },

    /// One variant of an ablation failed.
    #[error("variant `{name}`: {source}")]
    Variant {
        /// The variant.
        name: String,
        /// What failed.
        source: Box<TrainError>,
    },

    /// The loss became NaN or infinite.
    #[error(
        "loss is {loss} at epoch {epoch}, step {step} (batch of {batch} samples, lr {lr}); training stopped\n  last good checkpoint: {}\n  hint: lower the learning rate, add warmup, check the input normalization, or clip gradients (clip_grad_norm)",
        checkpoint.as_ref().map_or_else(|| "none (checkpoints are written at the end of each epoch)".to_string(), |p| p.display().to_string())
    )]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The loss value.
        loss: f32,
        /// Samples in the batch.
        batch: usize,
        /// The learning rate in use.
        lr: f64,
        /// The last checkpoint written, to resume from.
        checkpoint: Option<PathBuf>,
    },

    /// Training went on with finite losses but the model diverged: its validation or test loss,
    /// or its weights, are no longer finite numbers.
    #[error(
        "the run diverged: {what} is {value} after epoch {epoch}; training stopped\n  last good checkpoint: {}\n  hint: lower the learning rate, add warmup, or clip gradients (clip_grad_norm)",
        checkpoint.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string())
    )]
    Diverged {
        /// 1-based epoch after which it was found.
        epoch: usize,
        /// What is not finite (`validation loss`, `test loss`, `the weights`).
        what: &'static str,
        /// The value (NaN or ±inf).
        value: f64,
        /// The last checkpoint written before it (its `best.bpk` holds the best finite epoch).
        checkpoint: Option<PathBuf>,
    },

    /// A label the model has no output for.
    #[error(
        "label {label} of sample {position} ({context}) is outside 0..{classes}, the model's {classes} outputs; check the dataset's labels or the model's num_classes"
    )]
    LabelOutOfRange {
        /// The label.
        label: u32,
        /// The sample's position in its split.
        position: usize,
        /// The model's number of outputs.
        classes: usize,
        /// Where: `"training, epoch 3"`, `"evaluation"`.
        context: String,
    },

    /// More bad samples than the skip policy allows.
    #[error(
        "{bad} of {total} samples could not be read or transformed, more than the allowed fraction {max_fraction}; first: {examples}"
    )]
    TooManyBadSamples {
        /// Bad samples so far.
        bad: usize,
        /// Samples in the source.
        total: usize,
        /// The allowed fraction.
        max_fraction: f64,
        /// The first few, with their reasons.
        examples: String,
    },

    /// A checkpoint that cannot be resumed.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file or directory of the run could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error, printed.
        reason: String,
    },

    /// An end-of-epoch checkpoint (or the best model) could not be written and the policy is
    /// [`crate::checkpoint::OnCheckpointError::Stop`].
    #[error(
        "epoch {epoch}'s checkpoint could not be written: {error}\n  training stopped (checkpoints.on_error = \"stop\"); last good checkpoint: {}\n  hint: free disk space or fix the folder's permissions, then {}; or set checkpoints.on_error = \"continue\" to train on without checkpoints",
        last_good.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string()),
        if last_good.is_some() { "resuming the run continues from it" } else { "run again" }
    )]
    CheckpointFailed {
        /// 1-based epoch whose checkpoint failed.
        epoch: usize,
        /// The last checkpoint written whole (intact on disk), to resume from.
        last_good: Option<PathBuf>,
        /// The write error (naming the file).
        error: Box<TrainError>,
    },

    /// The device could not allocate what a training step or an evaluation batch needs: out of
    /// device memory, or one tensor larger than the biggest buffer the device allows (wgpu). A
    /// panic inside the backend, caught; the hint depends on [`RunPoint`].
    #[error(
        "out of memory on {device} at {at} (batch_size {batch}): {message}\n  hint: {}",
        oom_hint(at, *batch, *accumulate)
    )]
    OutOfMemory {
        /// The device, printed.
        device: String,
        /// Where in the run.
        at: RunPoint,
        /// The batch size that did not fit.
        batch: usize,
        /// The accumulation in use (1 in evaluation).
        accumulate: usize,
        /// The backend's message: the line that names the failed allocation.
        message: String,
    },

    /// The backend (or the model's own code) panicked during a training step or an evaluation
    /// batch: caught, so that the run ends with an error naming where instead of a panic.
    #[error(
        "the backend failed on {device} at {at}: {message}{}",
        location.as_ref().map_or_else(String::new, |l| format!("\n  panicked at {l} (RUST_BACKTRACE=1 prints the panic with its backtrace)"))
    )]
    BackendPanic {
        /// The device, printed.
        device: String,
        /// Where in the run.
        at: RunPoint,
        /// The panic's message.
        message: String,
        /// `file:line:column` of the panic, when it was raised on the thread running the step.
        location: Option<String>,
    },

    /// A run directory that already holds files.
    #[error("output directory {path} is not empty; choose another --out or remove it{}",
        if *run_folder { " (it holds a run: `kiln train --resume` continues it, or starts it again when it has no checkpoint)" } else { "" })]
    OutputExists {
        /// The directory.
        path: PathBuf,
        /// Whether it holds a run (a `config.json`).
        run_folder: bool,
    },
    /// A run folder another process holds (its lock is taken).
    #[error("{} is in use by another kiln process{}: two runs never write into one folder; wait for it to end, or choose another --out",
        path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    RunInUse {
        /// The run folder.
        path: PathBuf,
        /// The process holding it, when its lock file says.
        pid: Option<u32>,
    },
    /// A process of a run across processes stopped taking part.
    #[error("rank {rank} of the training processes failed: {reason}")]
    RankFailed {
        /// The rank.
        rank: usize,
        /// What happened.
        reason: String,
    },
    /// The processes of a run across processes were not started on the same run.
    #[error(
        "rank {rank} was started on another run than rank 0 ({what} differ): every process must get the same run file, data and kiln version"
    )]
    RanksDiffer {
        /// The first rank that differs.
        rank: usize,
        /// What differs (`config`, `data`, `kiln version`).
        what: String,
    },
}

/// `run.init_from PATH: SOURCE`, without the path where the source names it already (one
/// mention per line).
fn starting(path: &std::path::Path, source: &kiln_models::ModelError) -> String {
    let text = source.to_string();
    if text.contains(&path.display().to_string()) {
        format!("run.init_from: {text}")
    } else {
        format!("run.init_from {}: {text}", path.display())
    }
}

/// Where in a run a device failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPoint {
    /// A training step.
    Training {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
    },
    /// An evaluation batch (validation during training, or `kiln eval`).
    Evaluation {
        /// 1-based batch in dataset order.
        batch: usize,
    },
}

impl std::fmt::Display for RunPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Training { epoch, step } => write!(f, "epoch {epoch}, step {step}"),
            Self::Evaluation { batch } => write!(f, "evaluation batch {batch}"),
        }
    }
}

/// What to change after an out-of-memory at `at` with this batch size and accumulation.
fn oom_hint(at: &RunPoint, batch: usize, accumulate: usize) -> String {
    let half = (batch / 2).max(1);
    match at {
        RunPoint::Training { .. } => format!(
            "lower train.batch_size (e.g. {half}) and keep the effective batch with train.accumulate = {}, or train a smaller model or input size",
            accumulate * 2
        ),
        RunPoint::Evaluation { .. } => format!(
            "lower the batch size (e.g. {half}; validation during training uses train.batch_size; evaluation on its own can use a smaller one), or use a smaller input size"
        ),
    }
}
