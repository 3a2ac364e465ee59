//! Detectors from a run file: the COCO splits a data folder holds ([`DetectionLayout`]), a whole
//! training run ([`train`], what `kiln train` does when `[model]` is a detector), and trained
//! detector weights at work ([`TrainedDetector`]: the COCO table of a split, detections of
//! images).
//!
//! The run is the classification run's machinery over [`DetectionTask`]: the same run folder
//! (`config.json`/`config.toml`, `metrics.jsonl`, checkpoints, resume, `report.md`, the curves),
//! validation AP every epoch as the monitored metric (best epoch, early stopping), and at the end
//! the COCO table of the test split (or the validation split when there is none), its detections
//! as a COCO results file, and `model.bpk` with a spec that says which detector and classes it
//! is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::{CocoDetection, CocoFile, CocoResult};
use kiln_models::PretrainedSpec;
use kiln_models::detector::{Detector, DetectorConfig, DetectorFn};
use kiln_models::pretrained::DetectorSpec;
use kiln_transforms::Normalization;
use kiln_transforms::compose::Stage;
use serde::Serialize;

use crate::coco_eval::CocoMetrics;
use crate::config::{DataFormat, RunFile};
use crate::detection::{DetectionSource, DetectionStats, DetectionTask, MAP};
use crate::runner::{CocoSummary, RunEvent, RunOptions, RunOutcome, RunSummary};
use crate::{EpochRecord, FitOutputs, TrainError};

/// One COCO split: its images and its annotations file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CocoSplit {
    /// The images folder (`file_name`s are relative to it).
    pub images: PathBuf,
    /// The instances JSON.
    pub annotations: PathBuf,
}

impl CocoSplit {
    /// The split in `dir`: a COCO JSON in it (or its `annotations/`), images in its `images/`
    /// when it has one and no images of its own, else in it. `None` when it holds no COCO JSON.
    pub fn in_folder(dir: &Path) -> Option<Self> {
        match kiln_data::format::detect(dir) {
            Ok(kiln_data::format::Found::Coco { annotations }) => Some(Self {
                images: crate::data::coco_images(dir),
                annotations,
            }),
            _ => None,
        }
    }

    /// Reads the annotations and indexes the images (every listed image must exist).
    ///
    /// # Errors
    ///
    /// The file's and the set's errors (a listed image without a file names it).
    pub fn open(&self) -> Result<(CocoFile, CocoDetection), TrainError> {
        let file = CocoFile::read(&self.annotations)?;
        let set = CocoDetection::from_file(&self.images, &file)?;
        Ok((file, set))
    }
}

/// The COCO splits of a detection dataset folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectionLayout {
    /// What trains.
    pub train: CocoSplit,
    /// What is scored every epoch.
    pub val: Option<CocoSplit>,
    /// What the final model is scored on.
    pub test: Option<CocoSplit>,
}

impl DetectionLayout {
    /// The splits in `dir`, looked for in this order:
    ///
    /// 1. `dir/train`, `dir/val` and optionally `dir/test`, each a COCO folder (what
    ///    `kiln make-detection` writes);
    /// 2. COCO's own layout: `dir/annotations/instances_train2017.json` with the images in
    ///    `dir/train2017`, `instances_val2017.json` with `dir/val2017` (any suffix);
    /// 3. one COCO folder (`annotations` names its JSON, else the one found in `dir`): training
    ///    only, without validation.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the layouts looked for when none is there.
    pub fn find(dir: &Path, annotations: Option<&Path>) -> Result<Self, TrainError> {
        if let Some(a) = annotations {
            return Ok(Self {
                train: CocoSplit {
                    images: crate::data::coco_images(dir),
                    annotations: a.to_path_buf(),
                },
                val: None,
                test: None,
            });
        }
        if let Some(train) = CocoSplit::in_folder(&dir.join("train")) {
            return Ok(Self {
                train,
                val: CocoSplit::in_folder(&dir.join("val")),
                test: CocoSplit::in_folder(&dir.join("test")),
            });
        }
        if let Some(layout) = Self::coco_2017(dir) {
            return Ok(layout);
        }
        if let Some(train) = CocoSplit::in_folder(dir) {
            return Ok(Self {
                train,
                val: None,
                test: None,
            });
        }
        Err(TrainError::InvalidConfig {
            field: "data.path",
            value: dir.display().to_string(),
            reason: "a detector trains on COCO data: DIR/train and DIR/val folders each with an instances JSON and its images (`kiln make-detection` writes them), COCO's DIR/annotations/instances_train2017.json with DIR/train2017/ (and val2017), or one COCO folder".into(),
        })
    }

