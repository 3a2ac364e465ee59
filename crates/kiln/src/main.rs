//! The `kiln` command line. Glue only: it parses arguments, calls the library crates and prints.
//!
//! Exit codes: 0 success, 1 a run-time failure (data, training, a failed check), 2 a usage or
//! config error (clap's own errors, a bad run file, an invalid setting, an unavailable device).

mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::prelude::Device;
use clap::{CommandFactory, FromArgMatches};
use kiln_data::{MnistDataset, MnistSplit, random_split};
use kiln_models::{Classifier, MlpConfig, PretrainedSpec, ReferenceCnnConfig};
use kiln_train::config::{DataFormat, ModelConfig, RunFile};
use kiln_train::parallel::DataParallel;
use kiln_train::{
    BatchSource, ClassificationSource, DeviceSpec, EpochRecord, FitOutputs, RunDir, TrainError,
};
use kiln_transforms::Normalization;
use serde::{Deserialize, Serialize};

use args::{Cli, Command, TrainArgs, Usage};

/// The vendored Fashion-MNIST subset (10,000 train / 2,000 test images), found from the source
/// tree so `cargo run` works from any directory.
const VENDORED_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini");

/// What a run saves as `config.json`: everything needed to repeat (or resume) it. The same
/// settings are written as `config.toml`, a run file `kiln train --config` accepts.
#[derive(Serialize, Deserialize)]
struct RunConfig {
    kiln_version: String,
    /// The run file as resolved (absolute data path, command-line flags applied).
    config: RunFile,
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
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let sub = matches.subcommand().map_or(&matches, |(_, m)| m);
    let result = match &cli.command {
        Some(Command::Train(a)) => train(a, sub).map(|()| true),
        None => train(&cli.train, sub).map(|()| true),
        Some(Command::Doctor(a)) => doctor(a, sub),
        Some(Command::LrFind { args, plot, steps }) => lr_find(args, sub, plot, *steps).map(|()| true),
        Some(Command::OverfitBatch { args, steps }) => overfit_batch(args, sub, *steps),
        Some(Command::Eval {
            run,
            weights,
            config,
            device,
            batch_size,
            json,
        }) => commands::eval(
            run.as_deref(),
            weights.as_deref(),
            config.as_deref(),
            *device,
            *batch_size,
            *json,
        )
        .map(|()| true),
        Some(Command::Predict {
            weights,
            input,
            config,
            top_k,
            out,
            device,
            json,
        }) => commands::predict(
            weights,
            config.as_deref(),
            input,
            *top_k,
            out.as_deref(),
            *device,
            *json,
        )
        .map(|()| true),
        Some(Command::Transform {
            config,
            input,
            out,
            train,
            epoch,
            json,
        }) => commands::transform(config, input, out, *train, *epoch, *json).map(|()| true),
        Some(Command::Stats {
            data,
            format,
            scale,
            json,
        }) => commands::stats(data, *format, *scale, *json).map(|()| true),
        Some(Command::Inspect {
            config,
            data,
            index,
            json,
            grid,
        }) => inspect_file(config.as_deref(), data.as_deref())
            .and_then(|file| commands::inspect(&file, *index, *json, grid.as_deref()))
            .map(|()| true),
        Some(Command::Ablate { args, study, out_dir }) => run_file_allowing(args, sub, &["epochs"])
            .and_then(|file| {
                let out = out_dir.clone().unwrap_or_else(|| {
                    PathBuf::from("runs").join(format!("ablate-{}", format!("{study:?}").to_lowercase()))
                });
                ablate::ablate(file, *study, &out, args.json)
            })
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether an error is the user's invocation or settings (exit code 2) rather than a run-time
/// failure (1).
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Usage>()
            || c.is::<kiln_train::config::ConfigError>()
            || c.is::<kiln_train::DeviceError>()
            || matches!(
                c.downcast_ref::<TrainError>(),
                Some(TrainError::InvalidConfig { .. } | TrainError::Device(_))
            )
    })
}

