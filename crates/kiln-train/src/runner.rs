//! A whole run from a run file: the devices, the data, the model from the registry and its
//! starting weights, training, the test evaluation and every file of the run folder.
//!
//! This is what `kiln train` does; the command only parses arguments and prints the
//! [`RunEvent`]s and the [`RunOutcome`].
//!
//! ```no_run
//! use kiln_train::config::RunFile;
//! use kiln_train::runner::{self, RunEvent, RunOptions};
//!
//! let mut file = RunFile::load("run.toml".as_ref(), &[])?;
//! file.validate()?;
//! file.resolve_data()?;
//! let outcome = runner::train(file, &RunOptions::default(), &mut |event: RunEvent<'_>| match event {
//!     RunEvent::Epoch(r) => println!("epoch {} val_acc {:?}", r.epoch, r.metric("val_acc")),
//!     other => println!("{other}"),
//! })?;
//! println!("test accuracy {:?}", outcome.summary.test_acc);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::Device;
use kiln_models::PretrainedSpec;
use kiln_models::zoo::{ModelFn, ZooModel};
use kiln_transforms::Normalization;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::config::RunFile;
use crate::data::{Source, Splits};
use crate::parallel::DataParallel;
use crate::{BatchSource, DeviceSpec, EpochRecord, FitOutputs, RunDir, TrainError};

/// What a run saves as `config.json`: everything needed to repeat (or resume) it. The same
/// settings are written as `config.toml`, a run file `kiln train --config` accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The kiln version that ran it.
    pub kiln_version: String,
    /// The run file as resolved (absolute data path, detected format, defaults filled).
    pub config: RunFile,
}

impl RunConfig {
    /// The run file saved in the run folder `dir` (`config.json`), for a resume.
    ///
    /// # Errors
    ///
    /// [`TrainError::Resume`] when it is missing or not a run config.
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join("config.json");
        let fail = |reason: String| TrainError::Resume {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        serde_json::from_str(&text).map_err(|e| fail(format!("not a kiln run config: {e}")))
    }
}

/// `summary.json`: the run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Epochs configured.
    pub epochs: usize,
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Mean training throughput.
    pub train_images_per_s: f64,
    /// Validation accuracy after the last epoch.
    pub final_val_acc: Option<f64>,
    /// Test loss of the final model.
    pub test_loss: f64,
    /// Test accuracy of the final model (classifiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc: Option<f64>,
    /// A detector's COCO figures of the final model (`test_loss` is that split's loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coco: Option<CocoSummary>,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// The saved weights.
    pub model: PathBuf,
    /// The averaged weights' test figures and file (`train.ema`): `(loss, accuracy, path)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaSummary>,
}

/// A detector's part of [`RunSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoSummary {
    /// The split scored: `test`, or `val` when there is no test split.
    pub split: String,
    /// Its detections, as a COCO results file (`kiln score` and pycocotools read it).
    pub detections: PathBuf,
    /// pycocotools' figures.
    pub metrics: crate::coco_eval::CocoMetrics,
}

/// The averaged weights' part of [`RunSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmaSummary {
    /// Test loss of the averaged weights.
    pub test_loss: f64,
    /// Test accuracy of the averaged weights.
    pub test_acc: f64,
    /// The averaged weights (`model_ema.bpk`, its spec next to it).
    pub model: PathBuf,
}

/// How a run is carried out (what does not change its results).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the run in this folder from its latest checkpoint (its `config.json` is the run
    /// file: pass [`RunConfig::read`]'s).
    pub resume: Option<PathBuf>,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    /// Accept `run.init_from` weights trained with another normalization.
    pub allow_normalization_override: bool,
}

/// What a run reports as it goes.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A line of the setup (model, data, optimizer, ...), before the first epoch.
    Setup(String),
    /// Something decided for the user that they should know.
    Note(String),
    /// Something that may be wrong.
    Warning(String),
    /// An epoch's record, as it is made.
    Epoch(&'a EpochRecord),
}

impl std::fmt::Display for RunEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunEvent::Setup(s) => write!(f, "{s}"),
            RunEvent::Note(s) => write!(f, "note: {s}"),
            RunEvent::Warning(s) => write!(f, "warning: {s}"),
            RunEvent::Epoch(r) => write!(f, "{}", r.line(r.epoch)),
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// `summary.json`.
    pub summary: RunSummary,
    /// The verdict after the last epoch, in words.
    pub verdict: String,
    /// The best epoch: (value, epoch, the metric).
    pub best: Option<(f64, usize, &'static str)>,
    /// Whether early stopping ended it.
    pub stopped_early: bool,
    /// The patience early stopping had.
    pub patience: usize,
    /// The epoch a resumed run continued after (0 for a fresh one).
    pub resumed_after: usize,
    /// One record per epoch.
    pub epochs: Vec<EpochRecord>,
    /// Warnings (normalization check, skipped samples).
    pub warnings: Vec<String>,
    /// Checkpoints that could not be written (under `checkpoints.on_error = "continue"`).
    pub checkpoint_failures: Vec<crate::CheckpointFailure>,
    /// The final weights (`model.bpk`, its spec next to it).
    pub model: PathBuf,
    /// The best epoch's weights.
    pub best_model: PathBuf,
    /// `report.md`.
    pub report: PathBuf,
}