    /// `annotations/instances_<split><suffix>.json` with `<split><suffix>/` images.
    fn coco_2017(dir: &Path) -> Option<Self> {
        let annotations = dir.join("annotations");
        let entries = std::fs::read_dir(&annotations).ok()?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        let split = |prefix: &str| {
            names.iter().find_map(|n| {
                let stem = n.strip_prefix("instances_")?.strip_suffix(".json")?;
                stem.starts_with(prefix).then(|| CocoSplit {
                    images: dir.join(stem),
                    annotations: annotations.join(n),
                })
            })
        };
        Some(Self {
            train: split("train")?,
            val: split("val"),
            test: split("test").filter(|t| t.images.is_dir()),
        })
    }

    /// The split the final model is scored on: test, else validation.
    pub fn final_split(&self) -> Option<(&'static str, &CocoSplit)> {
        match (&self.test, &self.val) {
            (Some(t), _) => Some(("test", t)),
            (None, Some(v)) => Some(("val", v)),
            (None, None) => None,
        }
    }
}

/// The horizontal-flip probability of `[transforms] train` for detection (torchvision's reference
/// recipe, p 0.5, when it is empty), refusing stages that do not move boxes.
fn flip_probability(file: &RunFile) -> Result<f64, TrainError> {
    if !file.transforms.eval.is_empty() {
        return Err(TrainError::InvalidConfig {
            field: "transforms.eval",
            value: crate::config::toml_text(&file.transforms.eval),
            reason: "a detector resizes every image itself (its min_size / max_size in [model]); leave transforms.eval out".into(),
        });
    }
    match file.transforms.train.as_slice() {
        [] => Ok(0.5),
        [Stage::HorizontalFlip { p }] => Ok(*p),
        stages => Err(TrainError::InvalidConfig {
            field: "transforms.train",
            value: crate::config::toml_text(stages),
            reason: "detection training moves boxes with a horizontal flip only so far: train = [{ op = \"horizontal-flip\", p = 0.5 }] (the default), or [] with p = 0".into(),
        }),
    }
}

/// Settings of a classification run that a detector does not take, refused by name.
fn refuse_classifier_settings(file: &RunFile) -> Result<(), TrainError> {
    let defaults = crate::TrainConfig::default();
    let refuse = |field: &'static str, value: String| {
        Err(TrainError::InvalidConfig {
            field,
            value,
            reason: "applies to classifiers; a detector trains on its own loss".into(),
        })
    };
    if file.train.loss != defaults.loss {
        return refuse("train.loss", crate::config::toml_text(&file.train.loss));
    }
    if let Some(m) = &file.train.mixup {
        return refuse("train.mixup", crate::config::toml_text(m));
    }
    if file.transforms.erasing > 0.0 {
        return refuse("transforms.erasing", file.transforms.erasing.to_string());
    }
    if !file.finetune.is_default() {
        return refuse("finetune", crate::config::toml_text(&file.finetune));
    }
    if file.run.devices.len() > 1 {
        return Err(TrainError::InvalidConfig {
            field: "run.devices",
            value: format!("{} devices", file.run.devices.len()),
            reason: "detectors train on one device so far".into(),
        });
    }
    Ok(())
}