/// The run file of this invocation: `--config` (plus `--set`) or the flags, with `--device`,
/// `--devices`, `--out`, `--workers` and `--init-from` applied when given.
fn run_file(args: &TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<RunFile> {
    run_file_allowing(args, matches, &[])
}

/// [`run_file`], with the training flags in `allowed` accepted next to --config (and applied).
fn run_file_allowing(
    args: &TrainArgs,
    matches: &clap::ArgMatches,
    allowed: &[&str],
) -> anyhow::Result<RunFile> {
    let mut file = match &args.config {
        Some(path) => {
            args::refuse_flags_with_config(matches, allowed)?;
            let mut file = RunFile::load(path, &args.set)?;
            if allowed.contains(&"epochs") && args::given(matches, "epochs") {
                file.train.epochs = args.epochs;
            }
            file
        }
        None => {
            let file = args::file_from_flags(args)?;
            if args.set.is_empty() {
                file
            } else {
                RunFile::parse(&file.to_toml()?, Path::new("(flags)"), &args.set)?
            }
        }
    };
    args::apply_run_flags(&mut file, args, matches)?;
    file.train.validate()?;
    if !(0.0..1.0).contains(&file.data.val_fraction) {
        return Err(Usage(format!(
            "data.val_fraction must be in [0, 1), got {}",
            file.data.val_fraction
        ))
        .into());
    }
    Ok(file)
}

/// The device and, for several, the data-parallel setup (checked before anything is written).
fn devices(file: &RunFile) -> anyhow::Result<(DeviceSpec, Device, Option<DataParallel>)> {
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

/// The data folder: the configured one, or (Fashion-MNIST only) the vendored subset.
fn data_dir(file: &RunFile) -> anyhow::Result<PathBuf> {
    match (&file.data.path, file.data.format) {
        (Some(p), _) => Ok(p.clone()),
        (None, DataFormat::FashionMnist) => Ok(PathBuf::from(VENDORED_DATA)),
        (None, format) => Err(Usage(format!(
            "data.format = {format:?} needs data.path (or --data): only Fashion-MNIST is vendored"
        ))
        .into()),
    }
}

/// The model the run file names, on `device` (the caller seeds the device first). Built once per
/// run and moved straight into training: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum AnyModel {
    Cnn(kiln_models::ReferenceCnn),
    Mlp(kiln_models::Mlp),
    ResNet(kiln_models::ResNet),
}

/// The model `cfg` names for inputs of `chw` and `classes` outputs.
fn build_model(
    cfg: &ModelConfig,
    [c, h, w]: [usize; 3],
    classes: usize,
    device: &Device,
) -> anyhow::Result<AnyModel> {
    Ok(match cfg {
        ModelConfig::ReferenceCnn { batch_norm, init } => {
            let mut m = ReferenceCnnConfig::new()
                .with_in_channels(c)
                .with_height(h)
                .with_width(w)
                .with_num_classes(classes)
                .with_batch_norm(*batch_norm);
            if let Some(init) = init {
                m = m.with_init(*init);
            }
            AnyModel::Cnn(m.init(device)?)
        }
        ModelConfig::Mlp {
            widths,
            batch_norm,
            init,
        } => {
            let mut m = MlpConfig::new(widths.clone())
                .with_input_chw([c, h, w])
                .with_num_classes(classes)
                .with_batch_norm(*batch_norm);
            if let Some(init) = init {
                m = m.with_init(*init);
            }
            AnyModel::Mlp(m.init(device)?)
        }
        ModelConfig::Resnet {
            depth,
            batch_norm,
            init,
        } => {
            let mut m = kiln_models::ResNetConfig::new(depth.kind())
                .with_in_channels(c)
                .with_num_classes(classes)
                .with_batch_norm(*batch_norm);
            if let Some(init) = init {
                m = m.with_init(*init);
            }
            AnyModel::ResNet(m.init(device)?)
        }
    })
}

fn model_name(cfg: &ModelConfig, [c, h, w]: [usize; 3], classes: usize) -> String {
    let bn = |b: bool| if b { "" } else { ", no BatchNorm" };
    match cfg {
        ModelConfig::ReferenceCnn { batch_norm, .. } => {
            format!(
                "ReferenceCnn({c}x{h}x{w} -> {classes} classes{})",
                bn(*batch_norm)
            )
        }
        ModelConfig::Mlp {
            widths, batch_norm, ..
        } => {
            format!("Mlp({} -> {widths:?} -> {classes}{})", c * h * w, bn(*batch_norm))
        }
        ModelConfig::Resnet {
            depth, batch_norm, ..
        } => {
            format!(
                "ResNet {depth:?}({c}x{h}x{w} -> {classes} classes{})",
                bn(*batch_norm)
            )
        }
    }
}

/// One split of any format, as the loop sees it.
type Source = Box<dyn BatchSource>;

/// A dataset's three splits as batch sources, whatever its format.
struct Splits {
    train: Source,
    val: Source,
    test: Source,
    /// The folder the files were read from.
    root: PathBuf,
    chw: [usize; 3],
    classes: Vec<String>,
    /// How images are stored after decoding (for `describe`).
    stored: &'static str,
}

/// The training split (validation held out, augmentation and the bad-sample policy applied), the
/// validation split and the test split of `file`'s data.
fn splits(file: &RunFile) -> anyhow::Result<Splits> {
    let dir = data_dir(file)?;
    let format = file.data.format;
    let (train, val, test, root, chw, classes) = match format {
        DataFormat::FashionMnist | DataFormat::Mnist => {
            let train = MnistDataset::from_dir(&dir, MnistSplit::Train)?;
            let test = MnistDataset::from_dir(&dir, MnistSplit::Test)?;
            let root = train
                .images_path()
                .parent()
                .unwrap_or(Path::new(""))
                .to_path_buf();
            let (a, b, c) = sources::<_, _, kiln_data::Gray>(train, test, file)?;
            (a, b, c, root, format.input_chw(), format.class_names())
        }
        DataFormat::Cifar10 => {
            let train = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Train)?;
            let test = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Test)?;
            let (a, b, c) = sources::<_, _, kiln_data::Bgr>(train, test, file)?;
            let root = std::fs::canonicalize(&dir).unwrap_or(dir);
            (a, b, c, root, format.input_chw(), format.class_names())
        }
        DataFormat::Coco => {
            return Err(Usage(
                "data.format = \"coco\" is detection data: kiln's training loop, eval, doctor and ablations train classifiers. Look at it with `kiln inspect --config FILE` (a sample's boxes and the first padded detection batch); batch it in code as examples/detection.rs does".into(),
            )
            .into());
        }
        DataFormat::ImageFolder => {
            let [h, w] = file.transforms.eval_size().ok_or_else(|| {
                Usage(
                    "data.format = \"image-folder\" needs [transforms] eval stages that end in a fixed size, e.g. eval = [{ op = \"resize-shorter\", size = 36 }, { op = \"center-crop\", height = 32, width = 32 }]".into(),
                )
            })?;
            let train = kiln_data::ImageFolder::new(dir.join("train"))?;
            let test = kiln_data::ImageFolder::new(dir.join("val"))?;
            for w in train.warnings().iter().chain(test.warnings()) {
                eprintln!("warning: {w}");
            }
            if train.classes() != test.classes() {
                return Err(Usage(format!(
                    "{}: train/ has classes {:?} but val/ has {:?}; both need the same class folders",
                    dir.display(),
                    train.classes(),
                    test.classes()
                ))
                .into());
            }
            let classes = train.classes().to_vec();
            let (a, b, c) = sources::<_, _, kiln_data::Bgr>(train, test, file)?;
            let root = std::fs::canonicalize(&dir).unwrap_or(dir);
            (a, b, c, root, [3, h, w], classes)
        }
    };
    Ok(Splits {
        train,
        val,
        test,
        root,
        chw,
        classes,
        stored: if chw[0] == 1 { "grey" } else { "BGR" },
    })
}

