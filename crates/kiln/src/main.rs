//! The `kiln` command line. Glue only: it parses arguments, calls the library crates and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::prelude::Device;
use clap::{Args, Parser, Subcommand};
use kiln_data::{FASHION_MNIST_CLASSES, MnistDataset, MnistSplit, random_split};
use kiln_models::{PretrainedSpec, ReferenceCnnConfig};
use kiln_train::{ClassificationSource, DeviceSpec, EpochRecord, FitOutputs, RunDir, Schedule, TrainConfig};
use kiln_transforms::compose::{Compose, Stage};
use kiln_transforms::{Normalization, NormalizationSpec};
use serde::{Deserialize, Serialize};

/// The vendored Fashion-MNIST subset (10,000 train / 2,000 test images), found from the source
/// tree so `cargo run` works from any directory.
const VENDORED_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini");

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Train image models in Rust, with safe defaults."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `kiln` with no subcommand is `kiln train`.
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the reference CNN on Fashion-MNIST (the default command).
    Train(TrainArgs),
    /// Pre-flight checks (labels, class balance, first-batch normalisation, one forward/backward,
    /// initial loss ≈ ln C) with the same flags as `train`; exits with 1 when any fails.
    Doctor(TrainArgs),
    /// The learning-rate range test with the same flags as `train`: prints the suggested rate and
    /// writes the curve to --plot (default lr_find.png).
    LrFind {
        #[command(flatten)]
        args: TrainArgs,
        /// Where to draw the loss against log10(lr).
        #[arg(long, default_value = "lr_find.png")]
        plot: PathBuf,
        /// Steps of the sweep (one batch each).
        #[arg(long, default_value_t = 100)]
        steps: usize,
    },
    /// Train on the first batch only: a model that can learn drives its loss below 5% of the
    /// start; exits with 1 when it cannot.
    OverfitBatch {
        #[command(flatten)]
        args: TrainArgs,
        /// Most steps to try.
        #[arg(long, default_value_t = 300)]
        steps: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct TrainArgs {
    /// Directory with the four Fashion-MNIST idx files (gzipped or raw), e.g.
    /// /usr/share/datasets/fashion-mnist. Default: the vendored subset in data/fashion-mnist-mini.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Optimizer with PyTorch's defaults: sgd (momentum 0.9, dampening 0, weight decay 5e-4 except
    /// on biases and BatchNorm), adam, adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: kiln_train::OptimizerConfig,
    /// Learning-rate schedule over the run's steps: cosine (to 0), constant, one-cycle or
    /// polynomial.
    #[arg(long, default_value_t = TrainConfig::default().schedule)]
    schedule: Schedule,
    /// Linear warmup over this many epochs before the schedule (from --warmup-start × lr).
    #[arg(long, conflicts_with = "warmup_steps")]
    warmup_epochs: Option<usize>,
    /// Linear warmup over this many steps before the schedule.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// The warmup's first learning rate as a fraction of --lr, in (0, 1].
    #[arg(long, default_value_t = 0.1)]
    warmup_start: f64,
    /// Average the gradients of N batches per optimizer step (effective batch N × --batch-size).
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Clip the global gradient norm to this value before each step.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Label smoothing α in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Stop when validation accuracy (training loss without a validation split) has not improved
    /// for N epochs; the best model is kept either way.
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    /// Seed of initialisation, batch order and the validation split.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Fraction of the training set held out for validation each epoch.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Device: flex (CPU, default), wgpu, cuda, cuda:N, ndarray.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Train on several devices at once, e.g. cuda:0,cuda:1: one model replica each, every batch
    /// split evenly between them, gradients averaged (NCCL all-reduce on CUDA; gathered on the
    /// first device otherwise). The batch size must divide by the number of devices. See docs/gpu.md.
    #[arg(long, value_delimiter = ',', value_name = "LIST", conflicts_with = "device")]
    devices: Vec<DeviceSpec>,
    /// Directory for the run's outputs (must be empty or absent). Default: runs/run-<UTC time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Start from these weights (a kiln `.bpk` of the same model, e.g. a previous run's
    /// model.bpk) instead of a fresh initialisation. Its `.kiln.json` spec must name the same
    /// normalization as this run's data.
    #[arg(long, value_name = "WEIGHTS")]
    init_from: Option<PathBuf>,
    /// Accept --init-from weights trained with another normalization (on purpose).
    #[arg(long, requires = "init_from")]
    allow_normalization_override: bool,
    /// Continue a stopped run from its latest checkpoint (RUN_DIR/checkpoints): the data, model
    /// and training settings come from RUN_DIR/config.json; its metrics and report are updated.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "init_from"])]
    resume: Option<PathBuf>,
    /// Epoch checkpoints to keep (the best model is kept as checkpoints/best.bpk either way).
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Training augmentation, a comma list: `crop=P` (random 28×28 crop of the image padded by P
    /// pixels, torchvision's RandomCrop(28, padding=P)), `flip` or `flip=p` (horizontal flip,
    /// p = 0.5 by default), `erase=p` (torchvision's RandomErasing after normalization); `none`
    /// (the default) turns it off. Validation and test images are never augmented.
    #[arg(long, default_value = "none", value_name = "LIST")]
    augment: String,
    /// Threads that build training batches ahead of the model (0: on the training thread).
    /// Results do not depend on it.
    #[arg(long, default_value_t = TrainConfig::default().num_workers)]
    workers: usize,
}

/// What a run saves as `config.json`: everything needed to repeat (or resume) it.
#[derive(Serialize, Deserialize)]
struct RunConfig {
    kiln_version: String,
    data: PathBuf,
    device: DeviceSpec,
    val_fraction: f64,
    init_from: Option<PathBuf>,
    train: TrainConfig,
    model: ReferenceCnnConfig,
    normalization: Normalization,
    /// Training augmentation (absent in runs made before it existed).
    #[serde(default)]
    augmentation: Option<Compose>,
}

#[derive(Serialize)]
struct Summary {
    epochs: usize,
    train_images: usize,
    val_images: usize,
    test_images: usize,
    train_images_per_s: f64,
    final_val_acc: Option<f64>,
    test_loss: f64,
    test_acc: f64,
    seconds: f64,
    model: PathBuf,
}

fn main() -> ExitCode {
    // Keep freed batch memory for reuse instead of page-faulting it back in every batch (glibc;
    // a no-op elsewhere). Measured in docs/data.md.
    kiln_data::alloc::tune_for_loading();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Train(a)) => train(&a).map(|()| true),
        None => train(&cli.train).map(|()| true),
        Some(Command::Doctor(a)) => doctor(&a),
        Some(Command::LrFind { args, plot, steps }) => lr_find(&args, &plot, steps).map(|()| true),
        Some(Command::OverfitBatch { args, steps }) => overfit_batch(&args, steps),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A Fashion-MNIST split served as normalised batches.
type FmnistSource = ClassificationSource<MnistDataset, kiln_data::MnistItem, kiln_data::Gray>;

/// The device, config, training split and a fresh model, as `train` would build them.
fn prepare(
    args: &TrainArgs,
) -> anyhow::Result<(Device, TrainConfig, FmnistSource, kiln_models::ReferenceCnn)> {
    let device = args.device.parse::<DeviceSpec>()?.device()?;
    let cfg = train_config(args);
    cfg.validate()?;
    let data_dir = args.data.clone().unwrap_or_else(|| PathBuf::from(VENDORED_DATA));
    let train_set = MnistDataset::from_dir(&data_dir, MnistSplit::Train)?;
    let (train_idx, _) = random_split(train_set.len(), args.val_fraction, cfg.seed);
    let src = ClassificationSource::subset(train_set, train_idx, Normalization::fashion_mnist())?;
    device.seed(cfg.seed);
    let model = ReferenceCnnConfig::new().init(&device)?;
    Ok((device, cfg, src, model))
}

fn doctor(args: &TrainArgs) -> anyhow::Result<bool> {
    let (device, cfg, src, model) = prepare(args)?;
    let report = kiln_train::diagnose::doctor(model, &src, &cfg, &device)?;
    print!("{report}");
    println!(
        "{}",
        if report.ok() {
            "doctor: all checks passed"
        } else {
            "doctor: some checks failed (see above)"
        }
    );
    Ok(report.ok())
}

fn lr_find(args: &TrainArgs, plot: &Path, steps: usize) -> anyhow::Result<()> {
    let (device, cfg, src, model) = prepare(args)?;
    let sweep = kiln_train::diagnose::LrFindConfig {
        steps,
        ..Default::default()
    };
    let r = kiln_train::diagnose::lr_find(model, &src, &cfg, &device, &sweep, Some(plot))?;
    match r.suggested {
        Some(lr) => println!(
            "lr-find: suggested lr {lr:.3e} ({} steps from {:.0e}); curve: {}",
            r.lrs.len(),
            sweep.start_lr,
            plot.display()
        ),
        None => println!(
            "lr-find: the loss never fell; no suggestion (curve: {})",
            plot.display()
        ),
    }
    Ok(())
}

fn overfit_batch(args: &TrainArgs, steps: usize) -> anyhow::Result<bool> {
    let (device, cfg, src, model) = prepare(args)?;
    let r = kiln_train::diagnose::overfit_one_batch(model, &src, &cfg, &device, steps, 0.05)?;
    println!("overfit-batch: {}", r.message);
    Ok(r.passed)
}

fn train_config(args: &TrainArgs) -> TrainConfig {
    TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        optimizer: args.optimizer,
        schedule: Schedule {
            warmup: warmup(args),
            ..args.schedule.clone()
        },
        seed: args.seed,
        num_workers: args.workers,
        accumulate: args.accumulate,
        clip_grad_norm: args.clip_grad_norm,
        loss: kiln_train::LossConfig {
            label_smoothing: args.label_smoothing,
            class_weights: None,
        },
        early_stopping: args.patience.map(|patience| kiln_train::EarlyStopping {
            monitor: if args.val_fraction > 0.0 {
                kiln_train::Monitor::ValAcc
            } else {
                kiln_train::Monitor::TrainLoss
            },
            patience,
            min_delta: 0.0,
        }),
        ..TrainConfig::default()
    }
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    // The device first: a backend that is not compiled in fails before any data is read.
    let (spec, data_parallel) = match args.devices.as_slice() {
        [] => (args.device.parse::<DeviceSpec>()?, None),
        [one] => (*one, None),
        many => (many[0], Some(kiln_train::parallel::DataParallel::new(many)?)),
    };
    let device = spec.device()?;
    let resumed: Option<RunConfig> = match &args.resume {
        Some(dir) => {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--resume {}: cannot read {}", dir.display(), path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("--resume: {} is not a kiln run config", path.display()))?,
            )
        }
        None => None,
    };
    let args_cfg = train_config(args);
    let cfg = resumed.as_ref().map_or(args_cfg, |r| TrainConfig {
        // Results do not depend on the worker count: this machine's choice wins.
        num_workers: args.workers,
        ..r.train.clone()
    });
    let augmentation = match &resumed {
        Some(r) => r.augmentation.clone(),
        None => augmentation(&args.augment)?,
    };
    let val_fraction = resumed.as_ref().map_or(args.val_fraction, |r| r.val_fraction);
    cfg.validate()?;
    if let Some(p) = &data_parallel {
        p.check_batch_size(cfg.batch_size)?;
    }
    if !(0.0..1.0).contains(&val_fraction) {
        anyhow::bail!("--val-fraction must be in [0, 1), got {val_fraction}");
    }

    let data_dir = match &resumed {
        Some(r) => r.data.clone(),
        None => args.data.clone().unwrap_or_else(|| PathBuf::from(VENDORED_DATA)),
    };
    let train_set = MnistDataset::from_dir(&data_dir, MnistSplit::Train)?;
    let test_set = MnistDataset::from_dir(&data_dir, MnistSplit::Test)?;
    let data_root = train_set
        .images_path()
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let (train_idx, val_idx) = random_split(train_set.len(), val_fraction, cfg.seed);
    let norm = Normalization::fashion_mnist();
    let (n_train, n_val, n_test) = (train_idx.len(), val_idx.len(), test_set.len());
    let mut train_src = ClassificationSource::subset(train_set.clone(), train_idx, norm.clone())?;
    if let Some(compose) = &augmentation {
        train_src = train_src.with_augmentation(compose.clone(), cfg.seed)?;
    }
    let val_src = ClassificationSource::subset(train_set, val_idx, norm.clone())?;
    let test_src = ClassificationSource::new(test_set, norm.clone());

    let model_cfg = ReferenceCnnConfig::new();
    let mut model = model_cfg.init(&device)?;
    if let Some(path) = &args.init_from {
        let (loaded, spec) = kiln_models::weights::load_weights(model, path)?;
        match spec {
            Some(spec) => spec
                .check_normalization(&norm, args.allow_normalization_override)
                .with_context(|| format!("--init-from {}", path.display()))?,
            None => eprintln!(
                "warning: {} has no {} next to it; the normalization it was trained with cannot be checked",
                path.display(),
                PretrainedSpec::sidecar_path(path).display()
            ),
        }
        model = loaded;
    }
    let run = match (&args.resume, &args.out) {
        (Some(dir), _) => RunDir::open_existing(dir)?,
        (None, Some(p)) => RunDir::create(p)?,
        (None, None) => RunDir::timestamped("runs")?,
    };
    let run_config = RunConfig {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        data: data_root.clone(),
        device: spec,
        val_fraction,
        init_from: args.init_from.clone(),
        train: cfg.clone(),
        model: model_cfg.clone(),
        normalization: norm.clone(),
        augmentation: augmentation.clone(),
    };
    let mut log = match &args.resume {
        Some(dir) => {
            let latest = kiln_train::checkpoint::latest(&run.checkpoints()).with_context(|| {
                format!(
                    "--resume {}: no checkpoint in {} to resume from",
                    dir.display(),
                    run.checkpoints().display()
                )
            })?;
            let state = kiln_train::checkpoint::read_state(&latest)?;
            println!(
                "kiln train: resuming {} after epoch {} of {}",
                run.path().display(),
                state.epoch,
                cfg.epochs
            );
            // The log holds exactly the checkpoint's epochs before new ones are appended.
            kiln_train::MetricsLog::rewrite(run.path().join("metrics.jsonl"), &state.records)?
        }
        None => {
            run.write_json("config.json", &run_config)?;
            run.metrics_log()?
        }
    };
    let on = if args.devices.len() > 1 {
        let list: Vec<String> = args.devices.iter().map(ToString::to_string).collect();
        format!("{} (data parallel)", list.join(", "))
    } else {
        spec.to_string()
    };
    println!("kiln train: {} on {on}", model_cfg_name(&model_cfg));
    println!(
        "  data:  {} ({n_train} train / {n_val} val / {n_test} test)",
        data_root.display()
    );
    println!(
        "  optim: {} lr={} schedule={} batch={} epochs={} seed={}",
        cfg.optimizer, cfg.lr, cfg.schedule, cfg.batch_size, cfg.epochs, cfg.seed
    );
    println!(
        "  norm:  {} mean={:?} std={:?} ({:?} scale)",
        norm.name, norm.mean, norm.std, norm.scale
    );
    if let Some(compose) = &augmentation {
        println!("  augment (training batches only):");
        for line in compose.describe("grey") {
            println!("    {line}");
        }
    }
    if let Some(path) = &args.init_from {
        println!("  init:  {}", path.display());
    }
    println!("  run:   {}", run.path().display());

    let epochs = cfg.epochs;
    let mut print_epoch = |r: &EpochRecord| {
        let val = match (r.val_loss, r.val_acc) {
            (Some(l), Some(a)) => format!("val_loss={l:.4} val_acc={a:.4}"),
            _ => "no validation split".to_string(),
        };
        println!(
            "epoch {}/{epochs}  lr={:.4}  train_loss={:.4} train_acc={:.4}  {val}  {:.0} img/s  {:.1}s",
            r.epoch, r.lr, r.train_loss, r.train_acc, r.train_images_per_s, r.seconds
        );
        if let Some(v) = r.verdict.as_deref().filter(|v| !v.starts_with("healthy")) {
            println!("  verdict: {v}");
        }
    };
    let val_opt: Option<&dyn kiln_train::BatchSource> = if n_val > 0 { Some(&val_src) } else { None };
    let result = kiln_train::fit(
        model,
        &train_src,
        val_opt,
        &cfg,
        &device,
        FitOutputs {
            log: Some(&mut log),
            progress: !args.no_progress,
            on_epoch: Some(&mut print_epoch),
            on_warning: Some(&mut |w: &str| eprintln!("warning: {w}")),
            checkpoints: Some(kiln_train::CheckpointOptions {
                dir: run.checkpoints(),
                keep_last: args.keep_checkpoints,
                resume: args.resume.is_some(),
            }),
            data_parallel,
            ..Default::default()
        },
    )?;

    let eval_model = result.model.valid();
    let (test, confusion) = kiln_train::evaluate_with_confusion(&eval_model, &test_src, 1000, &device)?;
    let model_path = run
        .save_model(&eval_model, "model")
        .context("saving the trained model")?;
    // What the weights expect, kept next to them (model.bpk.kiln.json).
    let spec = PretrainedSpec {
        model: "reference-cnn".into(),
        normalization: NormalizationSpec::FashionMnist,
        input_chw: [model_cfg.in_channels, model_cfg.height, model_cfg.width],
        num_classes: model_cfg.num_classes,
        class_names: FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect(),
    };
    spec.check_normalization(&norm, false)?;
    spec.save_next_to(&model_path)?;
    let summary = Summary {
        epochs,
        train_images: n_train,
        val_images: n_val,
        test_images: n_test,
        train_images_per_s: result.train_images_per_s,
        final_val_acc: result.epochs.last().and_then(|r| r.val_acc),
        test_loss: test.loss,
        test_acc: test.accuracy,
        seconds: start.elapsed().as_secs_f64(),
        model: model_path.clone(),
    };
    run.write_json("summary.json", &summary)?;
    let class_names: Vec<String> = FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
    let monitor = if n_val > 0 { "val_acc" } else { "train_loss" };
    let report = run.write_report(&kiln_train::report::Report {
        title: format!("{} on Fashion-MNIST", model_cfg_name(&model_cfg)),
        config: serde_json::to_value(&run_config)?,
        epochs: &result.epochs,
        verdict: &result.verdict,
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        resumed_after: result.resumed_after,
        test: Some((test, &confusion)),
        class_names: &class_names,
        warnings: &result.warnings,
        seconds: summary.seconds,
        train_images_per_s: result.train_images_per_s,
    })?;
    if result.stopped_early {
        println!(
            "early stopping: no improvement for {} epochs",
            cfg.early_stopping.map_or(0, |e| e.patience)
        );
    }
    println!("verdict: {}", result.verdict);
    println!(
        "saved: {} (best: {})",
        model_path.display(),
        run.checkpoints().join("best.bpk").display()
    );
    println!("report: {}", report.display());
    println!(
        "summary: epochs={epochs} train_images_per_s={:.1} test_loss={:.4} test_acc={:.4} seconds={:.1}",
        summary.train_images_per_s, summary.test_loss, summary.test_acc, summary.seconds
    );
    Ok(())
}