/// Trains the detector `[model]` names on the COCO splits of `data.path` and writes the run
/// folder; see the [module docs](self). `file` is validated and resolved.
///
/// # Errors
///
/// The settings a detector does not take, the data (a missing image names it; splits with
/// different categories), the model's config, training, the files.
pub fn train(
    mut file: RunFile,
    options: &RunOptions,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunOutcome, TrainError> {
    let started = Instant::now();
    let detector = file
        .model
        .detector()
        .cloned()
        .ok_or_else(|| TrainError::InvalidConfig {
            field: "model.name",
            value: file.model.id(),
            reason: "not a detector".into(),
        })?;
    if let Some(dir) = &options.resume {
        file.run.out = Some(dir.clone());
    }
    refuse_classifier_settings(&file)?;
    let flip = flip_probability(&file)?;
    let (spec, device, _) = crate::runner::devices(&file)?;
    let dir = file.data.path.clone().ok_or_else(|| TrainError::InvalidConfig {
        field: "data.path",
        value: "(none)".into(),
        reason: "the dataset's folder is needed".into(),
    })?;
    let layout = DetectionLayout::find(&dir, file.data.annotations.as_deref())?;
    let (_, train_set) = layout.train.open()?;
    let open_checked = |name: &str, split: &CocoSplit| -> Result<(CocoFile, CocoDetection), TrainError> {
        let (f, set) = split.open()?;
        if set.category_ids() != train_set.category_ids() {
            return Err(TrainError::InvalidConfig {
                field: "data.path",
                value: split.annotations.display().to_string(),
                reason: format!(
                    "the {name} split's categories (ids {:?}) are not the training split's ({:?})",
                    set.category_ids(),
                    train_set.category_ids()
                ),
            });
        }
        Ok((f, set))
    };
    let val = layout
        .val
        .as_ref()
        .map(|s| open_checked("validation", s))
        .transpose()?;
    let test = layout
        .test
        .as_ref()
        .map(|s| open_checked("test", s))
        .transpose()?;
    let classes = train_set.categories().to_vec();
    let category_ids = train_set.category_ids().to_vec();
    let cfg = file.train.clone();
    let norm_spec = file.transforms.normalization(DataFormat::Coco);
    let norm: Normalization = norm_spec.resolve()?;
    let [min_size, max_size] = detector.input_sizes();
    let n_train = train_set.len();
    let per_step = cfg.batch_size * cfg.accumulate;
    if n_train < per_step {
        return Err(TrainError::InvalidConfig {
            field: "train.batch_size",
            value: cfg.batch_size.to_string(),
            reason: format!(
                "the training split has {n_train} images, fewer than one step of {} x {}",
                cfg.batch_size, cfg.accumulate
            ),
        });
    }
    let steps_per_epoch = n_train / per_step;
    cfg.schedule
        .validate(cfg.lr, steps_per_epoch, steps_per_epoch * cfg.epochs)?;
    let start_weights = file.run.init_from.clone().filter(|_| options.resume.is_none());
    if let Some(path) = &start_weights {
        check_start(path, &detector, &category_ids, &norm, options)?;
    }

    let (run, mut log, run_config) = crate::runner::open_run(&mut file, &cfg, options, events)?;
    let name = detector.describe(classes.len());
    {
        let mut setup = |line: String| events(RunEvent::Setup(line));
        setup(format!("kiln train: {name} on {spec}"));
        let count = |s: &Option<(CocoFile, CocoDetection)>| s.as_ref().map_or(0, |(_, d)| d.len());
        setup(format!(
            "  data:  {} ({n_train} train / {} val / {} test images, {} categories)",
            dir.display(),
            count(&val),
            count(&test),
            classes.len()
        ));
        setup(format!(
            "  optim: {} lr={} schedule={} batch={} epochs={} seed={}",
            cfg.optimizer, cfg.lr, cfg.schedule, cfg.batch_size, cfg.epochs, cfg.seed
        ));
        setup(format!(
            "  input: shorter side {min_size}, longer at most {max_size}, batches padded to a multiple of 32; horizontal flip p={flip} in training; norm {} mean={:?} std={:?}",
            norm.name, norm.mean, norm.std
        ));
        if let Some(path) = &start_weights {
            setup(format!("  init:  {}", path.display()));
        }
        setup(format!("  run:   {}", run.path().display()));
    }
    // TensorBoard (optional): the run file as text, then every epoch's figures.
    let board = match &file.run.tensorboard {
        Some(dir) => {
            let name = run.path().file_name().unwrap_or(run.path().as_os_str());
            let mut tb = crate::tensorboard::EventWriter::create(&dir.join(name))?;
            tb.text(
                "config",
                0,
                &format!("```toml\n{}\n```", file.to_toml().unwrap_or_default()),
            )?;
            tb.flush()?;
            events(RunEvent::Setup(format!("  tensorboard: {}", tb.path().display())));
            Some(tb)
        }
        None => None,
    };
    for (split, set) in [
        ("training", Some(&train_set)),
        ("validation", val.as_ref().map(|v| &v.1)),
        ("test", test.as_ref().map(|t| &t.1)),
    ] {
        let Some(set) = set else { continue };
        let f = set.box_fixes();
        if f.clipped + f.dropped > 0 {
            events(RunEvent::Note(format!(
                "{split} split: {} boxes reaching outside their image clipped to it, {} without area dropped (as torchvision's reference scripts do)",
                f.clipped, f.dropped
            )));
        }
    }
    if val.is_none() {
        events(RunEvent::Warning(
            "no validation split: AP is not measured during training, and the best epoch is the lowest training loss".into(),
        ));
    }

    let train_src = DetectionSource::new(train_set, norm.clone(), min_size, max_size, flip, cfg.seed);
    let (val_task, val_src) = match val {
        Some((gt, set)) => {
            let task = DetectionTask::new(gt, &set)?;
            (
                Some(task),
                Some(DetectionSource::new(
                    set,
                    norm.clone(),
                    min_size,
                    max_size,
                    0.0,
                    cfg.seed,
                )),
            )
        }
        None => (None, None),
    };
    let task = match val_task {
        Some(t) => t,
        None => DetectionTask {
            ground_truth: None,
            image_ids: Vec::new(),
            category_ids: category_ids.clone(),
        },
    };
    let final_eval = match test {
        Some((gt, set)) => Some((
            "test",
            DetectionTask::new(gt, &set)?,
            DetectionSource::new(set, norm.clone(), min_size, max_size, 0.0, cfg.seed),
        )),
        None => None,
    };

    device.seed(cfg.seed);
    let trained = detector.build_with(
        classes.len(),
        &device,
        Fit {
            task: &task,
            train: &train_src,
            val: val_src.as_ref(),
            cfg: &cfg,
            device: &device,
            start: start_weights.as_deref(),
            log: &mut log,
            options,
            checkpoints: crate::CheckpointOptions {
                dir: run.checkpoints(),
                keep_last: file.checkpoints.keep_last,
                resume: options.resume.is_some(),
                on_error: file.checkpoints.on_error,
            },
            events,
            board,
            schedule: (steps_per_epoch, steps_per_epoch * cfg.epochs),
            final_eval: final_eval
                .as_ref()
                .map(|(n, t, s)| (*n, t, s))
                .or_else(|| val_src.as_ref().map(|s| ("val", &task, s))),
            run: &run,
        },
    )??;

    let spec = PretrainedSpec {
        model: detector.id(),
        architecture: None,
        normalization: norm_spec,
        input_chw: [3, min_size, max_size],
        num_classes: classes.len(),
        class_names: classes.clone(),
        eval: Vec::new(),
        jpeg_draft: false,
        detector: Some(DetectorSpec {
            architecture: detector.clone(),
            category_ids,
        }),
    };
    spec.save_next_to(&trained.model)?;
    if let Some(ema) = &trained.ema_model {
        spec.save_next_to(ema)?;
    }
    let result = &trained.fit;
    let (test_loss, coco, test_text) = match &trained.scored {
        Some(s) => (
            s.loss,
            Some(CocoSummary {
                split: s.split.to_string(),
                detections: s.results.clone(),
                metrics: s.metrics.clone(),
            }),
            Some(format!(
                "{} split, {} images, {} detections ({}):\n{}",
                s.split,
                s.images,
                s.detections,
                s.results.display(),
                s.metrics
            )),
        ),
        None => (f64::NAN, None, None),
    };
    let summary = RunSummary {
        epochs: cfg.epochs,
        train_images: n_train,
        val_images: val_src.as_ref().map_or(0, crate::BatchSource::len),
        test_images: final_eval
            .as_ref()
            .map_or(0, |(_, _, s)| crate::BatchSource::len(s)),
        train_images_per_s: result.train_images_per_s,
        final_val_acc: None,
        test_loss,
        test_acc: None,
        coco,
        seconds: started.elapsed().as_secs_f64(),
        model: trained.model.clone(),
        ema: None,
    };
    run.write_json("summary.json", &summary)?;
    let monitor = if val_src.is_some() {
        "val_map"
    } else {
        "train_loss"
    };
    let report = run.write_report(&crate::report::Report {
        title: format!("{name} on {}", dir.display()),
        config: serde_json::to_value(&run_config).map_err(|e| TrainError::Write {
            path: run.path().join("report.md"),
            reason: e.to_string(),
        })?,
        epochs: &result.epochs,
        primary: MAP,
        verdict: &result.verdict,
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        resumed_after: result.resumed_after,
        test: None,
        class_names: &classes,
        warnings: &result.warnings,
        seconds: summary.seconds,
        train_images_per_s: result.train_images_per_s,
        ema_test: None,
        test_text,
    })?;
    Ok(RunOutcome {
        run_dir: run.path().to_path_buf(),
        summary,
        verdict: result.verdict.to_string(),
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        patience: cfg.early_stopping.map_or(0, |e| e.patience),
        resumed_after: result.resumed_after,
        epochs: result.epochs.clone(),
        warnings: result.warnings.clone(),
        checkpoint_failures: result.checkpoint_failures.clone(),
        model: trained.model.clone(),
        best_model: run.checkpoints().join("best.bpk"),
        report,
    })
}

/// `run.init_from` for a detector: kiln detector weights of the same detector, classes and
/// normalization.
fn check_start(
    path: &Path,
    detector: &DetectorConfig,
    category_ids: &[u64],
    norm: &Normalization,
    options: &RunOptions,
) -> Result<(), TrainError> {
    let spec = PretrainedSpec::load_next_to(path).map_err(|e| TrainError::StartingWeights {
        path: path.to_path_buf(),
        source: e,
    })?;
    let invalid = |reason: String| TrainError::InvalidConfig {
        field: "run.init_from",
        value: path.display().to_string(),
        reason,
    };
    let Some(d) = &spec.detector else {
        return Err(invalid(format!(
            "holds {} classifier weights, not a detector's",
            spec.model
        )));
    };
    if d.architecture.id() != detector.id() {
        return Err(invalid(format!(
            "holds {} weights; [model] is {}",
            d.architecture.id(),
            detector.id()
        )));
    }
    if d.category_ids != category_ids {
        return Err(invalid(format!(
            "was trained on categories {:?}; the data has {:?}",
            d.category_ids, category_ids
        )));
    }
    spec.check_normalization(norm, options.allow_normalization_override)
        .map_err(|e| TrainError::StartingWeights {
            path: path.to_path_buf(),
            source: e,
        })
}

/// The final model's COCO figures.
struct Scored {
    split: &'static str,
    loss: f64,
    images: usize,
    detections: usize,
    metrics: CocoMetrics,
    results: PathBuf,
}

/// What the generic part of [`train`] returns.
struct Trained {
    fit: crate::FitResult<(), DetectionStats>,
    model: PathBuf,
    ema_model: Option<PathBuf>,
    scored: Option<Scored>,
}

/// The part of [`train`] that knows the detector's type.
struct Fit<'a, 'e> {
    task: &'a DetectionTask,
    train: &'a DetectionSource,
    val: Option<&'a DetectionSource>,
    cfg: &'a crate::TrainConfig,
    device: &'a Device,
    start: Option<&'a Path>,
    log: &'a mut crate::MetricsLog,
    options: &'a RunOptions,
    checkpoints: crate::CheckpointOptions,
    events: &'e mut dyn FnMut(RunEvent<'_>),
    board: Option<crate::tensorboard::EventWriter>,
    schedule: (usize, usize),
    final_eval: Option<(&'static str, &'a DetectionTask, &'a DetectionSource)>,
    run: &'a crate::RunDir,
}

impl DetectorFn for Fit<'_, '_> {
    type Output = Result<Trained, TrainError>;

    fn call<M: Detector>(self, model: M) -> Self::Output {
        let Fit {
            task,
            train,
            val,
            cfg,
            device,
            start,
            log,
            options,
            checkpoints,
            events,
            board,
            schedule,
            final_eval,
            run,
        } = self;
        let mut model = model;
        if let Some(path) = start {
            model = kiln_models::weights::load_weights(model, path)
                .map_err(|e| TrainError::StartingWeights {
                    path: path.to_path_buf(),
                    source: e,
                })?
                .0;
        }
        let events = std::cell::RefCell::new(events);
        let board = std::cell::RefCell::new(board);
        let result = crate::fit_task(
            task,
            model,
            train,
            val.map(|v| v as &dyn crate::BatchSource<_>),
            cfg,
            device,
            FitOutputs {
                log: Some(log),
                progress: options.progress,
                on_epoch: Some(&mut |r: &EpochRecord| {
                    (*events.borrow_mut())(RunEvent::Epoch(r));
                    // A log that cannot be written is said once; the run goes on without it.
                    let mut tb = board.borrow_mut();
                    let failed = tb
                        .as_mut()
                        .and_then(|b| crate::runner::board_epoch(b, r, cfg, schedule).err());
                    if let Some(e) = failed {
                        (*events.borrow_mut())(RunEvent::Warning(format!(
                            "TensorBoard logging stopped: {e}"
                        )));
                        *tb = None;
                    }
                }),
                on_warning: Some(&mut |w: &str| (*events.borrow_mut())(RunEvent::Warning(w.to_string()))),
                checkpoints: Some(checkpoints),
                ..FitOutputs::default()
            },
        )?;
        let model = result.model.valid();
        let model_path = run.save_model(&model, "model")?;
        let ema_model = match &result.ema {
            Some(e) => Some(run.save_model(e, "model_ema")?),
            None => None,
        };
        let scored = match final_eval {
            Some((split, task, source)) => {
                let eval = crate::evaluate_task(task, &model, source, cfg.batch_size, device)?;
                let Some(metrics) = task.score(&eval.stats).transpose()? else {
                    return Err(TrainError::InvalidConfig {
                        field: "data",
                        value: split.into(),
                        reason: "the split has no images to score".into(),
                    });
                };
                let results = run.path().join(format!("detections_{split}.json"));
                let json = serde_json::to_vec(&eval.stats.results).map_err(|e| TrainError::Write {
                    path: results.clone(),
                    reason: e.to_string(),
                })?;
                crate::run::write_file(&results, &json)?;
                Some(Scored {
                    split,
                    loss: eval.loss,
                    images: eval.samples,
                    detections: eval.stats.results.len(),
                    metrics,
                    results,
                })
            }
            None => None,
        };
        let fit = crate::FitResult {
            model: (),
            ema: result.ema.as_ref().map(|_| ()),
            epochs: result.epochs,
            train_images_per_s: result.train_images_per_s,
            warnings: result.warnings,
            best: result.best,
            stopped_early: result.stopped_early,
            resumed_after: result.resumed_after,
            verdict: result.verdict,
            val_stats: result.val_stats,
            skipped: result.skipped,
            checkpoint_failures: result.checkpoint_failures,
            allreduce: result.allreduce,
        };
        Ok(Trained {
            fit,
            model: model_path,
            ema_model,
            scored,
        })
    }
}

/// Detector weights with their spec, for scoring a COCO split or detecting objects in images.
#[derive(Debug, Clone)]
pub struct TrainedDetector {
    /// The weights file.
    pub path: PathBuf,
    /// Their spec (`detector` set).
    pub spec: PretrainedSpec,
}

/// The detections of one input ([`TrainedDetector::predict`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageDetections {
    /// The image file.
    pub input: PathBuf,
    /// Its COCO image id ([`detection_inputs`]).
    pub image_id: u64,
    /// Its `[height, width]`.
    pub size: [usize; 2],
    /// Its detections, best first, in its pixels (`bbox` as `[x, y, width, height]`, as COCO
    /// results write it; `category_id` the dataset's id).
    pub detections: Vec<NamedDetection>,
}