fn sources<D, I, C>(train_set: D, test_set: D, file: &RunFile) -> anyhow::Result<(Source, Source, Source)>
where
    D: Dataset<I, kiln_data::DataError> + Clone + Send + Sync + 'static,
    I: kiln_data::LabeledImage<C> + 'static,
    C: kiln_transforms::ModelColor + 'static,
{
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let (train_idx, val_idx) = random_split(train_set.len(), file.data.val_fraction, file.train.seed);
    let eval = file.transforms.eval_compose(file.data.format);
    let with_eval = |src: ClassificationSource<D, I, C>| -> anyhow::Result<ClassificationSource<D, I, C>> {
        Ok(match &eval {
            Some(compose) => src.with_eval_transform(compose.clone())?,
            None => src,
        })
    };
    let mut train = with_eval(
        ClassificationSource::subset(train_set.clone(), train_idx, norm.clone())?
            .on_bad_sample(file.data.on_bad_sample, file.data.max_bad_fraction)?,
    )?;
    if let Some(compose) = file.transforms.augmentation(file.data.format) {
        train = train.with_augmentation(compose, file.train.seed)?;
    }
    let policy = |src: ClassificationSource<D, I, C>| {
        src.on_bad_sample(file.data.on_bad_sample, file.data.max_bad_fraction)
    };
    let val = with_eval(policy(ClassificationSource::subset(
        train_set,
        val_idx,
        norm.clone(),
    )?)?)?;
    let test = with_eval(policy(ClassificationSource::new(test_set, norm))?)?;
    Ok((Box::new(train), Box::new(val), Box::new(test)))
}