impl RunOutcome {
    /// Everything it holds as one JSON object (what `kiln train --json` prints): the run folder,
    /// the summary, the verdict, the best epoch, every epoch's record, the warnings and the files.
    pub fn to_json(&self) -> serde_json::Value {
        let file = |name: &str| self.run_dir.join(name);
        serde_json::json!({
            "run": &self.run_dir,
            "summary": &self.summary,
            "verdict": &self.verdict,
            "best": self.best.map(|(value, epoch, monitor)| serde_json::json!({"epoch": epoch, "value": value, "monitor": monitor})),
            "stopped_early": self.stopped_early,
            "resumed_after": self.resumed_after,
            "epochs": &self.epochs,
            "warnings": &self.warnings,
            "checkpoint_failures": &self.checkpoint_failures,
            "files": {
                "model": &self.model,
                "spec": PretrainedSpec::sidecar_path(&self.model),
                "best": &self.best_model,
                "report": &self.report,
                "metrics": file("metrics.jsonl"),
                "config": file("config.toml"),
            },
        })
    }
}

/// The device and, for several, the data-parallel setup of `file` (checked before anything is
/// written; a GPU is probed once, here).
///
/// # Errors
///
/// [`TrainError::Device`] for a backend not compiled in or not usable; the data-parallel checks.
pub fn devices(file: &RunFile) -> Result<(DeviceSpec, Device, Option<DataParallel>), TrainError> {
    let (spec, parallel) = match file.run.devices.as_slice() {
        [] => (file.run.device, None),
        [one] => (*one, None),
        many => {
            let p = DataParallel::new(many)?;
            p.check_batch_size(file.train.batch_size)?;
            (many[0], Some(p))
        }
    };
    Ok((spec, spec.device()?, parallel))
}