/// One detection with its class name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedDetection {
    /// The class label (`0..classes`).
    pub label: u32,
    /// The class's name.
    pub class: String,
    /// The COCO category id.
    pub category_id: u64,
    /// `[x, y, width, height]` pixels.
    pub bbox: [f64; 4],
    /// The detector's confidence.
    pub score: f64,
}

/// The COCO table of a split ([`TrainedDetector::evaluate`]).
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    /// The annotations scored against.
    pub annotations: PathBuf,
    /// Images evaluated.
    pub images: usize,
    /// Mean loss per image.
    pub loss: f64,
    /// pycocotools' figures.
    pub metrics: CocoMetrics,
    /// Every detection, as a COCO results list.
    #[serde(skip)]
    pub results: Vec<CocoResult>,
}

impl std::fmt::Display for DetectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "kiln eval: {} images of {}, {} detections, loss {:.4}",
            self.images,
            self.annotations.display(),
            self.results.len(),
            self.loss
        )?;
        write!(f, "{}", self.metrics)
    }
}

impl TrainedDetector {
    /// The weights at `path` when their spec says they are a detector's; `None` for a
    /// classifier's.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when the weights or their spec are missing.
    pub fn open(path: &Path) -> Result<Option<Self>, TrainError> {
        let sidecar = PretrainedSpec::sidecar_path(path);
        if !path.is_file() || !sidecar.is_file() {
            return Ok(None);
        }
        let spec = PretrainedSpec::load_next_to(path)?;
        Ok(spec.detector.is_some().then(|| Self {
            path: path.to_path_buf(),
            spec,
        }))
    }