/// `println!` for the human-readable lines, or `eprintln!` when stdout is kept for `--json`.
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// Runs `$body` with `$m` bound to the model the run file names (seeded first).
macro_rules! with_model {
    ($file:expr, $splits:expr, $device:expr, |$m:ident| $body:expr) => {{
        $device.seed($file.train.seed);
        match build_model(&$file.model, $splits.chw, $splits.classes.len(), $device)? {
            AnyModel::Cnn($m) => $body,
            AnyModel::Mlp($m) => $body,
            AnyModel::ResNet($m) => $body,
        }
    }};
}

fn doctor(args: &TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<bool> {
    let file = run_file(args, matches)?;
    let (_, device, _) = devices(&file)?;
    let data = splits(&file)?;
    let report = with_model!(file, data, &device, |m| kiln_train::diagnose::doctor(
        m,
        data.train.as_ref(),
        &file.train,
        &device
    )?);
    let json = args.json;
    if json {
        eprint!("{report}");
    } else {
        print!("{report}");
    }
    say!(
        json,
        "{}",
        if report.ok() {
            "doctor: all checks passed"
        } else {
            "doctor: some checks failed (see above)"
        }
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": report.ok(), "report": &report}))?
        );
    }
    Ok(report.ok())
}

fn lr_find(args: &TrainArgs, matches: &clap::ArgMatches, plot: &Path, steps: usize) -> anyhow::Result<()> {
    let file = run_file(args, matches)?;
    let (_, device, _) = devices(&file)?;
    let data = splits(&file)?;
    let sweep = kiln_train::diagnose::LrFindConfig {
        steps,
        ..Default::default()
    };
    let r = with_model!(file, data, &device, |m| kiln_train::diagnose::lr_find(
        m,
        data.train.as_ref(),
        &file.train,
        &device,
        &sweep,
        Some(plot)
    )?);
    let json = args.json;
    match r.suggested {
        Some(lr) => say!(
            json,
            "lr-find: suggested lr {lr:.3e} ({} steps from {:.0e}); curve: {}",
            r.lrs.len(),
            sweep.start_lr,
            plot.display()
        ),
        None => say!(
            json,
            "lr-find: the loss never fell; no suggestion (curve: {})",
            plot.display()
        ),
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"result": &r, "plot": plot}))?
        );
    }
    Ok(())
}

fn overfit_batch(args: &TrainArgs, matches: &clap::ArgMatches, steps: usize) -> anyhow::Result<bool> {
    let file = run_file(args, matches)?;
    let (_, device, _) = devices(&file)?;
    let data = splits(&file)?;
    let r = with_model!(file, data, &device, |m| kiln_train::diagnose::overfit_one_batch(
        m,
        data.train.as_ref(),
        &file.train,
        &device,
        steps,
        0.05
    )?);
    say!(args.json, "overfit-batch: {}", r.message);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(r.passed)
}

fn train(args: &TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let file = match &args.resume {
        Some(dir) => {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--resume {}: cannot read {}", dir.display(), path.display()))?;
            let saved: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("--resume: {} is not a kiln run config", path.display()))?;
            let mut file = saved.config;
            // Where it runs is this machine's choice; results do not depend on the worker count.
            args::apply_run_flags(&mut file, args, matches)?;
            file.run.out = Some(dir.clone());
            file
        }
        None => run_file(args, matches)?,
    };
    // The devices first (once: a GPU is probed when created): a backend that is not compiled
    // in, or cannot run, fails before any data is read.
    let devs = devices(&file)?;
    let data = splits(&file)?;
    match initial_model(&file, &data, &devs.1, args)? {
        AnyModel::Cnn(m) => train_model(m, data, file, devs, args),
        AnyModel::Mlp(m) => train_model(m, data, file, devs, args),
        AnyModel::ResNet(m) => train_model(m, data, file, devs, args),
    }
}

