//! Checkpoints that let a run resume exactly: model, optimizer state, epoch and step, the records
//! so far, early-stopping state and the config, written atomically.
//!
//! Layout in the checkpoint folder:
//!
//! ```text
//! epoch-0003/          model.bpk, optimizer.bpk, state.json   (the last `keep_last` epochs;
//!                      ema.bpk too when the run keeps a weight average)
//! best.bpk             the best model so far (+ best.bpk.kiln.json when a spec is given)
//! ```
//!
//! An epoch folder is written as `.epoch-0003.tmp/`, each file synced, then renamed: a crash or a
//! full disk mid-write leaves at most a temporary folder (ignored and cleaned up later) and the
//! previous checkpoints intact. Nothing else in the run is random once the model exists — the batch
//! order is a function of (seed, epoch) and Burn's generator is re-seeded from (seed, epoch) at the
//! start of every epoch — so resuming after epoch k ends with the same metrics as a run that never
//! stopped.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use serde::{Deserialize, Serialize};

use crate::{EpochRecord, TrainConfig, TrainError};

/// Where checkpoints go and how many are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointOptions {
    /// The checkpoint folder (created if missing).
    pub dir: PathBuf,
    /// Epoch checkpoints kept (older ones are deleted); at least 1.
    pub keep_last: usize,
    /// Continue from the latest checkpoint in `dir` when there is one.
    pub resume: bool,
    /// What a checkpoint that cannot be written (disk full, permissions) does to the run.
    pub on_error: OnCheckpointError,
}

impl CheckpointOptions {
    /// Checkpoints in `dir`, keeping the last 2 epochs, no resume, stopping on a write error.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep_last: 2,
            resume: false,
            on_error: OnCheckpointError::Stop,
        }
    }
}

/// The policy for a checkpoint that cannot be written. Either way the failure is reported at once
/// (`FitOutputs::on_warning`) and the previous checkpoints stay intact: a checkpoint is written to
/// a temporary folder and only renamed into place once complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCheckpointError {
    /// Stop the run with [`TrainError::CheckpointFailed`], naming the last good checkpoint to
    /// resume from (the default: hours of training must not go on unprotected unnoticed).
    #[default]
    Stop,
    /// Train on; each failure is listed in `FitResult::checkpoint_failures` (and the report), and
    /// the next epoch tries again.
    Continue,
}

impl std::fmt::Display for OnCheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnCheckpointError::Stop => "stop",
            OnCheckpointError::Continue => "continue",
        })
    }
}

/// A checkpoint that could not be written under [`OnCheckpointError::Continue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFailure {
    /// 1-based epoch.
    pub epoch: usize,
    /// The error, naming the file.
    pub error: String,
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// kiln's version that wrote it.
    pub kiln_version: String,
    /// The last completed epoch (1-based).
    pub epoch: usize,
    /// Optimizer steps taken.
    pub global_step: usize,
    /// The run's config (a resume must use the same).
    pub config: TrainConfig,
    /// Every epoch's record so far.
    pub records: Vec<EpochRecord>,
    /// The best monitored value so far and its epoch.
    pub best: Option<(f64, usize)>,
    /// Epochs since the best (early stopping's counter).
    pub epochs_since_best: usize,
}

impl CheckpointState {
    /// Whether early stopping ended the run at this checkpoint (as `fit` decides it).
    pub fn stopped_early(&self) -> bool {
        self.config
            .early_stopping
            .is_some_and(|e| self.epochs_since_best >= e.patience)
    }
}

fn epoch_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}"))
}