    fn detector(&self) -> Result<&DetectorSpec, TrainError> {
        self.spec
            .detector
            .as_ref()
            .ok_or_else(|| TrainError::InvalidConfig {
                field: "weights",
                value: self.path.display().to_string(),
                reason: "not detector weights".into(),
            })
    }

    /// The COCO table of the split in `dir` (a COCO folder, or a detection dataset folder whose
    /// test split, else validation split, is taken), with the weights' own preprocessing.
    ///
    /// # Errors
    ///
    /// The data's errors; categories other than the weights'.
    pub fn evaluate(
        &self,
        dir: &Path,
        batch_size: usize,
        device: &Device,
    ) -> Result<DetectionReport, TrainError> {
        let d = self.detector()?;
        let split = match CocoSplit::in_folder(dir) {
            Some(s) => s,
            None => {
                let layout = DetectionLayout::find(dir, None)?;
                let (_, s) = layout.final_split().ok_or_else(|| TrainError::InvalidConfig {
                    field: "data",
                    value: dir.display().to_string(),
                    reason: "has no test/ or val/ split to score".into(),
                })?;
                s.clone()
            }
        };
        let (gt, set) = split.open()?;
        if set.category_ids() != d.category_ids {
            return Err(TrainError::InvalidConfig {
                field: "data",
                value: split.annotations.display().to_string(),
                reason: format!(
                    "its categories (ids {:?}) are not the ones the weights were trained on ({:?})",
                    set.category_ids(),
                    d.category_ids
                ),
            });
        }
        let norm = self.spec.normalization.resolve()?;
        let [min_size, max_size] = d.architecture.input_sizes();
        let task = DetectionTask::new(gt, &set)?;
        let source = DetectionSource::new(set, norm, min_size, max_size, 0.0, 0);
        let (loss, stats, images) = d.architecture.build_with(
            self.spec.num_classes,
            device,
            Evaluate {
                weights: &self.path,
                task: &task,
                source: &source,
                batch_size,
                device,
            },
        )??;
        let metrics = task
            .score(&stats)
            .transpose()?
            .ok_or_else(|| TrainError::InvalidConfig {
                field: "data",
                value: split.annotations.display().to_string(),
                reason: "lists no images to score".into(),
            })?;
        Ok(DetectionReport {
            annotations: split.annotations,
            images,
            loss,
            metrics,
            results: stats.results,
        })
    }