/// Trains the run `file` describes (validated and resolved: [`RunFile::validate`],
/// [`RunFile::resolve_data`]) and writes its folder: `config.json` / `config.toml`, `model.txt`,
/// the metrics, checkpoints, `model.bpk` with its spec, `summary.json`, the report and curves.
///
/// # Errors
///
/// Everything that stops a run: the devices, the data, the model config, the starting weights,
/// training itself and the files.
pub fn train(
    file: RunFile,
    options: &RunOptions,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, TrainError> {
    train_inner(file, options, None, events)?.ok_or_else(|| TrainError::RankFailed {
        rank: 0,
        reason: "the run ended without an outcome".into(),
    })
}

/// [`train`] as one rank of several processes ([`crate::cluster`]; `mpirun -np N kiln train`).
///
/// Every rank must be given the same run (checked first: the resolved run file without its
/// machine-local settings — device, workers, output and data folders —, the data's classes and
/// split sizes, and the kiln version; a rank that differs is named). Rank 0 does everything
/// [`train`] does and returns its outcome; the other ranks train their shards, report no events,
/// write nothing and return `None`.
///
/// # Errors
///
/// As [`train`]; [`TrainError::RanksDiffer`] for ranks started on different runs.
pub fn train_rank(
    file: RunFile,
    options: &RunOptions,
    cluster: &dyn Cluster,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Option<RunOutcome>, TrainError> {
    if cluster.rank() == 0 {
        train_inner(file, options, Some(cluster), events)
    } else {
        train_inner(file, options, Some(cluster), &mut |_| {})
    }
}

/// What must match on every rank, by name: the run without its machine-local settings, the
/// data as the run sees it, and the kiln version.
fn run_identity(file: &RunFile, data: &Splits) -> Vec<(&'static str, String)> {
    let mut shared = file.clone();
    shared.run.device = crate::DeviceSpec::default();
    shared.run.devices.clear();
    shared.run.out = None;
    shared.run.tensorboard = None;
    shared.run.init_from = shared
        .run
        .init_from
        .as_ref()
        .and_then(|p| p.file_name())
        .map(PathBuf::from);
    shared.data.path = None;
    shared.train.num_workers = 0;
    let config = serde_json::to_string(&shared).unwrap_or_default();
    let data = format!(
        "classes={:?} train={} val={} test={} chw={:?} stored={}",
        data.classes,
        data.train.len(),
        data.val.len(),
        data.test.len(),
        data.chw,
        data.stored
    );
    vec![
        ("config", config),
        ("data", data),
        ("kiln version", env!("CARGO_PKG_VERSION").to_string()),
    ]
}

fn train_inner(
    mut file: RunFile,
    options: &RunOptions,
    cluster: Option<&dyn Cluster>,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Option<RunOutcome>, TrainError> {
    if file.model.detector().is_some() {
        if cluster.is_some() {
            return Err(TrainError::InvalidConfig {
                field: "model.name",
                value: file.model.id(),
                reason: "detectors train in one process so far (not under mpirun)".into(),
            });
        }
        return crate::detection_run::train(file, options, events).map(Some);
    }
    if let Some(dir) = &options.resume {
        file.run.out = Some(dir.clone());
    }
    // The devices first (once: a GPU is probed when created): a backend that is not compiled
    // in, or cannot run, fails before any data is read.
    let devs = devices(&file)?;
    let data = Splits::open(&file)?;
    if let Some(c) = cluster {
        crate::cluster::check_same_run(c, &run_identity(&file, &data))?;
        let devices = devs.2.as_ref().map_or(1, |p| p.devices.len());
        crate::cluster::check_batch_size(c, file.train.batch_size, devices)?;
    }
    for w in &data.warnings {
        events(RunEvent::Warning(w.clone()));
    }
    let start = starting_weights(&file, &data, options, events)?;
    let model = file.classifier("kiln train")?.clone();
    devs.1.seed(file.train.seed);
    model.build_with(
        data.chw,
        start.as_ref().map_or(data.classes.len(), |s| s.classes),
        &devs.1.clone(),
        Run {
            file,
            data,
            devs,
            options,
            cluster,
            start,
            events,
        },
    )?
}

/// Weights a fresh run starts from (`run.init_from`), checked against the data.
struct Start {
    path: PathBuf,
    /// The classes the weights were trained for.
    classes: usize,
}

/// `run.init_from` checked: the file exists, its spec's normalization is the run's.
fn starting_weights(
    file: &RunFile,
    data: &Splits,
    options: &RunOptions,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<Option<Start>, TrainError> {
    let Some(path) = file.run.init_from.as_ref().filter(|_| options.resume.is_none()) else {
        return Ok(None);
    };
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let sidecar = PretrainedSpec::sidecar_path(path);
    let spec = if sidecar.exists() {
        Some(PretrainedSpec::load_next_to(path)?)
    } else {
        if !path.is_file() {
            return Err(TrainError::InvalidConfig {
                field: "run.init_from",
                value: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        events(RunEvent::Warning(format!(
            "{} has no {} next to it; the normalization and classes it was trained with cannot be checked",
            path.display(),
            sidecar.display()
        )));
        None
    };
    if let Some(spec) = &spec {
        spec.check_normalization(&norm, options.allow_normalization_override)
            .map_err(|e| TrainError::StartingWeights {
                path: path.clone(),
                source: e,
            })?;
    }
    Ok(Some(Start {
        path: path.clone(),
        classes: spec.as_ref().map_or(data.classes.len(), |s| s.num_classes),
    }))
}

/// The rest of [`train`], once the model's type is known.
struct Run<'a, 'e> {
    file: RunFile,
    data: Splits,
    devs: (DeviceSpec, Device, Option<DataParallel>),
    options: &'a RunOptions,
    cluster: Option<&'a dyn Cluster>,
    start: Option<Start>,
    events: &'e mut dyn FnMut(RunEvent<'_>),
}

impl ModelFn for Run<'_, '_> {
    type Output = Result<Option<RunOutcome>, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        let Run {
            file,
            data,
            devs,
            options,
            cluster,
            start,
            events,
        } = self;
        let device = &devs.1;
        let mut model = model;
        if let Some(start) = &start {
            let fail = |e| TrainError::StartingWeights {
                path: start.path.clone(),
                source: e,
            };
            model = kiln_models::weights::load_weights(model, &start.path)
                .map_err(fail)?
                .0;
            let classes = data.classes.len();
            if start.classes != classes {
                events(RunEvent::Note(format!(
                    "{} was trained for {} classes, the data has {classes}: the classifier head is replaced by a new one (nn.Linear's default init)",
                    start.path.display(),
                    start.classes
                )));
                model = model.replace_head(classes, device)?;
            }
            if file.finetune.freeze_backbone {
                model = model.freeze_backbone();
            }
        }
        match cluster {
            Some(c) if c.rank() != 0 => follow_model(model, data, file, devs, options, c).map(|()| None),
            _ => train_model(model, data, file, devs, options, cluster, events).map(Some),
        }
    }
}

/// A rank other than 0: the same checks and training as [`train_model`], on its shards, with
/// nothing written or reported (rank 0 does both).
fn follow_model<M: ZooModel>(
    model: M,
    data: Splits,
    file: RunFile,
    (_, device, data_parallel): (DeviceSpec, Device, Option<DataParallel>),
    options: &RunOptions,
    cluster: &dyn Cluster,
) -> Result<(), TrainError> {
    let cfg = file.train.clone();
    preflight(&file, &data, &cfg)?;
    data.check_headers()?;
    let lr_groups = lr_groups(&model, &file)?;
    let val: Option<&dyn BatchSource> = if data.val.is_empty() {
        None
    } else {
        Some(data.val.as_ref())
    };
    crate::fit(
        model,
        data.train.as_ref(),
        val,
        &cfg,
        &device,
        FitOutputs {
            // Resumes from the checkpoint rank 0 wrote; writes none.
            checkpoints: options.resume.as_ref().map(|dir| crate::CheckpointOptions {
                dir: dir.join("checkpoints"),
                keep_last: file.checkpoints.keep_last,
                resume: true,
                on_error: file.checkpoints.on_error,
            }),
            lr_groups,
            data_parallel,
            cluster: Some(cluster),
            ..FitOutputs::default()
        },
    )?;
    Ok(())
}

/// Learning-rate groups when fine-tuning: per-layer decay, or the backbone's own rate (the head
/// keeps the scheduled one).
fn lr_groups<M: ZooModel>(model: &M, file: &RunFile) -> Result<Vec<crate::optim::LrGroup>, TrainError> {
    Ok(match file.finetune.layer_decay {
        Some(decay) => model
            .layer_decay_groups(decay)
            .ok_or_else(|| TrainError::InvalidConfig {
                field: "finetune.layer_decay",
                value: decay.to_string(),
                reason: format!(
                    "{} has no layer order for layer-wise decay (ConvNeXt and ViT have); use finetune.backbone_lr_factor",
                    model.name()
                ),
            })?
            .into_iter()
            .map(|g| crate::optim::LrGroup {
                name: g.name,
                group: g.group,
                lr_scale: g.lr_scale,
            })
            .collect(),
        None if file.finetune.backbone_lr_factor == 1.0 => Vec::new(),
        None => vec![crate::optim::LrGroup {
            name: "backbone".into(),
            group: M::backbone_group(),
            lr_scale: file.finetune.backbone_lr_factor,
        }],
    })
}

fn train_model<M: ZooModel>(
    model: M,
    data: Splits,
    mut file: RunFile,
    (spec, device, data_parallel): (DeviceSpec, Device, Option<DataParallel>),
    options: &RunOptions,
    cluster: Option<&dyn Cluster>,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, TrainError> {
    let start = Instant::now();
    let cfg = file.train.clone();
    let format = file.data.format;
    let norm_spec = file.transforms.normalization(format);
    let norm: Normalization = norm_spec.resolve()?;
    let augmentation = file.transforms.augmentation(format);
    let data_root = data.root.clone();
    file.data.path = Some(data_root.clone());
    let (n_train, n_val, n_test) = (data.train.len(), data.val.len(), data.test.len());

    // Everything that can be checked is, before the run folder exists.
    preflight(&file, &data, &cfg)?;
    data.check_headers()?;
    // The schedule against the run's length.
    let steps_per_epoch = n_train / cfg.batch_size / cfg.accumulate;
    cfg.schedule
        .validate(cfg.lr, steps_per_epoch, steps_per_epoch * cfg.epochs)?;
    let lr_groups = lr_groups(&model, &file)?;
    let (run, mut log, run_config) = open_run(&mut file, &cfg, options, events)?;
    let mut on = if file.run.devices.len() > 1 {
        let list: Vec<String> = file.run.devices.iter().map(ToString::to_string).collect();
        format!("{} (data parallel)", list.join(", "))
    } else {
        spec.to_string()
    };
    if let Some(c) = cluster {
        on = format!(
            "{on} × {} processes (MPI; global batch {} = {} per process)",
            c.size(),
            cfg.batch_size,
            cfg.batch_size / c.size()
        );
    }
    let architecture = file.classifier("kiln train")?.clone();
    let name = architecture.describe(data.chw, data.classes.len());
    let mut setup = |line: String| events(RunEvent::Setup(line));
    setup(format!("kiln train: {name} on {on}"));
    if let Some(summary) = model.summary(data.chw) {
        setup(format!(
            "  model: {} parameters with BatchNorm statistics, {:.2} MMACs per image (layers: {})",
            summary.params(),
            summary.macs() as f64 / 1e6,
            run.path().join("model.txt").display()
        ));
        let path = run.path().join("model.txt");
        crate::run::write_file(&path, format!("{summary}\n").as_bytes())?;
    }
    setup(format!(
        "  data:  {} ({n_train} train / {n_val} val / {n_test} test)",
        data_root.display()
    ));
    setup(format!(
        "  optim: {} lr={} schedule={} batch={} epochs={} seed={}",
        cfg.optimizer, cfg.lr, cfg.schedule, cfg.batch_size, cfg.epochs, cfg.seed
    ));
    setup(format!(
        "  norm:  {} mean={:?} std={:?} ({:?} scale)",
        norm.name, norm.mean, norm.std, norm.scale
    ));
    if let Some(compose) = &augmentation {
        setup("  augment (training batches only):".into());
        for line in compose.describe(data.stored) {
            setup(format!("    {line}"));
        }
    }
    if let Some(path) = &file.run.init_from {
        let how = match (file.finetune.freeze_backbone, file.finetune.backbone_lr_factor) {
            (true, _) => " (backbone frozen: only the head trains)".to_string(),
            (false, f) if f != 1.0 => format!(" (backbone at {f}× the learning rate)"),
            _ => match (file.finetune.layer_decay, lr_groups.first()) {
                (Some(d), Some(first)) => format!(
                    " (layer-wise learning-rate decay {d} over {} layers: the stem at {:.3e}× the learning rate)",
                    lr_groups.len() + 1,
                    first.lr_scale
                ),
                _ => String::new(),
            },
        };
        setup(format!("  init:  {}{how}", path.display()));
    }
    setup(format!("  run:   {}", run.path().display()));
    // TensorBoard (optional): its folder is made and the first values written before training.
    let board = match &file.run.tensorboard {
        Some(dir) => {
            let tb = open_board(dir, &run, &file, data.train.as_ref(), &norm)?;
            setup(format!("  tensorboard: {}", tb.path().display()));
            Some(tb)
        }
        None => None,
    };

    let (train_src, val_src, test_src) = (data.train, data.val, data.test);
    let val_opt: Option<&dyn BatchSource> = if n_val > 0 { Some(val_src.as_ref()) } else { None };
    let board = std::cell::RefCell::new(board);
    let schedule = (steps_per_epoch, steps_per_epoch * cfg.epochs);
    let result = {
        let events = std::cell::RefCell::new(&mut *events);
        crate::fit(
            model,
            train_src.as_ref(),
            val_opt,
            &cfg,
            &device,
            FitOutputs {
                log: Some(&mut log),
                progress: options.progress,
                on_epoch: Some(&mut |r: &EpochRecord| {
                    (*events.borrow_mut())(RunEvent::Epoch(r));
                    // A log that cannot be written is said once; the run goes on without it.
                    let mut tb = board.borrow_mut();
                    let failed = tb.as_mut().and_then(|b| board_epoch(b, r, &cfg, schedule).err());
                    if let Some(e) = failed {
                        (*events.borrow_mut())(RunEvent::Warning(format!(
                            "TensorBoard logging stopped: {e}"
                        )));
                        *tb = None;
                    }
                }),
                on_warning: Some(&mut |w: &str| (*events.borrow_mut())(RunEvent::Warning(w.to_string()))),
                checkpoints: Some(crate::CheckpointOptions {
                    dir: run.checkpoints(),
                    keep_last: file.checkpoints.keep_last,
                    resume: options.resume.is_some(),
                    on_error: file.checkpoints.on_error,
                }),
                lr_groups,
                data_parallel,
                cluster,
            },
        )?
    };

    if let Some(cost) = &result.allreduce {
        events(RunEvent::Setup(format!(
            "  all-reduce: {:.2} ms per step for {:.2} MB of gradients, {:.1}% of the training time",
            cost.seconds * 1e3 / cost.steps.max(1) as f64,
            cost.bytes_per_step as f64 / 1e6,
            100.0 * cost.seconds / cost.train_seconds.max(1e-9)
        )));
    }
    let eval_model = result.model.valid();
    let (test, confusion) =
        crate::evaluate_with_confusion(&eval_model, test_src.as_ref(), cfg.batch_size, &device)?;
    if !test.loss.is_finite() {
        return Err(TrainError::Diverged {
            epoch: result.epochs.last().map_or(0, |r| r.epoch),
            what: "the test loss",
            value: test.loss,
            checkpoint: crate::checkpoint::latest(&run.checkpoints()),
        });
    }
    let model_path = run.save_model(&eval_model, "model")?;
    // What the weights expect, kept next to them (model.bpk.kiln.json).
    let class_names = data.classes.clone();
    let spec = PretrainedSpec {
        model: file.model.id(),
        architecture: Some(architecture),
        normalization: norm_spec,
        input_chw: data.chw,
        num_classes: class_names.len(),
        class_names: class_names.clone(),
        eval: file.transforms.eval.clone(),
        jpeg_draft: file.data.jpeg_draft,
        detector: None,
    };
    spec.check_normalization(&norm, false)?;
    spec.save_next_to(&model_path)?;
    // The averaged weights: tested and saved beside the raw ones, with the same spec.
    let ema = match &result.ema {
        Some(weights) => {
            let (t, _) = crate::evaluate_with_confusion(weights, test_src.as_ref(), cfg.batch_size, &device)?;
            let path = run.save_model(weights, "model_ema")?;
            spec.save_next_to(&path)?;
            Some(EmaSummary {
                test_loss: t.loss,
                test_acc: t.accuracy,
                model: path,
            })
        }
        None => None,
    };
    let summary = RunSummary {
        epochs: cfg.epochs,
        train_images: n_train,
        val_images: n_val,
        test_images: n_test,
        train_images_per_s: result.train_images_per_s,
        final_val_acc: result.epochs.last().and_then(|r| r.metric("val_acc")),
        test_loss: test.loss,
        test_acc: Some(test.accuracy),
        coco: None,
        seconds: start.elapsed().as_secs_f64(),
        model: model_path.clone(),
        ema,
    };
    run.write_json("summary.json", &summary)?;
    let mut warnings = result.warnings.clone();
    for (split, skipped) in [
        ("training", result.skipped.clone()),
        ("validation", val_src.skipped()),
        ("test", test_src.skipped()),
    ] {
        if !skipped.is_empty() {
            events(RunEvent::Setup(format!(
                "skipped {} bad {split} samples (data.on_bad_sample = \"skip\"); listed in the report",
                skipped.len()
            )));
            warnings.extend(
                skipped
                    .iter()
                    .map(|s| format!("skipped {split} sample {}: {}", s.index, s.reason)),
            );
        }
    }
    if !result.checkpoint_failures.is_empty() {
        let epochs: Vec<String> = result
            .checkpoint_failures
            .iter()
            .map(|f| f.epoch.to_string())
            .collect();
        events(RunEvent::Setup(format!(
            "checkpoints of epochs {} could not be written (checkpoints.on_error = \"continue\"); listed in the report",
            epochs.join(", ")
        )));
    }
    let monitor = match (n_val > 0, cfg.ema) {
        (true, Some(e)) if e.best_on == crate::ema::EmaBestOn::Ema => "val_ema_acc",
        (true, _) => "val_acc",
        _ => "train_loss",
    };
    let report = run.write_report(&crate::report::Report {
        title: format!("{name} on {}", data_root.display()),
        config: serde_json::to_value(&run_config).map_err(|e| TrainError::Write {
            path: run.path().join("report.md"),
            reason: e.to_string(),
        })?,
        epochs: &result.epochs,
        primary: crate::task::ACCURACY,
        verdict: &result.verdict,
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        resumed_after: result.resumed_after,
        test: Some((test, &confusion)),
        class_names: &class_names,
        warnings: &warnings,
        seconds: summary.seconds,
        train_images_per_s: result.train_images_per_s,
        ema_test: summary.ema.as_ref().map(|e| (e.test_loss, e.test_acc)),
        test_text: None,
    })?;
    Ok(RunOutcome {
        run_dir: run.path().to_path_buf(),
        summary,
        verdict: result.verdict.to_string(),
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        patience: cfg.early_stopping.map_or(0, |e| e.patience),
        resumed_after: result.resumed_after,
        epochs: result.epochs,
        warnings,
        checkpoint_failures: result.checkpoint_failures,
        model: model_path,
        best_model: run.checkpoints().join("best.bpk"),
        report,
    })
}

/// The run folder of `file` (a new one, `run.out` or a timestamped `runs/…`; the resumed one
/// under `options.resume`, checked against the checkpoint's state), with its metrics log and the
/// run config it saved. A fresh folder gets `config.json` and `config.toml`; `file.run.out` is set
/// to it.
pub(crate) fn open_run(
    file: &mut RunFile,
    cfg: &crate::TrainConfig,
    options: &RunOptions,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<(RunDir, crate::MetricsLog, RunConfig), TrainError> {
    let run = match (&options.resume, &file.run.out) {
        (Some(dir), _) => RunDir::open_existing(dir)?,
        (None, Some(p)) => RunDir::create(p)?,
        (None, None) => RunDir::timestamped("runs")?,
    };
    file.run.out = Some(run.path().to_path_buf());
    let run_config = RunConfig {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        config: file.clone(),
    };
    let log = match &options.resume {
        Some(dir) => match crate::checkpoint::latest(&run.checkpoints()) {
            Some(latest) => {
                let state = crate::checkpoint::read_state(&latest)?;
                // Nothing left to train in a run that wrote its summary: its figures stay as
                // they are. (Without a summary, the last epoch's checkpoint was written and the
                // end of the run was not: the resume finishes it.)
                let finished = run.path().join("summary.json").is_file();
                if finished && state.stopped_early() {
                    return Err(TrainError::Resume {
                        path: dir.clone(),
                        reason: format!(
                            "the run already finished: early stopping ended it after epoch {} (no improvement for {} epochs)",
                            state.epoch, state.epochs_since_best
                        ),
                    });
                }
                if finished && state.epoch >= cfg.epochs {
                    return Err(TrainError::Resume {
                        path: dir.clone(),
                        reason: format!(
                            "the run already finished ({} of {} epochs); `--epochs N` with N above {} trains it further",
                            state.epoch, cfg.epochs, state.epoch
                        ),
                    });
                }
                events(RunEvent::Setup(format!(
                    "kiln train: resuming {} after epoch {} of {}",
                    run.path().display(),
                    state.epoch,
                    cfg.epochs
                )));
                if state.config.epochs != cfg.epochs {
                    events(RunEvent::Note(format!(
                        "the run was planned for {} epochs and now trains to {}: the learning-rate schedule from here follows the new length",
                        state.config.epochs, cfg.epochs
                    )));
                    // A later resume of this run continues to the new length.
                    let mut saved = RunConfig::read(run.path())?;
                    saved.config.train.epochs = cfg.epochs;
                    run.write_json("config.json", &saved)?;
                }
                // The log holds exactly the checkpoint's epochs before new ones are appended.
                crate::MetricsLog::rewrite(run.path().join("metrics.jsonl"), &state.records)?
            }
            None => {
                // It failed before its first checkpoint: it starts again from its config.
                events(RunEvent::Setup(format!(
                    "kiln train: {} has no checkpoint yet; starting it again from epoch 1",
                    run.path().display()
                )));
                crate::MetricsLog::rewrite(run.path().join("metrics.jsonl"), &[])?
            }
        },
        None => {
            run.write_json("config.json", &run_config)?;
            // A run file that repeats this run (into another --out).
            let mut again = file.clone();
            again.run.out = None;
            let toml = format!(
                "# Written by kiln {}: `kiln train --config config.toml --out NEW_DIR` repeats this run.\n{}",
                env!("CARGO_PKG_VERSION"),
                again
                    .to_toml()
                    .map_err(|e| write_error(run.path().join("config.toml"), e))?
            );
            let path = run.path().join("config.toml");
            crate::run::write_file(&path, toml.as_bytes())?;
            run.metrics_log()?
        }
    };
    Ok((run, log, run_config))
}

/// The run's event file under `dir/<run folder name>/`, with the config as text and the first
/// training samples (as the model sees them, de-normalised) as an image.
fn open_board(
    dir: &Path,
    run: &RunDir,
    file: &RunFile,
    train: &dyn BatchSource,
    norm: &Normalization,
) -> Result<crate::tensorboard::EventWriter, TrainError> {
    let name = run.path().file_name().unwrap_or(run.path().as_os_str());
    let mut tb = crate::tensorboard::EventWriter::create(&dir.join(name))?;
    let toml = file.to_toml().unwrap_or_default();
    tb.text("config", 0, &format!("```toml\n{toml}\n```"))?;
    let positions: Vec<usize> = (0..train.len().min(16)).collect();
    if !positions.is_empty() {
        let batch = train.epoch_batch(&positions, 0)?;
        let (png, hwc) = crate::plot::batch_grid_png(&batch.data, batch.shape, norm).map_err(|reason| {
            TrainError::Write {
                path: tb.path().to_path_buf(),
                reason,
            }
        })?;
        tb.image_png("training samples (epoch 1)", 0, png, hwc)?;
    }
    tb.flush()?;
    Ok(tb)
}

/// One epoch in TensorBoard: the loss and learning rate of every step (x: the global step), then
/// every epoch figure (x: the epoch).
pub(crate) fn board_epoch(
    tb: &mut crate::tensorboard::EventWriter,
    r: &EpochRecord,
    cfg: &crate::TrainConfig,
    (steps_per_epoch, total): (usize, usize),
) -> Result<(), TrainError> {
    let first = (r.epoch - 1) * steps_per_epoch;
    for (i, loss) in r.step_losses.iter().enumerate() {
        let step = first + i;
        let lr = cfg.schedule.lr_at(cfg.lr, step, steps_per_epoch, total);
        tb.scalar("step/train_loss", step as i64 + 1, *loss)?;
        tb.scalar("step/lr", step as i64 + 1, lr)?;
    }
    let epoch = r.epoch as i64;
    tb.scalar("epoch/train_loss", epoch, r.train_loss)?;
    if let Some(v) = r.val_loss {
        tb.scalar("epoch/val_loss", epoch, v)?;
    }
    for (key, v) in &r.metrics {
        tb.scalar(&format!("epoch/{key}"), epoch, *v)?;
    }
    tb.scalar("epoch/train_images_per_s", epoch, r.train_images_per_s)?;
    tb.flush()
}

/// The checks a run can make before it writes anything: one step fits in the training split,
/// the loss's class weights match the classes, and each split's first sample goes through its
/// transforms to the model's input shape (a resize to 0, a crop larger than the images, a
/// training augmentation that ends at another size than evaluation).
fn preflight(file: &RunFile, data: &Splits, cfg: &crate::TrainConfig) -> Result<(), TrainError> {
    let (n_train, n_val) = (data.train.len(), data.val.len());
    let per_step = cfg.batch_size * cfg.accumulate;
    if n_train < per_step {
        // Name what took the images: the validation hold-out when the step would fit without it.
        let (field, value) = if n_val > 0 && n_train + n_val >= per_step {
            ("data.val_fraction", file.data.val_fraction.to_string())
        } else {
            ("train.batch_size", cfg.batch_size.to_string())
        };
        let held = if n_val > 0 {
            format!(
                " ({n_val} more are held out for validation by data.val_fraction = {})",
                file.data.val_fraction
            )
        } else {
            String::new()
        };
        return Err(TrainError::InvalidConfig {
            field,
            value,
            reason: format!(
                "the training split has {n_train} sample{}{held}, fewer than one step of {} × {} (the last partial batch is dropped); lower the batch size, the accumulation or the validation fraction",
                if n_train == 1 { "" } else { "s" },
                cfg.batch_size,
                cfg.accumulate
            ),
        });
    }
    cfg.loss.validate(Some(data.classes.len()))?;
    let skip = file.data.on_bad_sample == crate::OnBadSample::Skip;
    let splits: [(&str, &'static str, &Source, bool); 3] = [
        ("training", "transforms.train", &data.train, true),
        ("validation", "transforms.eval", &data.val, false),
        ("test", "transforms.eval", &data.test, false),
    ];
    for (split, field, src, training) in splits {
        // Without augmentation, training images go through the evaluation stages.
        let (field, training_stages) = if training && file.transforms.train.is_empty() {
            ("transforms.eval", false)
        } else {
            (field, training)
        };
        let stages = crate::config::toml_text(if training_stages {
            &file.transforms.train
        } else {
            &file.transforms.eval
        });
        // Under "skip" a bad first sample is the policy's to record: try a few.
        let tries = if skip { src.len().min(8) } else { src.len().min(1) };
        let mut last = None;
        for p in 0..tries {
            let got = if training {
                src.epoch_batch(&[p], 0)
            } else {
                src.batch(&[p])
            };
            match got {
                Ok(b) => {
                    last = None;
                    let [_, c, h, w] = b.shape;
                    if [c, h, w] != data.chw {
                        let [mc, mh, mw] = data.chw;
                        return Err(TrainError::InvalidConfig {
                            field,
                            value: stages,
                            reason: format!(
                                "the {split} images come out as {c}x{h}x{w} (CxHxW), the model takes {mc}x{mh}x{mw}: end the stages at that size"
                            ),
                        });
                    }
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            // A stage that does not fit the images: the stages are the setting to change.
            if matches!(&e, TrainError::Transform(_)) || matches!(&e, TrainError::Data(d) if d.is_transform())
            {
                return Err(TrainError::InvalidConfig {
                    field,
                    value: stages,
                    reason: format!("the {split} split's first image: {e}"),
                });
            }
            return Err(e);
        }
    }
    Ok(())
}

fn write_error(path: PathBuf, e: impl std::fmt::Display) -> TrainError {
    TrainError::Write {
        path,
        reason: e.to_string(),
    }
}

/// A check `kiln doctor`, `kiln lr-find` and `kiln overfit-batch` run on a fresh model of a run
/// file (see [`crate::diagnose`]).
#[derive(Debug, Clone)]
pub enum Diagnosis {
    /// The pre-flight checks ([`crate::diagnose::doctor`]).
    Doctor,
    /// The learning-rate sweep ([`crate::diagnose::lr_find`]), its curve drawn to `plot`.
    LrFind {
        /// The sweep.
        sweep: crate::diagnose::LrFindConfig,
        /// Where to draw the curve.
        plot: Option<PathBuf>,
    },
    /// Overfitting the first batch ([`crate::diagnose::overfit_one_batch`]).
    OverfitBatch {
        /// Steps at most.
        steps: usize,
        /// The fraction of the first loss to reach.
        target: f64,
    },
}

/// What a [`Diagnosis`] found.
#[derive(Debug)]
pub enum DiagnosisReport {
    /// From [`Diagnosis::Doctor`].
    Doctor(crate::diagnose::DoctorReport),
    /// From [`Diagnosis::LrFind`].
    LrFind(crate::diagnose::LrFindResult),
    /// From [`Diagnosis::OverfitBatch`].
    OverfitBatch(crate::diagnose::OverfitReport),
}

/// Runs `what` on the model `file` names, freshly initialised (seeded), with its training data
/// (the file validated and resolved).
///
/// # Errors
///
/// The devices, the data, the model config; the check's own errors.
pub fn diagnose(file: &RunFile, what: Diagnosis) -> Result<DiagnosisReport, TrainError> {
    let (_, device, _) = devices(file)?;
    let data = Splits::open(file)?;
    device.seed(file.train.seed);
    file.classifier("kiln doctor")?.build_with(
        data.chw,
        data.classes.len(),
        &device,
        Diagnose {
            what,
            train: data.train.as_ref(),
            others: [("validation", data.val.as_ref()), ("test", data.test.as_ref())],
            cfg: &file.train,
            device: &device,
        },
    )?
}

struct Diagnose<'a> {
    what: Diagnosis,
    train: &'a dyn BatchSource,
    /// The validation and test splits, which `doctor` reads through too.
    others: [(&'static str, &'a dyn BatchSource); 2],
    cfg: &'a crate::TrainConfig,
    device: &'a Device,
}

impl ModelFn for Diagnose<'_> {
    type Output = Result<DiagnosisReport, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        use crate::diagnose as d;
        let Diagnose {
            what,
            train,
            others,
            cfg,
            device,
        } = self;
        let task = crate::Classification::new(cfg.loss.clone());
        Ok(match what {
            Diagnosis::Doctor => {
                let mut report = d::doctor(model, train, cfg, device)?;
                let [val, test] = others;
                report.checks.push(d::read_every_split(
                    &[("training", train), val, test],
                    cfg.batch_size,
                ));
                DiagnosisReport::Doctor(report)
            }
            Diagnosis::LrFind { sweep, plot } => DiagnosisReport::LrFind(d::lr_find(
                &task,
                model,
                train,
                cfg,
                device,
                &sweep,
                plot.as_deref(),
            )?),
            Diagnosis::OverfitBatch { steps, target } => DiagnosisReport::OverfitBatch(d::overfit_one_batch(
                &task, model, train, cfg, device, steps, target,
            )?),
        })
    }
}

/// Trains a fresh model of `file` (seeded) on its training split, validating on its validation
/// split, and returns the epochs' records: no run folder, no checkpoints, no test evaluation
/// (ablations compare many such short runs).
///
/// # Errors
///
/// The data, the model config, training itself.
pub fn fit_only(file: &RunFile, device: &Device) -> Result<Vec<EpochRecord>, TrainError> {
    let data = Splits::open(file)?;
    device.seed(file.train.seed);
    file.classifier("a classifier run")?.build_with(
        data.chw,
        data.classes.len(),
        device,
        FitOnly {
            data: &data,
            cfg: &file.train,
            device,
        },
    )?
}

struct FitOnly<'a> {
    data: &'a Splits,
    cfg: &'a crate::TrainConfig,
    device: &'a Device,
}

impl ModelFn for FitOnly<'_> {
    type Output = Result<Vec<EpochRecord>, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        let (train, val) = (self.data.train.as_ref(), self.data.val.as_ref());
        Ok(crate::fit(
            model,
            train,
            Some(val),
            self.cfg,
            self.device,
            FitOutputs::default(),
        )?
        .epochs)
    }
}