/// `--augment`: `none`, or a comma list of `crop=P`, `flip[=p]`, `erase=p` (Fashion-MNIST, 28×28).
fn augmentation(list: &str) -> anyhow::Result<Option<Compose>> {
    let list = list.trim();
    if list == "none" || list.is_empty() {
        return Ok(None);
    }
    let mut compose = Compose {
        stages: Vec::new(),
        normalization: NormalizationSpec::FashionMnist,
        erasing: 0.0,
    };
    let prob = |item: &str, v: &str| -> anyhow::Result<f64> {
        match v.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => anyhow::bail!("--augment {item}: the probability must be a number in [0, 1]"),
        }
    };
    for item in list.split(',').map(str::trim) {
        let (name, value) = item.split_once('=').map_or((item, None), |(n, v)| (n, Some(v)));
        match (name, value) {
            ("crop", Some(v)) => {
                let padding = v.parse().with_context(|| {
                    format!("--augment {item}: the padding must be a whole number of pixels")
                })?;
                compose.stages.push(Stage::RandomCrop {
                    height: 28,
                    width: 28,
                    padding,
                    reflect: false,
                });
            }
            ("flip", None) => compose.stages.push(Stage::HorizontalFlip { p: 0.5 }),
            ("flip", Some(v)) => compose.stages.push(Stage::HorizontalFlip { p: prob(item, v)? }),
            ("erase", Some(v)) => compose.erasing = prob(item, v)?,
            _ => anyhow::bail!(
                "--augment: unknown item `{item}`; use none or a comma list of crop=PADDING, flip, flip=P, erase=P"
            ),
        }
    }
    Ok(Some(compose))
}

fn warmup(args: &TrainArgs) -> Option<kiln_train::schedule::Warmup> {
    use kiln_train::schedule::{Unit, Warmup};
    let (length, unit) = match (args.warmup_epochs, args.warmup_steps) {
        (Some(n), _) => (n, Unit::Epoch),
        (None, Some(n)) => (n, Unit::Step),
        (None, None) => return None,
    };
    Some(Warmup {
        length,
        unit,
        start_factor: args.warmup_start,
    })
}

fn model_cfg_name(cfg: &ReferenceCnnConfig) -> String {
    format!(
        "ReferenceCnn({}x{}x{} -> {} classes)",
        cfg.in_channels, cfg.height, cfg.width, cfg.num_classes
    )
}