    /// Detections of each image (`inputs`: image files with their ids, as
    /// [`detection_inputs`] lists them), best first, keeping those scoring at least `min_score`.
    ///
    /// # Errors
    ///
    /// An image that cannot be read; the weights'.
    pub fn predict(
        &self,
        inputs: &[(PathBuf, u64)],
        min_score: f64,
        device: &Device,
    ) -> Result<Vec<ImageDetections>, TrainError> {
        let d = self.detector()?;
        let norm = self.spec.normalization.resolve()?;
        let [min_size, max_size] = d.architecture.input_sizes();
        d.architecture.build_with(
            self.spec.num_classes,
            device,
            Predict {
                weights: &self.path,
                spec: &self.spec,
                category_ids: &d.category_ids,
                inputs,
                norm: &norm,
                sizes: [min_size, max_size],
                min_score,
                device,
            },
        )?
    }
}

struct Evaluate<'a> {
    weights: &'a Path,
    task: &'a DetectionTask,
    source: &'a DetectionSource,
    batch_size: usize,
    device: &'a Device,
}

impl DetectorFn for Evaluate<'_> {
    type Output = Result<(f64, DetectionStats, usize), TrainError>;

    fn call<M: Detector>(self, model: M) -> Self::Output {
        let (model, _) = kiln_models::weights::load_weights(model, self.weights)?;
        let eval = crate::evaluate_task(self.task, &model, self.source, self.batch_size, self.device)?;
        Ok((eval.loss, eval.stats, eval.samples))
    }
}

