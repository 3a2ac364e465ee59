//! The commands around training: `eval`, `predict`, `transform`, `stats`, `inspect`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::{Gray, Hwc, Image, LabeledImage, MnistDataset, MnistSplit, npy};
use kiln_models::{Classifier, PretrainedSpec};
use kiln_train::config::{DataFormat, RunFile};
use kiln_train::{ConfusionMatrix, DeviceSpec, EvalMetrics};
use kiln_transforms::compose::Compose;
use kiln_transforms::{Normalization, Scale, resize_normalize};
use serde::Serialize;

use crate::args::Usage;
use crate::{AnyModel, build_model, data_dir};

/// The run file that describes `weights`: `--config`, else the `config.toml` of the run
/// directory the weights were saved in.
fn run_file_for(weights: &Path, config: Option<&Path>) -> anyhow::Result<RunFile> {
    let path = match config {
        Some(c) => c.to_path_buf(),
        None => {
            let beside = weights.parent().unwrap_or(Path::new(".")).join("config.toml");
            if !beside.is_file() {
                return Err(Usage(format!(
                    "{} has no config.toml next to it to say which model it is; pass --config RUN.toml",
                    weights.display()
                ))
                .into());
            }
            beside
        }
    };
    Ok(RunFile::load(&path, &[])?)
}

/// The model of `file` with the weights of `weights`, in evaluation mode.
fn load_model(
    file: &RunFile,
    weights: &Path,
    chw: [usize; 3],
    classes: usize,
    device: &Device,
) -> anyhow::Result<AnyModel> {
    let built = build_model(&file.model, chw, classes, device)?;
    Ok(match built {
        AnyModel::Cnn(m) => AnyModel::Cnn(kiln_models::weights::load_weights(m, weights)?.0.valid()),
        AnyModel::Mlp(m) => AnyModel::Mlp(kiln_models::weights::load_weights(m, weights)?.0.valid()),
        AnyModel::ResNet(m) => AnyModel::ResNet(kiln_models::weights::load_weights(m, weights)?.0.valid()),
    })
}

/// Runs `$body` with `$m` bound to the loaded model, whatever its type.
macro_rules! dispatch {
    ($model:expr, |$m:ident| $body:expr) => {
        match $model {
            AnyModel::Cnn($m) => $body,
            AnyModel::Mlp($m) => $body,
            AnyModel::ResNet($m) => $body,
        }
    };
}

#[derive(Serialize)]
struct EvalReport {
    weights: PathBuf,
    data: PathBuf,
    split: &'static str,
    #[serde(flatten)]
    metrics: EvalMetrics,
    per_class: Vec<ClassAccuracy>,
    confusion: Vec<Vec<u64>>,
}

#[derive(Serialize)]
struct ClassAccuracy {
    class: String,
    accuracy: Option<f64>,
}

