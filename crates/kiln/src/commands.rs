//! The commands around training: `eval`, `predict`, `transform`, `stats`, `inspect`, `import`,
//! `models`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::prelude::*;
use kiln_data::npy;
use kiln_models::{ModelConfig, PretrainedSpec};
use kiln_train::config::{DataFormat, RunFile};
use kiln_train::data::Splits;
use kiln_train::infer::Trained;
use kiln_train::{DeviceSpec, EvalMetrics};
use kiln_transforms::compose::Compose;
use kiln_transforms::{Normalization, NormalizationSpec, Scale};
use serde::Serialize;

use crate::usage::Usage;

/// The run file that describes `weights`, when there is one: `--config`, else the `config.toml`
/// of the run directory the weights were saved in.
fn run_file_for(weights: &Path, config: Option<&Path>) -> anyhow::Result<Option<RunFile>> {
    let path = match config {
        Some(c) => c.to_path_buf(),
        None => {
            let beside = weights.parent().unwrap_or(Path::new(".")).join("config.toml");
            if !beside.is_file() {
                return Ok(None);
            }
            beside
        }
    };
    Ok(Some(RunFile::load(&path, &[])?))
}

/// The weights with their spec: the architecture recorded in it, or the run file's.
fn trained(weights: &Path, file: Option<&RunFile>) -> anyhow::Result<Trained> {
    Ok(Trained::open(weights, file.map(|f| &f.model))?)
}

/// `file`'s normalization must be the one the weights were trained with.
fn check_normalization(t: &Trained, file: &RunFile) -> anyhow::Result<Normalization> {
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    t.spec
        .check_normalization(&norm, false)
        .with_context(|| format!("{}", t.path.display()))?;
    Ok(norm)
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

/// `kiln eval`'s arguments.
pub(crate) struct EvalArgs<'a> {
    pub(crate) run: Option<&'a Path>,
    pub(crate) weights: Option<&'a Path>,
    pub(crate) config: Option<&'a Path>,
    pub(crate) data: Option<&'a Path>,
    pub(crate) device: DeviceSpec,
    pub(crate) batch_size: Option<usize>,
    pub(crate) json: bool,
}