struct Predict<'a> {
    weights: &'a Path,
    spec: &'a PretrainedSpec,
    category_ids: &'a [u64],
    inputs: &'a [(PathBuf, u64)],
    norm: &'a Normalization,
    sizes: [usize; 2],
    min_score: f64,
    device: &'a Device,
}

impl DetectorFn for Predict<'_> {
    type Output = Result<Vec<ImageDetections>, TrainError>;

    fn call<M: Detector>(self, model: M) -> Self::Output {
        let (model, _) = kiln_models::weights::load_weights(model, self.weights)?;
        let batcher = kiln_data::batcher::DetectionBatcher::new(self.spec.num_classes, Device::flex())
            .with_size_multiple(32);
        let mut out = Vec::with_capacity(self.inputs.len());
        for (input, image_id) in self.inputs {
            let image = kiln_data::decode::imread(input)?;
            let hw = [image.height(), image.width()];
            let item = kiln_data::DetectionItem {
                image,
                boxes: Vec::new(),
                labels: Vec::new(),
                crowd: Vec::new(),
                image_id: 0,
                path: input.clone(),
            };
            let resized = crate::detection::resized_size(hw, self.sizes[0], self.sizes[1]);
            let sample = kiln_transforms::augment::resize_detection(item, resized, false, self.norm)?;
            use kiln_data::Collate;
            let batch = batcher.collate(vec![kiln_data::Indexed {
                index: 0,
                item: sample,
            }])?;
            let (_, dets) = model.detect(batch.images.to_device(self.device), None, &[resized], &[hw]);
            let detections = dets
                .into_iter()
                .flatten()
                .filter(|d| f64::from(d.score) >= self.min_score)
                .map(|d| {
                    let [x1, y1, x2, y2] = d.bbox.map(f64::from);
                    let label = d.label as usize;
                    NamedDetection {
                        label: d.label,
                        class: self
                            .spec
                            .class_names
                            .get(label)
                            .cloned()
                            .unwrap_or_else(|| label.to_string()),
                        category_id: self.category_ids.get(label).copied().unwrap_or(label as u64),
                        bbox: [x1, y1, x2 - x1, y2 - y1],
                        score: f64::from(d.score),
                    }
                })
                .collect();
            out.push(ImageDetections {
                input: input.clone(),
                image_id: *image_id,
                size: hw,
                detections,
            });
        }
        Ok(out)
    }
}