/// `kiln eval`: loss, accuracy, per-class accuracy and confusion matrix on the test split.
pub(crate) fn eval(
    run: Option<&Path>,
    weights: Option<&Path>,
    config: Option<&Path>,
    device: DeviceSpec,
    batch_size: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let weights = match (run, weights) {
        (Some(dir), None) => dir.join("model.bpk"),
        (None, Some(w)) => w.to_path_buf(),
        _ => {
            return Err(Usage(
                "give --run DIR, or --weights W (with --config C when W is not in a run directory)".into(),
            )
            .into());
        }
    };
    let config = config
        .map(Path::to_path_buf)
        .or_else(|| run.map(|d| d.join("config.toml")));
    let file = run_file_for(&weights, config.as_deref())?;
    let device = device.device()?;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    check_spec(&weights, &norm)?;
    let data = crate::splits(&file)?;
    let dir = data.root.clone();
    let model = load_model(&file, &weights, data.chw, data.classes.len(), &device)?;
    let (metrics, confusion) = dispatch!(model, |m| kiln_train::evaluate_with_confusion(
        &m,
        data.test.as_ref(),
        batch_size.unwrap_or(file.train.batch_size),
        &device
    )?);
    let names = data.classes.clone();
    let report = EvalReport {
        weights: weights.clone(),
        data: dir,
        split: "test",
        metrics,
        per_class: names
            .iter()
            .zip(confusion.per_class_accuracy())
            .map(|(c, a)| ClassAccuracy {
                class: c.clone(),
                accuracy: a,
            })
            .collect(),
        confusion: confusion_rows(&confusion, names.len()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "kiln eval: {} on {} ({} split, {} images)",
        weights.display(),
        report.data.display(),
        report.split,
        metrics.samples
    );
    println!(
        "loss={:.4} accuracy={:.4} top5={:.4}",
        metrics.loss, metrics.accuracy, metrics.top5
    );
    println!("per-class accuracy:");
    for c in &report.per_class {
        match c.accuracy {
            Some(a) => println!("  {:<12} {a:.4}", c.class),
            None => println!("  {:<12} (no samples)", c.class),
        }
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    print!("{}", confusion.to_markdown(&names));
    Ok(())
}

fn confusion_rows(c: &ConfusionMatrix, n: usize) -> Vec<Vec<u64>> {
    (0..n).map(|t| (0..n).map(|p| c.get(t, p)).collect()).collect()
}

/// The spec saved next to the weights must name this normalization.
fn check_spec(weights: &Path, norm: &Normalization) -> anyhow::Result<Option<PretrainedSpec>> {
    if !PretrainedSpec::sidecar_path(weights).is_file() {
        eprintln!(
            "warning: {} has no {}; its normalization cannot be checked",
            weights.display(),
            PretrainedSpec::sidecar_path(weights).display()
        );
        return Ok(None);
    }
    let spec = PretrainedSpec::load_next_to(weights)?;
    spec.check_normalization(norm, false)
        .with_context(|| format!("{}", weights.display()))?;
    Ok(Some(spec))
}

#[derive(Serialize)]
struct Prediction {
    input: String,
    top_k: Vec<Class>,
}

#[derive(Serialize)]
struct Class {
    index: usize,
    class: String,
    probability: f32,
}

/// `kiln predict`: class probabilities for images, a folder of images or a `.npy` batch.
pub(crate) fn predict(
    weights: &Path,
    config: Option<&Path>,
    input: &Path,
    top_k: usize,
    out: Option<&Path>,
    device: DeviceSpec,
    json: bool,
) -> anyhow::Result<()> {
    let file = run_file_for(weights, config)?;
    let device = device.device()?;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    // The preprocessing comes with the weights: the spec's normalization, input size, classes.
    let spec = check_spec(weights, &norm)?;
    let [c, h, w] = spec
        .as_ref()
        .map_or_else(|| file.data.format.input_chw(), |s| s.input_chw);
    let names = spec
        .as_ref()
        .map_or_else(|| file.data.format.class_names(), |s| s.class_names.clone());
    let eval = file.transforms.eval_compose(file.data.format);
    let (labels, data, n) = model_inputs(input, &norm, eval.as_ref(), [c, h, w])?;
    if h == 0 || names.is_empty() {
        return Err(Usage(format!(
            "{}: no {} next to the weights to give the input size and classes",
            weights.display(),
            PretrainedSpec::sidecar_path(weights).display()
        ))
        .into());
    }
    let model = load_model(&file, weights, [c, h, w], names.len(), &device)?;
    let images = Tensor::<4>::from_data(TensorData::new(data, [n, c, h, w]), &device);
    let probs = dispatch!(model, |m| burn::tensor::activation::softmax(m.logits(images), 1));
    let classes = probs.dims()[1];
    let probs: Vec<f32> = probs.into_data().try_into_vec_as::<f32>()?;
    let k = top_k.clamp(1, classes);
    let predictions: Vec<Prediction> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let row = &probs[i * classes..(i + 1) * classes];
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            Prediction {
                input: label.clone(),
                top_k: order[..k]
                    .iter()
                    .map(|&j| Class {
                        index: j,
                        class: names.get(j).cloned().unwrap_or_else(|| j.to_string()),
                        probability: row[j],
                    })
                    .collect(),
            }
        })
        .collect();
    if let Some(out) = out {
        match out.extension().and_then(|e| e.to_str()) {
            Some("npy") => npy::write_f32(out, &[n, classes], &probs)?,
            Some("json") => std::fs::write(out, serde_json::to_string_pretty(&predictions)?)
                .with_context(|| format!("writing {}", out.display()))?,
            _ => return Err(Usage(format!("--out {}: use a .json or .npy file", out.display())).into()),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
    } else {
        for p in &predictions {
            let tops: Vec<String> = p
                .top_k
                .iter()
                .map(|c| format!("{} {:.3}", c.class, c.probability))
                .collect();
            println!("{}: {}", p.input, tops.join(", "));
        }
    }
    Ok(())
}

/// Model-ready inputs and their names: images go through the run file's evaluation stages, or are
/// resized to the input size, and normalised; a `.npy` file is taken as model-ready already
/// (`[N, C, H, W]` or `[C, H, W]`, as `kiln transform` writes it).
fn model_inputs(
    input: &Path,
    norm: &Normalization,
    eval: Option<&Compose>,
    chw: [usize; 3],
) -> anyhow::Result<(Vec<String>, Vec<f32>, usize)> {
    if input.extension().is_some_and(|e| e == "npy") {
        let a = npy::read(input)?;
        let n = match a.shape.as_slice() {
            [c, h, w] if [*c, *h, *w] == chw => 1,
            [n, c, h, w] if [*c, *h, *w] == chw => *n,
            other => {
                return Err(Usage(format!(
                    "{}: shape {other:?} does not fit the model's input [N, {}, {}, {}]",
                    input.display(),
                    chw[0],
                    chw[1],
                    chw[2]
                ))
                .into());
            }
        };
        let names = (0..n).map(|i| format!("{}[{i}]", input.display())).collect();
        return Ok((names, a.data, n));
    }
    let files: Vec<PathBuf> = if input.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![input.to_path_buf()]
    };
    if files.is_empty() {
        anyhow::bail!("{}: no files to predict", input.display());
    }
    let mut data = Vec::with_capacity(files.len() * chw.iter().product::<usize>());
    for f in &files {
        let x = preprocess(f, norm, eval, chw)?;
        if x.len() != chw.iter().product::<usize>() {
            anyhow::bail!(
                "{}: the evaluation stages give {} values, the model takes {chw:?}",
                f.display(),
                x.len()
            );
        }
        data.extend_from_slice(&x);
    }
    Ok((
        files.iter().map(|p| p.display().to_string()).collect(),
        data,
        files.len(),
    ))
}