/// `kiln eval`: loss, accuracy, per-class accuracy and confusion matrix on the test split of the
/// weights' run, or of `--data` (the model and preprocessing then come from the weights' spec).
pub(crate) fn eval(a: EvalArgs<'_>) -> anyhow::Result<()> {
    let weights = match (a.run, a.weights) {
        (Some(dir), None) => dir.join("model.bpk"),
        (None, Some(w)) => w.to_path_buf(),
        _ => {
            return Err(
                Usage("give --run DIR, or --weights W (with --data DIR or --config C)".into()).into(),
            );
        }
    };
    let config = a
        .config
        .map(Path::to_path_buf)
        .or_else(|| a.run.map(|d| d.join("config.toml")));
    let run_file = match a.data {
        Some(_) => None,
        None => run_file_for(&weights, config.as_deref())?,
    };
    let t = trained(&weights, run_file.as_ref())?;
    let mut file = match (run_file, a.data) {
        (Some(file), _) => file,
        (None, Some(data)) => t.run_file_on(data),
        (None, None) => {
            return Err(Usage(format!(
                "{} has no config.toml next to it to say which data it was trained on; pass --data DIR (or --config RUN.toml)",
                weights.display()
            ))
            .into());
        }
    };
    crate::resolve(&mut file)?;
    t.fit_eval_stages(&mut file);
    check_normalization(&t, &file)?;
    let device = a.device.device()?;
    let data = Splits::open(&file)?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    if data.classes.len() != t.spec.num_classes {
        return Err(Usage(format!(
            "{} has {} classes but the weights {} outputs",
            data.root.display(),
            data.classes.len(),
            t.spec.num_classes
        ))
        .into());
    }
    let (metrics, confusion) = t.evaluate(
        data.test.as_ref(),
        a.batch_size.unwrap_or(file.train.batch_size),
        &device,
    )?;
    let names = data.classes.clone();
    let report = EvalReport {
        weights: weights.clone(),
        data: data.root.clone(),
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
        confusion: confusion.rows(),
    };
    if a.json {
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

/// `kiln predict`: class probabilities for images, a folder of images or a `.npy` batch. The
/// preprocessing comes with the weights (their spec's normalization, input size, evaluation
/// stages and classes); a run file, when given or next to the weights, supplies its evaluation
/// stages and must agree on the normalization.
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
    let t = trained(weights, file.as_ref())?;
    let norm = match &file {
        Some(f) => {
            let mut f = f.clone();
            crate::resolve(&mut f)?;
            check_normalization(&t, &f)?
        }
        None => t.spec.normalization.resolve()?,
    };
    let [c, h, w] = t.spec.input_chw;
    let stages = match &file {
        Some(f) if !f.transforms.eval.is_empty() => f.transforms.eval.clone(),
        _ => t.spec.eval.clone(),
    };
    let eval = (!stages.is_empty()).then(|| Compose {
        stages,
        normalization: t.spec.normalization.clone(),
        erasing: 0.0,
    });
    let device = device.device()?;
    let (labels, data, n) = kiln_train::infer::inputs(input, &norm, eval.as_ref(), [c, h, w])?;
    let images = Tensor::<4>::from_data(TensorData::new(data, [n, c, h, w]), &device);
    let probs = t.probabilities(images, &device)?;
    let classes = t.spec.num_classes;
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
                        class: t.class_name(j),
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

/// `kiln transform`: the configured pipeline applied to one image, written as a CHW `.npy`.
pub(crate) fn transform(
    config: &Path,
    input: &Path,
    out: &Path,
    train: bool,
    epoch: u64,
    json: bool,
) -> anyhow::Result<()> {
    let mut file = RunFile::load(config, &[])?;
    // The data's format decides grey or colour; without the data, the format as written.
    if file.data.path.as_ref().is_none_or(|p| p.exists()) {
        crate::resolve(&mut file)?;
    }
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let (shape, data) = kiln_train::data::transform_image(&file, input, train, epoch)?;
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

/// `kiln stats`: per-channel mean and std of the training images, ready to paste into a config.
pub(crate) fn stats(data: &Path, format: DataFormat, scale: Scale, json: bool) -> anyhow::Result<()> {
    let progress = |done: usize, total: usize| {
        if !json && (done == total || done % 10_000 < 256) {
            eprint!("\rstats: {done}/{total} images");
        }
    };
    let mut file = RunFile::default();
    file.data.path = Some(data.to_path_buf());
    file.data.format = format;
    crate::resolve(&mut file)?;
    let (n, s, order) = kiln_train::data::channel_stats(&file, progress)?;
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

/// `kiln inspect`: `dataset[N]` and the first training batch, as the seed inspected them by hand.
pub(crate) fn inspect(file: &RunFile, index: usize, json: bool, grid: Option<&Path>) -> anyhow::Result<()> {
    if file.data.format == DataFormat::Coco {
        return crate::detection::inspect(file, index, json, grid);
    }
    let report = kiln_train::inspect::inspect(file, index, grid)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
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

/// `kiln import`'s arguments.
pub(crate) struct ImportArgs<'a> {
    pub(crate) arch: &'a str,
    pub(crate) weights: &'a Path,
    pub(crate) out: &'a Path,
    pub(crate) classes: usize,
    pub(crate) normalization: &'a str,
    pub(crate) input_size: Option<&'a str>,
    pub(crate) class_names: Option<&'a Path>,
    pub(crate) json: bool,
}

/// `kiln import`: a torchvision state dict as a kiln checkpoint (`OUT/model.bpk` and its spec).
pub(crate) fn import(a: ImportArgs<'_>) -> anyhow::Result<()> {
    let arch = ModelConfig::from_name(a.arch).map_err(|e| Usage(format!("--arch: {e}")))?;
    let normalization: NormalizationSpec = a
        .normalization
        .parse()
        .map_err(|e| Usage(format!("--normalization: {e}")))?;
    let [c, dh, dw] = arch.default_input();
    let [h, w] = match a.input_size {
        None => [dh, dw],
        Some(text) => {
            let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
            match text.split_once(['x', 'X']).map(|(h, w)| (parse(h), parse(w))) {
                Some((Some(h), Some(w))) => [h, w],
                _ => return Err(Usage(format!("--input-size {text}: give HxW, e.g. 224x224")).into()),
            }
        }
    };
    let class_names: Vec<String> = match a.class_names {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--class-names {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if !class_names.is_empty() && class_names.len() != a.classes {
        return Err(Usage(format!(
            "--class-names {} lists {} names but --classes is {}",
            a.class_names.unwrap_or(Path::new("")).display(),
            class_names.len(),
            a.classes
        ))
        .into());
    }
    let model_path = a.out.join("model.bpk");
    if model_path.exists() {
        return Err(Usage(format!(
            "{} exists already; choose another --out",
            model_path.display()
        ))
        .into());
    }
    std::fs::create_dir_all(a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let spec = PretrainedSpec::torchvision(arch, normalization, [c, h, w], a.classes, class_names);
    let device = Device::flex();
    let path = kiln_models::import::import_torchvision(a.weights, &spec, &model_path, &device)?;
    if a.json {
        let v = serde_json::json!({
            "weights": path,
            "spec": PretrainedSpec::sidecar_path(&path),
            "model": spec.model,
            "input_chw": spec.input_chw,
            "num_classes": spec.num_classes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "kiln import: {} -> {} ({}, {}x{}x{} -> {} classes, {})",
        a.weights.display(),
        path.display(),
        spec.model,
        c,
        h,
        w,
        spec.num_classes,
        a.normalization
    );
    println!(
        "  use it: kiln predict --weights {} --input IMAGE; kiln train --init-from {} --data DIR",
        path.display(),
        path.display()
    );
    Ok(())
}

/// `kiln models`: every registered architecture by its `--model` name.
pub(crate) fn models(json: bool) -> anyhow::Result<()> {
    let presets = ModelConfig::presets();
    if json {
        let rows: Vec<serde_json::Value> = presets
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "about": p.about,
                    "default_input_chw": p.config.default_input(),
                    "config": &p.config,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for p in &presets {
        println!("{:<16} {}", p.name, p.about);
    }
    Ok(())
}