/// The images `input` names, with COCO image ids: a COCO folder's listed images with their ids
/// (so the detections score against its annotations), else one image file or a folder's image
/// files in name order, numbered from 1.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for a missing input or a folder without images; a COCO file's
/// errors.
pub fn detection_inputs(input: &Path) -> Result<Vec<(PathBuf, u64)>, TrainError> {
    let invalid = |reason: String| TrainError::InvalidConfig {
        field: "input",
        value: input.display().to_string(),
        reason,
    };
    if input.is_dir() {
        if let Some(split) = CocoSplit::in_folder(input) {
            let file = CocoFile::read(&split.annotations)?;
            return Ok(file
                .images
                .iter()
                .map(|i| (split.images.join(&i.file_name), i.id))
                .collect());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(|e| invalid(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    kiln_data::folder::IMAGE_EXTENSIONS
                        .iter()
                        .any(|i| i.eq_ignore_ascii_case(x))
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(invalid("holds no image files and no COCO annotations".into()));
        }
        return Ok(files.into_iter().zip(1..).collect());
    }
    if !input.is_file() {
        return Err(invalid("no such file or folder".into()));
    }
    Ok(vec![(input.to_path_buf(), 1)])
}

/// `detections` drawn on their image (class name and score above each box) as a PNG at `out`.
///
/// # Errors
///
/// The image's decoding; the PNG's writing.
pub fn draw_detections(detections: &ImageDetections, out: &Path) -> Result<(), TrainError> {
    let image = kiln_data::decode::imread(&detections.input)?;
    let rgb: Vec<u8> = image
        .as_slice()
        .chunks(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let captions: Vec<String> = detections
        .detections
        .iter()
        .map(|d| format!("{} {:.2}", d.class, d.score))
        .collect();
    let boxes: Vec<crate::plot::LabelledBox<'_>> = detections
        .detections
        .iter()
        .zip(&captions)
        .map(|(d, caption)| {
            let [x, y, w, h] = d.bbox.map(|v| v as f32);
            crate::plot::LabelledBox {
                bbox: [x, y, x + w, y + h],
                caption,
                label: d.label,
            }
        })
        .collect();
    crate::plot::draw_boxes(out, &rgb, [image.height(), image.width()], &boxes)
}

/// What [`import_torchvision_detector`] writes: torchvision detector weights as a kiln
/// checkpoint.
#[derive(Debug, Clone)]
pub struct DetectorImport {
    /// The detector (its backbone must be the weights').
    pub architecture: DetectorConfig,
    /// The state dict (`.pth` or `.safetensors`).
    pub weights: PathBuf,
    /// The folder to write `model.bpk` and its spec into (created; must not hold a `model.bpk`).
    pub out: PathBuf,
    /// The weights' classes (torchvision's COCO detectors: 91, label = COCO category id).
    pub classes: usize,
    /// The normalization they were trained with.
    pub normalization: kiln_transforms::NormalizationSpec,
    /// Class names, one per class, or none.
    pub class_names: Vec<String>,
}

/// Imports torchvision detector weights as `out/model.bpk` with a detector spec; labels map to
/// COCO category ids one to one, as torchvision's detectors number them. Returns them opened.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for class names that do not match the classes or an `out` that
/// holds a `model.bpk`; the import's errors (tensors that do not fit, naming them).
pub fn import_torchvision_detector(
    r: &DetectorImport,
    device: &Device,
) -> Result<TrainedDetector, TrainError> {
    let path = crate::infer::import_target(&r.out, r.classes, &r.class_names)?;
    let [min_size, max_size] = r.architecture.input_sizes();
    let spec = PretrainedSpec {
        model: r.architecture.id(),
        architecture: None,
        normalization: r.normalization.clone(),
        input_chw: [3, min_size, max_size],
        num_classes: r.classes,
        class_names: r.class_names.clone(),
        eval: Vec::new(),
        jpeg_draft: false,
        detector: Some(DetectorSpec {
            architecture: r.architecture.clone(),
            category_ids: (0..r.classes as u64).collect(),
        }),
    };
    struct Import<'a> {
        weights: &'a Path,
        spec: &'a PretrainedSpec,
        out: &'a Path,
    }
    impl DetectorFn for Import<'_> {
        type Output = Result<PathBuf, kiln_models::ModelError>;
        fn call<M: Detector>(self, model: M) -> Self::Output {
            let model = kiln_models::import::load_torchvision_detector(model, self.weights)?;
            kiln_models::weights::save_weights(&model, self.out, Some(self.spec))
        }
    }
    let path = r.architecture.build_with(
        r.classes,
        device,
        Import {
            weights: &r.weights,
            spec: &spec,
            out: &path,
        },
    )??;
    Ok(TrainedDetector { path, spec })
}