fn fail(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Write {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn sync_file(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(path, format!("cannot flush to disk: {e}")))
}

/// Writes the checkpoint of `epoch` and prunes all but the last `keep_last` epoch folders.
/// Returns the new folder.
///
/// # Errors
///
/// [`TrainError::Write`] naming the file that could not be written; earlier checkpoints are intact.
pub fn save<M: Module>(
    opts: &CheckpointOptions,
    model: &M,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
    ema: Option<&M>,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| fail(&opts.dir, e))?;
    let final_dir = epoch_dir(&opts.dir, state.epoch);
    let tmp = opts.dir.join(format!(".epoch-{:04}.tmp", state.epoch));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<(), TrainError> {
        std::fs::create_dir(&tmp).map_err(|e| fail(&tmp, e))?;
        let model_path = tmp.join("model.bpk");
        model
            .clone()
            .save_file(&model_path)
            .map_err(|e| fail(&model_path, e))?;
        sync_file(&model_path)?;
        let optim_path = tmp.join("optimizer.bpk");
        optim
            .to_record()
            .save(&optim_path)
            .map_err(|e| fail(&optim_path, e))?;
        sync_file(&optim_path)?;
        if let Some(ema) = ema {
            let ema_path = tmp.join("ema.bpk");
            ema.clone().save_file(&ema_path).map_err(|e| fail(&ema_path, e))?;
            sync_file(&ema_path)?;
        }
        let state_path = tmp.join("state.json");
        let json = serde_json::to_vec_pretty(state).map_err(|e| fail(&state_path, e))?;
        std::fs::write(&state_path, json).map_err(|e| fail(&state_path, e))?;
        sync_file(&state_path)?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| fail(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| fail(&final_dir, e))?;
        if let Ok(d) = std::fs::File::open(&opts.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    let mut epochs = list(&opts.dir);
    epochs.sort_unstable();
    let keep = opts.keep_last.max(1);
    if epochs.len() > keep {
        for &e in &epochs[..epochs.len() - keep] {
            let _ = std::fs::remove_dir_all(epoch_dir(&opts.dir, e));
        }
    }
    Ok(final_dir)
}

/// Removes what an interrupted write left in the checkpoint folder `dir`: the hidden temporaries
/// (`.epoch-NNNN.tmp/`, `.best.bpk.<pid>.tmp`, ...) that a kill or a crash mid-write leaves. Only
/// names kiln writes (a leading `.` and a `.tmp` ending) are touched; complete checkpoints never
/// have such names. Returns what was removed. `fit` calls it before the first epoch.
pub fn remove_stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed.sort();
    removed
}

/// Epochs with a complete checkpoint in `dir`.
fn list(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let epoch = name.strip_prefix("epoch-")?.parse::<usize>().ok()?;
            e.path().join("state.json").is_file().then_some(epoch)
        })
        .collect()
}

/// The newest complete checkpoint folder in `dir`, if any.
pub fn latest(dir: &Path) -> Option<PathBuf> {
    list(dir).into_iter().max().map(|e| epoch_dir(dir, e))
}

/// The state of the checkpoint in `folder` (without loading the weights).
///
/// # Errors
///
/// [`TrainError::Resume`] when `state.json` is missing or unreadable.
pub fn read_state(folder: &Path) -> Result<CheckpointState, TrainError> {
    let path = folder.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| TrainError::Resume {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Resume {
        path,
        reason: e.to_string(),
    })
}

/// A loaded checkpoint.
pub struct Restored<M> {
    /// The model with the checkpoint's weights (and parameter ids, so the optimizer state matches).
    pub model: M,
    /// The optimizer state, to pass to `ModuleOptimizer::load_record`.
    pub optimizer: OptimizerRecord,
    /// Epoch, step, records, early-stopping state and config.
    pub state: CheckpointState,
    /// The averaged weights (`ema.bpk`), when the run keeps an average.
    pub ema: Option<M>,
}

/// Loads the checkpoint in `folder` into `model` (the same architecture).
///
/// # Errors
///
/// [`TrainError::Resume`] naming the file that is missing or unreadable.
pub fn load<M: Module>(folder: &Path, model: M) -> Result<Restored<M>, TrainError> {
    let bad = |path: &Path, reason: String| TrainError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let state_path = folder.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| bad(&state_path, e.to_string()))?;
    let state: CheckpointState =
        serde_json::from_slice(&bytes).map_err(|e| bad(&state_path, e.to_string()))?;
    let model_path = folder.join("model.bpk");
    let model = model
        .try_load_file(&model_path)
        .map_err(|e| bad(&model_path, format!("{e} — is it the same model?")))?;
    let optim_path = folder.join("optimizer.bpk");
    let optimizer = OptimizerRecord::load(&optim_path).map_err(|e| bad(&optim_path, e.to_string()))?;
    let ema = match state.config.ema {
        Some(_) => {
            let ema_path = folder.join("ema.bpk");
            // Into a copy with its own running statistics: a clone shares them (Burn's
            // `RunningState` is behind an `Arc`), and loading would overwrite the model's.
            Some(model.valid().try_load_file(&ema_path).map_err(|e| {
                bad(
                    &ema_path,
                    format!("{e} — the run keeps a weight average (train.ema)"),
                )
            })?)
        }
        None => None,
    };
    Ok(Restored {
        model,
        optimizer,
        state,
        ema,
    })
}