/// Applies `$body` to the model inside an [`AnyModel`], rewrapping the result in the same variant.
macro_rules! map_model {
    ($model:expr, |$m:ident| $body:expr) => {
        match $model {
            AnyModel::Cnn($m) => AnyModel::Cnn($body),
            AnyModel::Mlp($m) => AnyModel::Mlp($body),
            AnyModel::ResNet($m) => AnyModel::ResNet($body),
        }
    };
}

/// The model a run starts from: the run file's, freshly initialised (seeded), or with
/// `run.init_from` those weights. When the weights' spec names another number of classes than the
/// data has, the model is built for the weights' classes, loaded, and its classifier head replaced
/// by a fresh one for the data's (`model.fc = nn.Linear(512, n)`); `[finetune]` then freezes the
/// backbone if asked. A resumed run starts from its checkpoint instead.
fn initial_model(
    file: &RunFile,
    data: &Splits,
    device: &Device,
    args: &TrainArgs,
) -> anyhow::Result<AnyModel> {
    use kiln_models::FineTune;
    device.seed(file.train.seed);
    let classes = data.classes.len();
    let Some(path) = file.run.init_from.as_ref().filter(|_| args.resume.is_none()) else {
        if !file.finetune.is_default() && args.resume.is_none() {
            return Err(Usage(
                "[finetune] settings need weights to start from: set run.init_from (or --init-from WEIGHTS)"
                    .into(),
            )
            .into());
        }
        return build_model(&file.model, data.chw, classes, device);
    };
    let f = file.finetune.backbone_lr_factor;
    if !(f.is_finite() && f > 0.0) {
        return Err(Usage(format!(
            "finetune.backbone_lr_factor = {f}: must be a positive number (0.1 gives the backbone a tenth of the head's learning rate); to train the head alone use finetune.freeze_backbone = true"
        ))
        .into());
    }
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let sidecar = PretrainedSpec::sidecar_path(path);
    let spec = if sidecar.exists() {
        Some(PretrainedSpec::load_next_to(path)?)
    } else {
        if !path.is_file() {
            anyhow::bail!("--init-from {}: no such file", path.display());
        }
        eprintln!(
            "warning: {} has no {} next to it; the normalization and classes it was trained with cannot be checked",
            path.display(),
            sidecar.display()
        );
        None
    };
    if let Some(spec) = &spec {
        spec.check_normalization(&norm, args.allow_normalization_override)
            .with_context(|| format!("--init-from {}", path.display()))?;
    }
    let from_classes = spec.as_ref().map_or(classes, |s| s.num_classes);
    let model = build_model(&file.model, data.chw, from_classes, device)?;
    let context = || format!("--init-from {}", path.display());
    let mut model = map_model!(model, |m| kiln_models::weights::load_weights(m, path)
        .with_context(context)?
        .0);
    if from_classes != classes {
        eprintln!(
            "note: {} was trained for {from_classes} classes, the data has {classes}: the classifier head is replaced by a new one (nn.Linear's default init)",
            path.display()
        );
        model = map_model!(model, |m| m.replace_head(classes, device)?);
    }
    if file.finetune.freeze_backbone {
        model = map_model!(model, |m| m.freeze_backbone());
    }
    Ok(model)
}

