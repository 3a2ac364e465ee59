//! The command line's arguments, and how they become a run file.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, Parser, Subcommand};
use kiln_train::config::RunFile;
use kiln_train::{DeviceSpec, Schedule, TrainConfig};
use kiln_transforms::compose::Compose;

use crate::usage::Usage;

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Train image models in Rust, with safe defaults."
)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// `kiln` with no subcommand is `kiln train`.
    #[command(flatten)]
    pub(crate) train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Train a model (the reference CNN on the vendored Fashion-MNIST subset by default; the
    /// default command).
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
    /// Loss, accuracy, per-class accuracy and confusion matrix of trained weights on the test
    /// split of their run's data.
    Eval(EvalArgs),
    /// Class probabilities for an image, a folder of images or a .npy batch, with the
    /// preprocessing stored next to the weights (model.bpk.kiln.json).
    Predict(PredictArgs),
    /// Apply a run file's pipeline to one image and write the CHW float tensor as .npy, to compare
    /// with a Python pipeline (np.load).
    Transform(TransformArgs),
    /// Per-channel mean and std of a dataset's training split, ready to paste into a run file.
    Stats(StatsArgs),
    /// dataset[N] and the first training batch: shape, layout, colour order, value range,
    /// per-channel statistics, label histogram and the normalisation check.
    Inspect(InspectArgs),
    /// Short matched runs that test one of the seed's claims (BatchNorm, init, warmup,
    /// normalization, colour order): a table on stdout, CSV and PNG in --out-dir. Takes the same
    /// run flags or --config as train (--epochs is allowed with --config here: epochs per
    /// variant); only the studied setting differs between the runs.
    Ablate {
        #[command(flatten)]
        args: TrainArgs,
        /// The claim to test.
        #[arg(long, value_parser = clap::value_parser!(kiln_train::ablation::Study))]
        study: kiln_train::ablation::Study,
        /// Where the CSV and PNG go (default runs/ablate-STUDY).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Turn torchvision weights (a state dict, .pth or .safetensors) into a kiln checkpoint
    /// (model.bpk and its spec) that predict, eval, train --init-from and the export use directly.
    Import(ImportArgs),
    /// Write trained weights for other runtimes: ONNX (every model; ONNX Runtime, TensorRT,
    /// OpenVINO, browsers), or torchvision's safetensors layout (the ResNets) for PyTorch.
    Export(ExportArgs),
    /// COCO box detection metrics of a results file (the list pycocotools' `loadRes` takes)
    /// against COCO annotations: the twelve numbers of `COCOeval.summarize()`, computed as it does,
    /// and AP per category.
    Score(ScoreArgs),
    /// Make a detection set with real pixels: MNIST/Fashion-MNIST items pasted at random scales
    /// and places on larger canvases, written as COCO folders OUT/train and OUT/val (items of the
    /// source's training and test splits).
    MakeDetection(MakeDetectionArgs),
    /// The models kiln can build, by the name --model and [model] take.
    Models {
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
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

/// `kiln make-detection`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct MakeDetectionArgs {
    /// A folder of MNIST-layout idx files (Fashion-MNIST, MNIST); default: the vendored
    /// Fashion-MNIST subset.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Where OUT/train and OUT/val go (must be empty or absent).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Training canvases.
    #[arg(long, default_value_t = 2000)]
    pub(crate) train: usize,
    /// Validation canvases.
    #[arg(long, default_value_t = 500)]
    pub(crate) val: usize,
    /// Canvas side in pixels.
    #[arg(long, default_value_t = 128)]
    pub(crate) size: usize,
    /// Fewest items per canvas.
    #[arg(long, default_value_t = 1)]
    pub(crate) min_objects: usize,
    /// Most items per canvas.
    #[arg(long, default_value_t = 4)]
    pub(crate) max_objects: usize,
    /// Smallest scale of a 28-pixel item.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) min_scale: f64,
    /// Largest scale of a 28-pixel item.
    #[arg(long, default_value_t = 2.5)]
    pub(crate) max_scale: f64,
    /// The generator's seed (the validation set uses seed + 1).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// The source is MNIST: categories are named "0" to "9" (default: Fashion-MNIST's names).
    #[arg(long)]
    pub(crate) mnist: bool,
}

/// `kiln score`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct ScoreArgs {
    /// The ground truth: a COCO annotation file (`instances_*.json`).
    #[arg(long, value_name = "GT.json")]
    pub(crate) annotations: PathBuf,
    /// The detections: a JSON list of `{image_id, category_id, bbox: [x, y, w, h], score}`.
    #[arg(long, value_name = "DT.json")]
    pub(crate) detections: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln eval`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct EvalArgs {
    /// A run directory (its model.bpk and config.toml).
    #[arg(long, conflicts_with = "weights")]
    pub(crate) run: Option<PathBuf>,
    /// Weights to evaluate (a kiln .bpk).
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// The run file describing the weights' model and data (default: the config.toml next to
    /// the weights).
    #[arg(long, conflicts_with = "data")]
    pub(crate) config: Option<PathBuf>,
    /// Evaluate on this dataset folder's test split instead (any format `train --data`
    /// takes); the model and preprocessing come from the weights' spec.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Device to evaluate on.
    #[arg(long, default_value = "flex")]
    pub(crate) device: DeviceSpec,
    /// Images per forward pass (default: the run file's train.batch_size, which fitted in
    /// training and so fits here); lower it after an out-of-memory error.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write every non-zero cell of the confusion matrix to this CSV (`true,predicted,count`,
    /// class names): the whole matrix at any number of classes.
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) confusion: Option<PathBuf>,
}

/// `kiln predict`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct PredictArgs {
    /// Trained weights (a kiln .bpk).
    #[arg(long)]
    pub(crate) weights: PathBuf,
    /// An image file, a folder of images, or a .npy of model-ready inputs ([N,] C, H, W).
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// The run file describing the model (default: the config.toml next to the weights).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Classes to show per input.
    #[arg(long, default_value_t = 3)]
    pub(crate) top_k: usize,
    /// Also write the predictions: .json (top-k per input) or .npy (all probabilities, [N, classes]).
    /// Detectors: .json (a COCO results list, `kiln score` reads it), .png (the boxes drawn on the
    /// one input image) or a folder (one drawing per image).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Detectors: keep detections scoring at least this (default: all the model keeps in JSON,
    /// 0.3 in drawings).
    #[arg(long)]
    pub(crate) min_score: Option<f64>,
    /// Device to run on.
    #[arg(long, default_value = "flex")]
    pub(crate) device: DeviceSpec,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln transform`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct TransformArgs {
    /// The run file.
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// The image.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// The .npy to write.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Apply the training augmentation too (as drawn for dataset index 0 in --epoch).
    #[arg(long)]
    pub(crate) train: bool,
    /// The epoch whose random draws --train uses.
    #[arg(long, default_value_t = 0)]
    pub(crate) epoch: u64,
    /// Print one JSON object (input, output, shape, normalization, per-channel mean and std)
    /// instead of the line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln stats`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    /// The dataset folder (any format `train --data` takes; detected from its files).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// The dataset format, to check what is detected (or to read idx files as MNIST).
    #[arg(long, default_value = "auto")]
    pub(crate) format: kiln_train::config::DataFormat,
    /// unit (pixels / 255, what torchvision's ToTensor gives) or byte (0-255).
    #[arg(long, default_value = "unit")]
    pub(crate) scale: kiln_transforms::Scale,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln inspect`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct InspectArgs {
    /// The run file whose data and transforms to inspect (default: the vendored subset).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// A dataset folder instead of a run file.
    #[arg(long, conflicts_with = "config")]
    pub(crate) data: Option<PathBuf>,
    /// The sample to show.
    #[arg(long, default_value_t = 0)]
    pub(crate) index: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the first batch, de-normalised, as a PNG grid.
    #[arg(long, value_name = "PNG")]
    pub(crate) grid: Option<PathBuf>,
}

/// `kiln import`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The architecture (`kiln models` lists them; every one torchvision also has imports its weights).
    #[arg(long, value_name = "NAME")]
    pub(crate) arch: String,
    /// The state dict.
    #[arg(long)]
    pub(crate) weights: PathBuf,
    /// The folder to write model.bpk and model.bpk.kiln.json into (created; must not hold a
    /// model.bpk already).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Classes the weights were trained for (their classifier's outputs; default 1000, and 91
    /// for torchvision's COCO detectors, whose labels are COCO category ids).
    #[arg(long)]
    pub(crate) classes: Option<usize>,
    /// Detectors: the backbone of the weights (resnet18, resnet34, resnet50; default
    /// torchvision's, resnet50).
    #[arg(long, value_name = "NAME")]
    pub(crate) backbone: Option<String>,
    /// The normalization they were trained with (a preset name).
    #[arg(long, default_value = "torch-imagenet")]
    pub(crate) normalization: String,
    /// Their input size as HxW (default: the architecture's, 224x224 for ImageNet stems).
    #[arg(long, value_name = "HxW", value_parser = parse_hw)]
    pub(crate) input_size: Option<[usize; 2]>,
    /// Class names, one per line (default: none; predictions then show class indices).
    #[arg(long, value_name = "FILE")]
    pub(crate) class_names: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln export`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// A run directory (its model.bpk).
    #[arg(long, conflicts_with = "weights")]
    pub(crate) run: Option<PathBuf>,
    /// Weights to export (a kiln .bpk with its model.bpk.kiln.json).
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// onnx, or safetensors (torchvision's layout; ResNets only).
    #[arg(long, value_enum, default_value_t = ExportFormatArg::Onnx)]
    pub(crate) format: ExportFormatArg,
    /// The file to write (replaced atomically when it exists).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// ONNX opset, 13 to 21.
    #[arg(long, default_value_t = kiln_models::onnx::DEFAULT_OPSET)]
    pub(crate) opset: i64,
    /// A symbolic batch dimension: any number of images per run (ONNX).
    #[arg(long, conflicts_with = "batch")]
    pub(crate) dynamic_batch: bool,
    /// The fixed batch size of the graph without --dynamic-batch (ONNX).
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Fold every BatchNorm into the convolution or linear layer before it (ONNX).
    #[arg(long)]
    pub(crate) fold_bn: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `kiln export --format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormatArg {
    /// ONNX.
    Onnx,
    /// torchvision's state-dict layout.
    Safetensors,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    /// A run file (TOML) with every setting; see docs/config.md and examples/configs/. With it,
    /// change settings with --set, not with the training flags below.
    #[arg(long, value_name = "RUN.toml")]
    pub(crate) config: Option<PathBuf>,
    /// Override one setting of the run file (or of the flags): section.key=value, e.g.
    /// --set train.lr=0.1 --set 'transforms.train=[{ op = "horizontal-flip", p = 0.5 }]'.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// The dataset folder; its format is detected from its files: the four idx files (e.g.
    /// /usr/share/datasets/fashion-mnist), CIFAR-10's binary batches, class folders of images
    /// (DIR/<class>/*.jpg, or DIR/train/<class> + DIR/val/<class>) or a COCO instances JSON.
    /// Default: the vendored Fashion-MNIST subset in data/fashion-mnist-mini.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// The dataset format, when detection should be checked or idx files are MNIST:
    /// fashion-mnist, mnist, cifar10, image-folder, coco (default: detected).
    #[arg(long)]
    pub(crate) format: Option<kiln_train::config::DataFormat>,
    /// The model, by name (`kiln models` lists them all): reference-cnn (default), mlp, the
    /// ResNets, MobileNetV3, EfficientNet, ConvNeXt and ViT, with `cifar-` variants for small images;
    /// the detector fcos (on COCO data; its settings with --set model.backbone=resnet18, …).
    #[arg(long, value_name = "NAME")]
    pub(crate) model: Option<String>,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub(crate) epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub(crate) batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub(crate) lr: f64,
    /// Optimizer with PyTorch's defaults: sgd (momentum 0.9, dampening 0, weight decay 5e-4 except
    /// on biases and BatchNorm), adam, adamw, rmsprop; with timm's: rmsprop-tf, lamb, lars (their
    /// other settings: a run file's [train.optimizer]).
    #[arg(long, default_value = "sgd")]
    pub(crate) optimizer: kiln_train::OptimizerConfig,
    /// Learning-rate schedule over the run's steps: cosine (to 0), constant, one-cycle or
    /// polynomial.
    #[arg(long, default_value_t = TrainConfig::default().schedule)]
    pub(crate) schedule: Schedule,
    /// Linear warmup over this many epochs before the schedule (from --warmup-start × lr).
    #[arg(long, conflicts_with = "warmup_steps")]
    pub(crate) warmup_epochs: Option<usize>,
    /// Linear warmup over this many steps before the schedule.
    #[arg(long)]
    pub(crate) warmup_steps: Option<usize>,
    /// The warmup's first learning rate as a fraction of --lr, in (0, 1].
    #[arg(long, default_value_t = 0.1)]
    pub(crate) warmup_start: f64,
    /// Average the gradients of N batches per optimizer step (effective batch N × --batch-size).
    #[arg(long, default_value_t = 1)]
    pub(crate) accumulate: usize,
    /// Clip the global gradient norm to this value before each step.
    #[arg(long)]
    pub(crate) clip_grad_norm: Option<f64>,
    /// Label smoothing α in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) label_smoothing: f64,
    /// Keep a running average of the weights with this decay (timm's ModelEmaV3, e.g. 0.9998),
    /// validated each epoch next to the raw weights and saved as model_ema.bpk; the best epoch is
    /// chosen on it. Other settings: a run file's [train.ema].
    #[arg(long, value_name = "DECAY")]
    pub(crate) ema: Option<f64>,
    /// Mixup of the training batches with this Beta α (timm's Mixup; recipes use 0.8), soft
    /// targets with the label smoothing folded in. Modes and probabilities: [train.mixup].
    #[arg(long, value_name = "ALPHA")]
    pub(crate) mixup: Option<f64>,
    /// CutMix with this Beta α (recipes use 1.0); with --mixup too, each batch is one or the other
    /// (half and half).
    #[arg(long, value_name = "ALPHA")]
    pub(crate) cutmix: Option<f64>,
    /// Stop when validation accuracy (training loss without a validation split) has not improved
    /// for N epochs; the best model is kept either way.
    #[arg(long, value_name = "N")]
    pub(crate) patience: Option<usize>,
    /// Seed of initialisation, batch order and the validation split.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub(crate) seed: u64,
    /// Fraction of the training set held out for validation each epoch.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) val_fraction: f64,
    /// Device: flex (CPU, default), wgpu, cuda, cuda:N, ndarray.
    #[arg(long, default_value = "flex")]
    pub(crate) device: String,
    /// Train on several devices at once, e.g. cuda:0,cuda:1: one model replica each, every batch
    /// split evenly between them, gradients averaged (NCCL all-reduce on CUDA; gathered on the
    /// first device otherwise). The batch size must divide by the number of devices; each GPU is
    /// listed once. See docs/gpu.md.
    #[arg(long, value_delimiter = ',', value_name = "LIST", conflicts_with = "device")]
    pub(crate) devices: Vec<DeviceSpec>,
    /// Directory for the run's outputs (must be empty or absent). Default: runs/run-<UTC time>.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Make stdout one JSON object (train: the summary, every epoch's record and the run's files;
    /// doctor, lr-find, overfit-batch: their report); the human-readable lines go to stderr.
    #[arg(long)]
    pub(crate) json: bool,
    /// Start from these weights (a kiln `.bpk` of the same model, e.g. a previous run's
    /// model.bpk) instead of a fresh initialisation. Its `.kiln.json` spec must name the same
    /// normalization as this run's data.
    #[arg(long, value_name = "WEIGHTS")]
    pub(crate) init_from: Option<PathBuf>,
    /// Also log the run for TensorBoard under DIR/<run folder name>/ (`tensorboard --logdir DIR`):
    /// the training loss per step, every epoch metric, the learning rate and images/s, the first
    /// training batch as an image and the run's config as text (`run.tensorboard`).
    #[arg(long, value_name = "DIR")]
    pub(crate) tensorboard: Option<PathBuf>,
    /// Accept --init-from weights trained with another normalization (on purpose).
    #[arg(long, requires = "init_from")]
    pub(crate) allow_normalization_override: bool,
    /// Continue a stopped run from its latest checkpoint (RUN_DIR/checkpoints): the data, model
    /// and training settings come from RUN_DIR/config.json; its metrics and report are updated.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "init_from"])]
    pub(crate) resume: Option<PathBuf>,
    /// Epoch checkpoints to keep (the best model is kept as checkpoints/best.bpk either way).
    #[arg(long, default_value_t = 2)]
    pub(crate) keep_checkpoints: usize,
    /// A checkpoint that cannot be written (disk full, permissions): `stop` the run, naming the
    /// last good checkpoint to resume from, or `continue` training without it. Reported at once
    /// either way; earlier checkpoints stay intact.
    #[arg(long, value_name = "POLICY", default_value = "stop", value_parser = ["stop", "continue"])]
    pub(crate) on_checkpoint_error: String,
    /// Training augmentation, a comma list: `crop=P` (random 28×28 crop of the image padded by P
    /// pixels, torchvision's RandomCrop(28, padding=P)), `flip` or `flip=p` (horizontal flip,
    /// p = 0.5 by default), `erase=p` (torchvision's RandomErasing after normalization); `none`
    /// (the default) turns it off. Validation and test images are never augmented.
    #[arg(long, default_value = "none", value_name = "LIST")]
    pub(crate) augment: String,
    /// Threads that build training batches ahead of the model (0: on the training thread).
    /// Results do not depend on it.
    #[arg(long, default_value_t = TrainConfig::default().num_workers)]
    pub(crate) workers: usize,
}

/// Flags that set what the run file sets: with --config they would be ambiguous.
const TRAINING_FLAGS: [&str; 23] = [
    "data",
    "format",
    "model",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "warmup_epochs",
    "warmup_steps",
    "warmup_start",
    "accumulate",
    "clip_grad_norm",
    "label_smoothing",
    "ema",
    "mixup",
    "cutmix",
    "patience",
    "seed",
    "val_fraction",
    "keep_checkpoints",
    "on_checkpoint_error",
    "augment",
];

/// Whether flag `id` was given on the command line (not a default).
pub(crate) fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    matches.try_get_raw(id).ok().flatten().is_some()
        && matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// The flags among `ids` given on the command line, except those in `allowed`, as `--flag-name`
/// (an error saying why they cannot be given when there are any).
fn refuse_given(matches: &clap::ArgMatches, ids: &[&str], allowed: &[&str], why: &str) -> Result<(), Usage> {
    let given: Vec<String> = ids
        .iter()
        .filter(|id| !allowed.contains(id) && given(matches, id))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Usage(format!(
        "{} cannot be combined with {why}",
        given.join(", ")
    )))
}

/// With --config, a training flag is an error that says which --set to use instead.
pub(crate) fn refuse_flags_with_config(matches: &clap::ArgMatches, allowed: &[&str]) -> Result<(), Usage> {
    refuse_given(
        matches,
        &TRAINING_FLAGS,
        allowed,
        "--config: set it in the run file or with --set (e.g. --set train.lr=0.1, --set data.path=DIR)",
    )
}

/// With --resume, the run's own config.json decides; a flag that would change it is refused
/// (never dropped), except `--epochs`, which extends the run.
pub(crate) fn refuse_flags_with_resume(matches: &clap::ArgMatches) -> Result<(), Usage> {
    let ids: Vec<&str> = TRAINING_FLAGS.iter().copied().chain(["config", "set"]).collect();
    refuse_given(
        matches,
        &ids,
        &["epochs"],
        "--resume: a resumed run keeps the settings in its config.json (only --epochs, to train further, and where it runs and logs: --device, --devices, --workers, --tensorboard); start a new run with --out to change them",
    )
}

/// The run file the flags describe (no --config).
pub(crate) fn file_from_flags(args: &TrainArgs) -> anyhow::Result<RunFile> {
    let mut file = RunFile::default();
    file.data.path = args.data.clone();
    if let Some(format) = args.format {
        file.data.format = format;
    }
    if let Some(name) = &args.model {
        file.model = kiln_models::AnyModel::from_name(name).map_err(|e| Usage(format!("--model: {e}")))?;
    }
    file.data.val_fraction = args.val_fraction;
    file.train = train_config(args);
    let compose = Compose::from_shorthand(&args.augment).map_err(|e| Usage(format!("--augment {e}")))?;
    if let Some(compose) = compose {
        file.transforms.train = compose.stages;
        file.transforms.erasing = compose.erasing;
    }
    file.checkpoints.keep_last = args.keep_checkpoints;
    file.checkpoints.on_error = match args.on_checkpoint_error.as_str() {
        "continue" => kiln_train::OnCheckpointError::Continue,
        _ => kiln_train::OnCheckpointError::Stop,
    };
    Ok(file)
}

/// --device, --devices, --out, --init-from and --workers override the run file when given (they
/// say where this run happens, not what it computes).
pub(crate) fn apply_run_flags(
    file: &mut RunFile,
    args: &TrainArgs,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    if given(matches, "device") {
        file.run.device = args.device.parse::<DeviceSpec>()?;
        file.run.devices.clear();
    }
    if given(matches, "devices") {
        file.run.devices = args.devices.clone();
    }
    if let Some(out) = &args.out {
        file.run.out = Some(out.clone());
    }
    if let Some(w) = &args.init_from {
        file.run.init_from = Some(w.clone());
    }
    if let Some(tb) = &args.tensorboard {
        file.run.tensorboard = Some(tb.clone());
    }
    if given(matches, "workers") {
        file.train.num_workers = args.workers;
    }
    if let Some(first) = file.run.devices.first() {
        file.run.device = *first;
    }
    Ok(())
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
        ema: args.ema.map(|decay| kiln_train::EmaConfig {
            decay,
            ..kiln_train::EmaConfig::default()
        }),
        mixup: (args.mixup.is_some() || args.cutmix.is_some()).then(|| kiln_train::mixup::MixupConfig {
            mixup_alpha: args.mixup.unwrap_or(0.0),
            cutmix_alpha: args.cutmix.unwrap_or(0.0),
            ..kiln_train::mixup::MixupConfig::default()
        }),
        ..TrainConfig::default()
    }
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

fn parse_hw(s: &str) -> Result<[usize; 2], String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match s.split_once(['x', 'X']).map(|(h, w)| (parse(h), parse(w))) {
        Some((Some(h), Some(w))) => Ok([h, w]),
        _ => Err(format!("{s}: give HxW, e.g. 224x224")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `kiln --help` and every subcommand's help are complete: clap's own consistency checks
    /// pass, and every flag and positional argument of every command has a help text.
    #[test]
    fn every_command_and_argument_has_help() {
        let cli = super::Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        let mut commands = vec![cli.clone()];
        commands.extend(cli.get_subcommands().cloned());
        for cmd in &commands {
            if cmd.get_name() != "kiln" && cmd.get_about().is_none() {
                missing.push(format!("command `{}`", cmd.get_name()));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version") && arg.get_help().is_none() {
                    missing.push(format!("`{} --{id}`", cmd.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "without help: {missing:?}");
        assert!(commands.len() >= 11, "{} commands", commands.len());
    }
}