/// One image file as the model's input: decoded as grey (1 channel) or colour (3, converted from
/// the decoder's BGR to RGB), through the evaluation stages when there are any (else resized,
/// bilinear, to the input size), normalised.
fn preprocess(
    path: &Path,
    norm: &Normalization,
    eval: Option<&Compose>,
    [c, h, w]: [usize; 3],
) -> anyhow::Result<Vec<f32>> {
    let mut rng = kiln_data::SampleRng::new(0);
    Ok(match (c, eval) {
        (1, Some(e)) => e
            .apply::<Gray>(&kiln_data::decode::imread_gray(path)?, &mut rng)?
            .into_vec(),
        (3, Some(e)) => e
            .apply::<kiln_data::Bgr>(&kiln_data::decode::imread(path)?, &mut rng)?
            .into_vec(),
        (1, None) => resize_normalize(&kiln_data::decode::imread_gray(path)?, h, w, norm)?.into_vec(),
        (3, None) => resize_normalize(&kiln_data::decode::imread(path)?, h, w, norm)?.into_vec(),
        _ => anyhow::bail!(
            "{}: a model with {c} input channels takes no image files; pass a .npy",
            path.display()
        ),
    })
}

/// `kiln transform`: the configured pipeline applied to one image, written as a CHW `.npy`.
pub(crate) fn transform(
    config: &Path,
    input: &Path,
    out: &Path,
    train: bool,
    epoch: u64,
    json: bool,
) -> anyhow::Result<()> {
    let file = RunFile::load(config, &[])?;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    // The generator a training sample with dataset index 0 gets in `epoch`.
    let mut rng = kiln_data::SampleRng::new(kiln_data::loader::sample_seed(file.train.seed, epoch, 0));
    // --train: the augmentation; otherwise the evaluation stages (when the run file has any).
    let compose = if train {
        file.transforms.augmentation(file.data.format)
    } else {
        file.transforms.eval_compose(file.data.format)
    };
    let (shape, data) = if file.data.format.input_chw()[0] == 1 {
        let img: Image<Hwc, Gray> = kiln_data::decode::imread_gray(input)?;
        let out = match &compose {
            Some(c) => c.apply::<Gray>(&img, &mut rng)?,
            None => resize_normalize(&img, img.height(), img.width(), &norm)?,
        };
        ([1, out.height(), out.width()], out.into_vec())
    } else {
        let img: Image<Hwc, kiln_data::Bgr> = kiln_data::decode::imread(input)?;
        let out = match &compose {
            Some(c) => c.apply::<kiln_data::Bgr>(&img, &mut rng)?,
            None => resize_normalize(&img, img.height(), img.width(), &norm)?,
        };
        ([3, out.height(), out.width()], out.into_vec())
    };
    npy::write_f32(out, &shape, &data)?;
    if json {
        let plane = shape[1] * shape[2];
        let stats: Vec<(f64, f64)> = data
            .chunks(plane.max(1))
            .map(|c| {
                let n = c.len().max(1) as f64;
                let mean = c.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = c.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
                (mean, var.sqrt())
            })
            .collect();
        let v = serde_json::json!({
            "input": input,
            "out": out,
            "shape_chw": shape,
            "dtype": "f32",
            "normalization": norm.name,
            "training_augmentation": train,
            "channel_mean": stats.iter().map(|s| s.0).collect::<Vec<_>>(),
            "channel_std": stats.iter().map(|s| s.1).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "kiln transform: {} -> {} (CHW f32 {:?}, normalised `{}`{})",
        input.display(),
        out.display(),
        shape,
        norm.name,
        if train { ", training augmentation" } else { "" }
    );
    Ok(())
}

#[derive(Serialize)]
struct StatsReport {
    data: PathBuf,
    split: &'static str,
    images: u64,
    scale: Scale,
    mean: Vec<f64>,
    std: Vec<f64>,
}

/// `kiln stats`: per-channel mean and std of the training split, ready to paste into a config.
pub(crate) fn stats(data: &Path, format: DataFormat, scale: Scale, json: bool) -> anyhow::Result<()> {
    let progress = |done: usize, total: usize| {
        if !json && (done == total || done % 10_000 < 256) {
            eprint!("\rstats: {done}/{total} images");
        }
    };
    let (n, s, order) = match format {
        DataFormat::FashionMnist | DataFormat::Mnist => {
            let train = MnistDataset::from_dir(data, MnistSplit::Train)?;
            let n = train.len();
            (
                n,
                kiln_transforms::stats::dataset_stats(train, 2, progress)?,
                "gray",
            )
        }
        DataFormat::Cifar10 => {
            let train = kiln_data::CifarDataset::cifar10(data, kiln_data::CifarSplit::Train)?;
            let n = train.len();
            // Statistics in the model's order: RGB.
            (
                n,
                kiln_transforms::stats::dataset_stats(train, 2, progress)?,
                "rgb",
            )
        }
        DataFormat::ImageFolder => {
            // Images of any size: accumulated one by one, over data/train.
            let train = kiln_data::ImageFolder::new(data.join("train"))?;
            for w in train.warnings() {
                eprintln!("warning: {w}");
            }
            let n = train.len();
            let mut s = kiln_transforms::stats::ChannelStats::new(3);
            for i in 0..n {
                let (img, _) = train.get(i)?.into_parts();
                s.add_hwc::<kiln_data::Bgr>(img.as_bytes());
                progress(i + 1, n);
            }
            (n, s, "rgb")
        }
        DataFormat::Coco => {
            return Err(Usage(
                "kiln stats reads fashion-mnist, mnist, cifar10 and image-folder data; for COCO images, point it at an ImageFolder of them or use `kiln inspect`".into(),
            )
            .into());
        }
    };
    if !json {
        eprintln!();
    }
    let (mean, std) = s.mean_std(scale)?;
    let report = StatsReport {
        data: data.to_path_buf(),
        split: "train",
        images: n as u64,
        scale,
        mean,
        std,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "kiln stats: {} ({} training images, {:?} scale)",
        data.display(),
        n,
        scale
    );
    println!("mean = {:?}", report.mean);
    println!("std  = {:?}", report.std);
    println!("# for a run file's [transforms]:");
    println!(
        "normalization = {{ preset = \"custom\", mean = {:?}, std = {:?}, scale = \"{}\", order = \"{order}\" }}",
        report.mean.iter().map(|v| *v as f32).collect::<Vec<_>>(),
        report.std.iter().map(|v| *v as f32).collect::<Vec<_>>(),
        if scale == Scale::Unit { "unit" } else { "byte" }
    );
    Ok(())
}

#[derive(Serialize)]
struct SampleReport {
    index: usize,
    file: PathBuf,
    label: u32,
    class: String,
    raw_shape_hwc: [usize; 3],
    layout: &'static str,
    colour_order: &'static str,
    dtype: &'static str,
    min: u8,
    max: u8,
    channel_means: Vec<f64>,
}

#[derive(Serialize)]
struct BatchReport {
    shape: [usize; 4],
    dtype: &'static str,
    colour_order: String,
    channel_mean: Vec<f64>,
    channel_std: Vec<f64>,
    label_histogram: Vec<usize>,
    check: Vec<String>,
}

#[derive(Serialize)]
struct InspectReport {
    sample: SampleReport,
    first_batch: BatchReport,
}

/// `kiln inspect`: `dataset[N]` and the first training batch, as the seed inspected them by hand.
pub(crate) fn inspect(file: &RunFile, index: usize, json: bool, grid: Option<&Path>) -> anyhow::Result<()> {
    let dir = data_dir(file)?;
    let names = file.data.format.class_names();
    // `dataset[index]` of the training files, as decoded: grey idx, or BGR as `cv2.imread` gives.
    let (len, item) = match file.data.format {
        DataFormat::FashionMnist | DataFormat::Mnist => {
            let set = MnistDataset::from_dir(&dir, MnistSplit::Train)?;
            let file = set.images_path().to_path_buf();
            let parts = |i: kiln_data::MnistItem| (i.image, i.label, None);
            (set.len(), raw_sample(&set, index, parts, file, "grey")?)
        }
        DataFormat::Cifar10 => {
            let set = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Train)?;
            let parts = |i: kiln_data::CifarItem| (i.image, i.label, None);
            let files = dir.clone();
            (set.len(), raw_sample(&set, index, parts, files, "BGR")?)
        }
        DataFormat::Coco => return crate::detection::inspect(file, &dir, index, json, grid),
        DataFormat::ImageFolder => {
            let set = kiln_data::ImageFolder::new(dir.join("train"))?;
            for w in set.warnings() {
                eprintln!("warning: {w}");
            }
            let parts = |i: kiln_data::ImageFolderItem| (i.image, i.label, Some(i.path));
            let root = dir.join("train");
            (set.len(), raw_sample(&set, index, parts, root, "BGR")?)
        }
    };
    let Some((sample_file, label, [h, w, c], order, px)) = item else {
        return Err(Usage(format!(
            "--index {index}: the training split has {len} images (0..{len})"
        ))
        .into());
    };
    // The splits as training sees them (validation held out, transforms applied).
    let splits = crate::splits(file)?;
    let class_names = if names.is_empty() {
        splits.classes.clone()
    } else {
        names
    };
    let channel_means = (0..c)
        .map(|ch| px.iter().skip(ch).step_by(c).map(|&v| f64::from(v)).sum::<f64>() / (h * w).max(1) as f64)
        .collect();
    let sample = SampleReport {
        index,
        file: sample_file,
        label,
        class: class_names.get(label as usize).cloned().unwrap_or_default(),
        raw_shape_hwc: [h, w, c],
        layout: "HWC",
        colour_order: order,
        dtype: "u8",
        min: px.iter().copied().min().unwrap_or(0),
        max: px.iter().copied().max().unwrap_or(0),
        channel_means,
    };
    let names = class_names;
    let src = splits.train;
    // The first batch training draws: epoch 0's shuffled order, augmentation included.
    let len = src.len();
    let order = kiln_data::BatchOrder::new(
        len,
        file.train.batch_size.min(len).max(1),
        Some(file.train.seed),
        true,
    )?;
    let positions = order.epoch(0).into_iter().next().unwrap_or_default();
    let batch = src.epoch_batch(&positions, 0)?;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let check = kiln_transforms::check::check_batch(&batch.data, batch.shape, &norm);
    let mut histogram = vec![0usize; names.len()];
    for &l in &batch.labels {
        if let Some(h) = histogram.get_mut(l as usize) {
            *h += 1;
        }
    }
    let first_batch = BatchReport {
        shape: batch.shape,
        dtype: "f32",
        colour_order: format!("{:?}", batch.order),
        channel_mean: check.mean.clone(),
        channel_std: check.std.clone(),
        label_histogram: histogram,
        check: if check.warnings.is_empty() {
            vec!["ok: per-channel mean ≈ 0 and std ≈ 1".into()]
        } else {
            check.warnings.iter().map(ToString::to_string).collect()
        },
    };
    if let Some(path) = grid {
        write_grid(path, &batch.data, batch.shape, &norm)?;
    }
    let report = InspectReport { sample, first_batch };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let s = &report.sample;
    println!("dataset[{}] ({})", s.index, s.file.display());
    println!("  label {} ({})", s.label, s.class);
    println!(
        "  raw: {:?} {} {} {}, values {}..{}, channel means {:?}",
        s.raw_shape_hwc, s.layout, s.colour_order, s.dtype, s.min, s.max, s.channel_means
    );
    let b = &report.first_batch;
    println!("first training batch (after the transforms):");
    println!(
        "  shape {:?} (N, C, H, W) {} {}",
        b.shape, b.dtype, b.colour_order
    );
    println!("  per-channel mean {:?}, std {:?}", b.channel_mean, b.channel_std);
    println!("  labels per class {:?}", b.label_histogram);
    for c in &b.check {
        println!("  check: {c}");
    }
    if let Some(path) = grid {
        println!("  grid: {} (de-normalised)", path.display());
    }
    Ok(())
}

/// One decoded training sample for `inspect`: (file, label, HWC shape, colour order, pixels).
type RawSample = (PathBuf, u32, [usize; 3], &'static str, Vec<u8>);

/// `set[index]` as stored, or `None` past the end. `parts` splits an item into its image, label
/// and file (when the item knows it; `files` otherwise names where it came from).
fn raw_sample<I, C: kiln_data::ColorOrder>(
    set: &impl burn::data::dataset::Dataset<I, kiln_data::DataError>,
    index: usize,
    parts: impl FnOnce(I) -> (kiln_data::Image<kiln_data::Hwc, C>, u32, Option<PathBuf>),
    files: PathBuf,
    order: &'static str,
) -> anyhow::Result<Option<RawSample>> {
    if index >= set.len() {
        return Ok(None);
    }
    let (img, label, path) = parts(set.get(index)?);
    let shape = [img.height(), img.width(), C::CHANNELS];
    Ok(Some((
        path.unwrap_or(files),
        label,
        shape,
        order,
        img.as_slice().to_vec(),
    )))
}

/// The batch as a PNG grid, de-normalised back to 0–255 (grey, or RGB whatever the model's order;
/// 8 images per row).
fn write_grid(
    path: &Path,
    data: &[f32],
    [n, c, h, w]: [usize; 4],
    norm: &Normalization,
) -> anyhow::Result<()> {
    let cols = n.clamp(1, 8);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (w + 2), rows * (h + 2));
    // Grey stays one channel; colour is written as RGB: a model fed BGR (the Caffe preset) has
    // its channels read back in reverse, so a colour swap upstream shows as blue skin.
    let out_c = if c == 1 { 1 } else { 3 };
    let mut canvas = vec![0u8; gw * gh * out_c];
    let unscale = if norm.scale == Scale::Unit { 255.0 } else { 1.0 };
    let bgr = norm.order == kiln_transforms::ChannelOrder::Bgr;
    for i in 0..n {
        let (ox, oy) = ((i % cols) * (w + 2) + 1, (i / cols) * (h + 2) + 1);
        for y in 0..h {
            for x in 0..w {
                for oc in 0..out_c {
                    let ch = if bgr { out_c - 1 - oc } else { oc };
                    let v = data[((i * c + ch) * h + y) * w + x];
                    let raw = (v * norm.std[ch] + norm.mean[ch]) * unscale;
                    canvas[((oy + y) * gw + ox + x) * out_c + oc] = raw.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let saved = if out_c == 1 {
        image::GrayImage::from_raw(gw as u32, gh as u32, canvas)
            .context("grid buffer")?
            .save(path)
    } else {
        image::RgbImage::from_raw(gw as u32, gh as u32, canvas)
            .context("grid buffer")?
            .save(path)
    };
    saved.with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
