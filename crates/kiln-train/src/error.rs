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
        "epoch {epoch}'s checkpoint could not be written: {error}\n  training stopped (checkpoints.on_error = \"stop\"); last good checkpoint: {}\n  hint: free disk space or fix the folder's permissions, then {}; or set checkpoints.on_error = \"continue\" (--on-checkpoint-error continue) to train on without checkpoints",
        last_good.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string()),
        if last_good.is_some() { "`kiln train --resume RUN_DIR` continues from it" } else { "run again" }
    )]
    CheckpointFailed {
        /// 1-based epoch whose checkpoint failed.
        epoch: usize,
        /// The last checkpoint written whole (intact on disk), to resume from.
        last_good: Option<PathBuf>,
        /// The write error (naming the file).
        error: Box<TrainError>,
    },

    /// The device ran out of memory during a training step (a panic inside the backend, caught).
    #[error(
        "out of memory on {device} at epoch {epoch}, step {step} (batch_size {batch}): {message}\n  hint: lower train.batch_size (e.g. {}) and keep the effective batch with train.accumulate = {}, or train a smaller model or input size",
        (batch / 2).max(1),
        accumulate * 2
    )]
    OutOfMemory {
        /// The device, printed.
        device: String,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The batch size that did not fit.
        batch: usize,
        /// The accumulation in use.
        accumulate: usize,
        /// The backend's message.
        message: String,
    },

    /// The backend panicked during a training step (caught, so that the run ends with an error
    /// naming where instead of a panic).
    #[error("the backend failed on {device} at epoch {epoch}, step {step}: {message}")]
    BackendPanic {
        /// The device, printed.
        device: String,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The panic's message.
        message: String,
    },

    /// A run directory that already holds files.
    #[error("output directory {path} is not empty; choose another --out or remove it")]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
}