fn train_model<M: Classifier + kiln_models::FineTune>(
    model: M,
    data: Splits,
    mut file: RunFile,
    (spec, device, data_parallel): (DeviceSpec, Device, Option<DataParallel>),
    args: &TrainArgs,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let json = args.json;
    let cfg = file.train.clone();
    let format = file.data.format;
    let norm_spec = file.transforms.normalization(format);
    let norm: Normalization = norm_spec.resolve()?;
    let augmentation = file.transforms.augmentation(format);
    let data_root = data.root.clone();
    file.data.path = Some(data_root.clone());
    let (n_train, n_val, n_test) = (data.train.len(), data.val.len(), data.test.len());
    let (train_src, val_src, test_src) = (data.train, data.val, data.test);

    // The schedule against the run's length, before anything is written.
    let steps_per_epoch = n_train / cfg.batch_size / cfg.accumulate;
    cfg.schedule
        .validate(cfg.lr, steps_per_epoch, steps_per_epoch * cfg.epochs)?;
    // The backbone's own learning rate when fine-tuning (the head keeps the scheduled one).
    let lr_groups = if file.finetune.backbone_lr_factor == 1.0 {
        Vec::new()
    } else {
        vec![kiln_train::optim::LrGroup {
            name: "backbone".into(),
            group: M::backbone_group(),
            lr_scale: file.finetune.backbone_lr_factor,
        }]
    };
    let run = match (&args.resume, &file.run.out) {
        (Some(dir), _) => RunDir::open_existing(dir)?,
        (None, Some(p)) => RunDir::create(p)?,
        (None, None) => RunDir::timestamped("runs")?,
    };
    file.run.out = Some(run.path().to_path_buf());
    let run_config = RunConfig {
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        config: file.clone(),
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
            say!(
                json,
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
            // A run file that repeats this run (into another --out).
            let mut again = file.clone();
            again.run.out = None;
            let toml = format!(
                "# Written by kiln {}: `kiln train --config config.toml --out NEW_DIR` repeats this run.\n{}",
                env!("CARGO_PKG_VERSION"),
                again.to_toml()?
            );
            std::fs::write(run.path().join("config.toml"), toml)
                .with_context(|| format!("writing {}", run.path().join("config.toml").display()))?;
            run.metrics_log()?
        }
    };
    let on = if file.run.devices.len() > 1 {
        let list: Vec<String> = file.run.devices.iter().map(ToString::to_string).collect();
        format!("{} (data parallel)", list.join(", "))
    } else {
        spec.to_string()
    };
    let name = model_name(&file.model, data.chw, data.classes.len());
    say!(json, "kiln train: {name} on {on}");
    if let Some(summary) = model.summary(data.chw) {
        say!(
            json,
            "  model: {} parameters with BatchNorm statistics, {:.2} MMACs per image (layers: {})",
            summary.params(),
            summary.macs() as f64 / 1e6,
            run.path().join("model.txt").display()
        );
        std::fs::write(run.path().join("model.txt"), format!("{summary}\n"))
            .with_context(|| format!("writing {}", run.path().join("model.txt").display()))?;
    }
    say!(
        json,
        "  data:  {} ({n_train} train / {n_val} val / {n_test} test)",
        data_root.display()
    );
    say!(
        json,
        "  optim: {} lr={} schedule={} batch={} epochs={} seed={}",
        cfg.optimizer,
        cfg.lr,
        cfg.schedule,
        cfg.batch_size,
        cfg.epochs,
        cfg.seed
    );
    say!(
        json,
        "  norm:  {} mean={:?} std={:?} ({:?} scale)",
        norm.name,
        norm.mean,
        norm.std,
        norm.scale
    );
    if let Some(compose) = &augmentation {
        say!(json, "  augment (training batches only):");
        for line in compose.describe(data.stored) {
            say!(json, "    {line}");
        }
    }
    if let Some(path) = &file.run.init_from {
        let how = match (file.finetune.freeze_backbone, file.finetune.backbone_lr_factor) {
            (true, _) => " (backbone frozen: only the head trains)".to_string(),
            (false, f) if f != 1.0 => format!(" (backbone at {f}× the learning rate)"),
            _ => String::new(),
        };
        say!(json, "  init:  {}{how}", path.display());
    }
    say!(json, "  run:   {}", run.path().display());

    let epochs = cfg.epochs;
    let mut print_epoch = |r: &EpochRecord| {
        let val = match (r.val_loss, r.val_acc) {
            (Some(l), Some(a)) => format!("val_loss={l:.4} val_acc={a:.4}"),
            _ => "no validation split".to_string(),
        };
        say!(
            json,
            "epoch {}/{epochs}  lr={:.4}  train_loss={:.4} train_acc={:.4}  {val}  {:.0} img/s  {:.1}s",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_acc,
            r.train_images_per_s,
            r.seconds
        );
        if let Some(v) = r.verdict.as_deref().filter(|v| !v.starts_with("healthy")) {
            say!(json, "  verdict: {v}");
        }
    };
    let val_opt: Option<&dyn BatchSource> = if n_val > 0 { Some(val_src.as_ref()) } else { None };
    let result = kiln_train::fit(
        model,
        train_src.as_ref(),
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
                keep_last: file.checkpoints.keep_last,
                resume: args.resume.is_some(),
                on_error: file.checkpoints.on_error,
            }),
            lr_groups,
            data_parallel,
        },
    )?;

    let eval_model = result.model.valid();
    let (test, confusion) =
        kiln_train::evaluate_with_confusion(&eval_model, test_src.as_ref(), cfg.batch_size, &device)?;
    let model_path = run
        .save_model(&eval_model, "model")
        .context("saving the trained model")?;
    // What the weights expect, kept next to them (model.bpk.kiln.json).
    let class_names = data.classes.clone();
    let spec = PretrainedSpec {
        model: eval_model.name().into(),
        normalization: norm_spec,
        input_chw: data.chw,
        num_classes: class_names.len(),
        class_names: class_names.clone(),
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
    let mut warnings = result.warnings.clone();
    for (split, skipped) in [
        ("training", result.skipped.clone()),
        ("validation", val_src.skipped()),
        ("test", test_src.skipped()),
    ] {
        if !skipped.is_empty() {
            say!(
                json,
                "skipped {} bad {split} samples (data.on_bad_sample = \"skip\"); listed in the report",
                skipped.len()
            );
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
        say!(
            json,
            "checkpoints of epochs {} could not be written (checkpoints.on_error = \"continue\"); listed in the report",
            epochs.join(", ")
        );
    }
    let monitor = if n_val > 0 { "val_acc" } else { "train_loss" };
    let report = run.write_report(&kiln_train::report::Report {
        title: format!("{name} on {}", data_root.display()),
        config: serde_json::to_value(&run_config)?,
        epochs: &result.epochs,
        verdict: &result.verdict,
        best: result.best.map(|(v, e)| (v, e, monitor)),
        stopped_early: result.stopped_early,
        resumed_after: result.resumed_after,
        test: Some((test, &confusion)),
        class_names: &class_names,
        warnings: &warnings,
        seconds: summary.seconds,
        train_images_per_s: result.train_images_per_s,
    })?;
    if result.stopped_early {
        say!(
            json,
            "early stopping: no improvement for {} epochs",
            cfg.early_stopping.map_or(0, |e| e.patience)
        );
    }
    say!(json, "verdict: {}", result.verdict);
    say!(
        json,
        "saved: {} (best: {})",
        model_path.display(),
        run.checkpoints().join("best.bpk").display()
    );
    say!(json, "report: {}", report.display());
    say!(
        json,
        "summary: epochs={epochs} train_images_per_s={:.1} test_loss={:.4} test_acc={:.4} seconds={:.1}",
        summary.train_images_per_s,
        summary.test_loss,
        summary.test_acc,
        summary.seconds
    );
    if json {
        let files = |name: &str| run.path().join(name);
        let out = serde_json::json!({
            "run": run.path(),
            "summary": &summary,
            "verdict": result.verdict.to_string(),
            "best": result.best.map(|(value, epoch)| serde_json::json!({"epoch": epoch, "value": value, "monitor": monitor})),
            "stopped_early": result.stopped_early,
            "resumed_after": result.resumed_after,
            "epochs": &result.epochs,
            "warnings": &warnings,
            "checkpoint_failures": &result.checkpoint_failures,
            "files": {
                "model": &model_path,
                "spec": PretrainedSpec::sidecar_path(&model_path),
                "best": run.checkpoints().join("best.bpk"),
                "report": &report,
                "metrics": files("metrics.jsonl"),
                "config": files("config.toml"),
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// The run file `kiln inspect` looks at: --config, or the defaults on --data.
fn inspect_file(config: Option<&Path>, data: Option<&Path>) -> anyhow::Result<RunFile> {
    Ok(match (config, data) {
        (Some(c), _) => RunFile::load(c, &[])?,
        (None, data) => {
            let mut f = RunFile::default();
            f.data.path = data.map(Path::to_path_buf);
            f
        }
    })
}

mod ablate;
mod commands;
mod detection;
