//! The commands around training: `eval`, `predict`, `transform`, `stats`, `inspect`, `import`,
//! `export`, `models`.

use std::path::Path;

use anyhow::Context;
use burn::prelude::*;
use kiln_data::npy;
use kiln_models::{ModelConfig, PretrainedSpec};
use kiln_train::config::{DataFormat, RunFile};
use kiln_train::detection_run::TrainedDetector;
use kiln_train::infer::{ImportRequest, Trained};
use kiln_transforms::NormalizationSpec;

use crate::args::{
    EvalArgs, ExportArgs, ExportFormatArg, ImportArgs, InspectArgs, MakeDetectionArgs, PredictArgs,
    ScoreArgs, StatsArgs, TransformArgs,
};
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
    Ok(Trained::open(weights, file.and_then(|f| f.model.classifier()))?)
}

/// `kiln eval`: loss, accuracy, per-class accuracy and confusion matrix on the test split of the
/// weights' run, or of `--data` (the model and preprocessing then come from the weights' spec).
pub(crate) fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let weights = match (a.run.as_deref(), a.weights.as_deref()) {
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
        .clone()
        .or_else(|| a.run.as_ref().map(|d| d.join("config.toml")));
    if let Some(detector) = TrainedDetector::open(&weights)? {
        return eval_detector(a, &detector, config.as_deref());
    }
    let run_file = match &a.data {
        Some(_) => None,
        None => run_file_for(&weights, config.as_deref())?,
    };
    let t = trained(&weights, run_file.as_ref())?;
    let mut file = match (run_file, &a.data) {
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
    if let Some(csv) = &a.confusion {
        writable(csv)?;
    }
    let (report, warnings) = t.evaluate_run_file(&file, a.batch_size, &a.device.device()?)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Some(csv) = &a.confusion {
        let names: Vec<String> = report.per_class.iter().map(|c| c.class.clone()).collect();
        kiln_data::paths::write_file(csv, report.confusion.to_csv(&names).as_bytes())?;
    }
    match a.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{report}"),
    }
    Ok(())
}

/// `kiln eval` of detector weights: the COCO table of `--data` (or of the run's data: its test
/// split, else its validation split), and AP per category.
fn eval_detector(a: &EvalArgs, t: &TrainedDetector, config: Option<&Path>) -> anyhow::Result<()> {
    if a.confusion.is_some() {
        return Err(Usage("--confusion is for classifiers; a detector's table is COCO's".into()).into());
    }
    // The run file (given, or beside the weights) says the data and the batch that fitted.
    let file = run_file_for(&t.path, config)?;
    let data = match (&a.data, file.as_ref().and_then(|f| f.data.path.clone())) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(Usage(format!(
                "{} has no config.toml next to it to say which data it was trained on; pass --data DIR",
                t.path.display()
            ))
            .into());
        }
    };
    let batch = a
        .batch_size
        .or_else(|| file.as_ref().map(|f| f.train.batch_size))
        .unwrap_or(8);
    let report = t.evaluate(&data, batch, &a.device.device()?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{report}");
    print_category_table(&report.metrics);
    Ok(())
}

/// AP and AP50 per category, `-` where a category has no ground truth.
fn print_category_table(metrics: &kiln_train::CocoMetrics) {
    println!();
    println!("{:<24} {:>8} {:>8}", "category", "AP", "AP50");
    for c in &metrics.per_category {
        let show = |v: f64| {
            if v < 0.0 {
                "-".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        println!(
            "{:<24} {:>8} {:>8}",
            format!("{} ({})", c.name, c.id),
            show(c.ap),
            show(c.ap50)
        );
    }
}

/// `kiln predict` of detector weights: each image's detections, printed, written as a COCO
/// results list or drawn.
fn predict_detector(a: &PredictArgs, t: &TrainedDetector) -> anyhow::Result<()> {
    enum Out<'a> {
        Json(&'a Path),
        Png(&'a Path),
        Folder(&'a Path),
    }
    let out = match &a.out {
        None => None,
        Some(o) if o.is_dir() || o.extension().is_none() => Some(Out::Folder(o)),
        Some(o) => match o.extension().and_then(|e| e.to_str()) {
            Some("json") => Some(Out::Json(o)),
            Some("png") => Some(Out::Png(o)),
            _ => {
                return Err(Usage(format!(
                    "--out {}: for a detector use a .json (COCO results), a .png (one image drawn) or a folder",
                    o.display()
                ))
                .into());
            }
        },
    };
    let inputs = kiln_train::detection_run::detection_inputs(&a.input)?;
    if let Some(Out::Png(p)) = &out
        && inputs.len() != 1
    {
        return Err(Usage(format!(
            "--out {}: a .png draws one image and --input has {}; give a folder to draw each",
            p.display(),
            inputs.len()
        ))
        .into());
    }
    match &out {
        Some(Out::Json(p) | Out::Png(p)) => writable(p)?,
        Some(Out::Folder(d)) => {
            std::fs::create_dir_all(d).with_context(|| format!("--out {}", d.display()))?
        }
        None => {}
    }
    let drawing = matches!(out, Some(Out::Png(_) | Out::Folder(_)));
    let min_score = a.min_score.unwrap_or(if drawing { 0.3 } else { 0.0 });
    let device = a.device.device()?;
    let found = t.predict(&inputs, min_score, &device)?;
    match &out {
        Some(Out::Json(p)) => {
            let results: Vec<serde_json::Value> = found
                .iter()
                .flat_map(|image| {
                    image.detections.iter().map(|d| {
                        serde_json::json!({
                            "image_id": image.image_id,
                            "category_id": d.category_id,
                            "bbox": d.bbox,
                            "score": d.score,
                            "class": d.class,
                            "file_name": image.input,
                        })
                    })
                })
                .collect();
            kiln_data::paths::write_file(p, serde_json::to_string(&results)?.as_bytes())?;
        }
        Some(Out::Png(p)) => {
            for image in &found {
                kiln_train::detection_run::draw_detections(image, p)?;
            }
        }
        Some(Out::Folder(d)) => {
            for image in &found {
                let stem = image.input.file_stem().unwrap_or_default().to_string_lossy();
                kiln_train::detection_run::draw_detections(image, &d.join(format!("{stem}.png")))?;
            }
        }
        None => {}
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    for image in &found {
        let shown: Vec<String> = image
            .detections
            .iter()
            .take(a.top_k.max(1))
            .map(|d| {
                let [x, y, w, h] = d.bbox;
                format!("{} {:.2} [{x:.0}, {y:.0}, {w:.0}, {h:.0}]", d.class, d.score)
            })
            .collect();
        let more = image.detections.len().saturating_sub(shown.len());
        println!(
            "{} (image id {}): {} detections{}{}{}",
            image.input.display(),
            image.image_id,
            image.detections.len(),
            if shown.is_empty() { "" } else { ": " },
            shown.join(", "),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            }
        );
    }
    if let Some(Out::Json(p) | Out::Png(p) | Out::Folder(p)) = &out {
        eprintln!("written: {}", p.display());
    }
    Ok(())
}

/// An output file's folder must exist before the work that fills it starts (not after it).
fn writable(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(Usage(format!(
            "{}: the folder {} does not exist",
            path.display(),
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// `kiln predict`: class probabilities for images, a folder of images or a `.npy` batch. The
/// preprocessing comes with the weights (their spec's normalization, input size, evaluation
/// stages and classes); a run file, when given or next to the weights, supplies its evaluation
/// stages and must agree on the normalization.
pub(crate) fn predict(a: &PredictArgs) -> anyhow::Result<()> {
    if let Some(detector) = TrainedDetector::open(&a.weights)? {
        return predict_detector(a, &detector);
    }
    if a.min_score.is_some() {
        return Err(Usage("--min-score is for detectors; a classifier shows --top-k classes".into()).into());
    }
    if let Some(out) = &a.out {
        if !matches!(out.extension().and_then(|e| e.to_str()), Some("npy" | "json")) {
            return Err(Usage(format!("--out {}: use a .json or .npy file", out.display())).into());
        }
        writable(out)?;
    }
    let mut file = run_file_for(&a.weights, a.config.as_deref())?;
    let t = trained(&a.weights, file.as_ref())?;
    if let Some(f) = file.as_mut() {
        crate::resolve(f)?;
    }
    let device = a.device.device()?;
    let (predictions, probs) = t.predict(&a.input, file.as_ref(), a.top_k, &device)?;
    if let Some(out) = &a.out {
        match out.extension().and_then(|e| e.to_str()) {
            Some("npy") => npy::write_f32(out, &[predictions.len(), t.spec.num_classes], &probs)?,
            _ => kiln_data::paths::write_file(out, serde_json::to_string_pretty(&predictions)?.as_bytes())?,
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
        return Ok(());
    }
    for p in &predictions {
        let tops: Vec<String> = p
            .top_k
            .iter()
            .map(|c| format!("{} {:.3}", c.class, c.probability))
            .collect();
        println!("{}: {}", p.input, tops.join(", "));
    }
    Ok(())
}

/// `kiln transform`: the configured pipeline applied to one image, written as a CHW `.npy`.
pub(crate) fn transform(a: &TransformArgs) -> anyhow::Result<()> {
    let TransformArgs {
        config,
        input,
        out,
        train,
        epoch,
        json,
    } = a;
    let (train, json) = (*train, *json);
    writable(out)?;
    let mut file = RunFile::load(config, &[])?;
    // The data's format decides grey or colour; without the data, the format as written.
    if file.data.path.as_ref().is_none_or(|p| p.exists()) {
        crate::resolve(&mut file)?;
    }
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let (shape, data) = kiln_train::data::transform_image(&file, input, train, *epoch)?;
    npy::write_f32(out, &shape, &data)?;
    if json {
        let (mean, std) = kiln_train::data::plane_mean_std(&data, shape[1] * shape[2]);
        let v = serde_json::json!({
            "input": input,
            "out": out,
            "shape_chw": shape,
            "dtype": "f32",
            "normalization": norm.name,
            "training_augmentation": train,
            "channel_mean": mean,
            "channel_std": std,
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

/// `kiln stats`: per-channel mean and std of the training images, ready to paste into a config.
pub(crate) fn stats(a: &StatsArgs) -> anyhow::Result<()> {
    let json = a.json;
    let progress = |done: usize, total: usize| {
        if !json && (done == total || done % 10_000 < 256) {
            eprint!("\rstats: {done}/{total} images");
        }
    };
    let mut file = RunFile::default();
    file.data.path = Some(a.data.clone());
    file.data.format = a.format;
    crate::resolve(&mut file)?;
    let report = kiln_train::data::stats_report(&file, a.scale, progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!();
        print!("{report}");
    }
    Ok(())
}

/// `kiln inspect`: `dataset[N]` and the first training batch, as the seed inspected them by hand.
pub(crate) fn inspect(a: &InspectArgs) -> anyhow::Result<()> {
    let mut file = match &a.config {
        Some(c) => RunFile::load(c, &[])?,
        None => {
            let mut f = RunFile::default();
            f.data.path = a.data.clone();
            f
        }
    };
    crate::resolve(&mut file)?;
    let (index, json, grid) = (a.index, a.json, a.grid.as_deref());
    if let Some(g) = grid {
        writable(g)?;
    }
    if file.data.format == DataFormat::Coco {
        if grid.is_some() {
            return Err(Usage(
                "--grid draws classification batches; for COCO data it is not available".into(),
            )
            .into());
        }
        let report = kiln_train::inspect::inspect_detection(&file, index)?;
        match json {
            true => println!("{}", serde_json::to_string_pretty(&report)?),
            false => print!("{report}"),
        }
        return Ok(());
    }
    let report = kiln_train::inspect::inspect(&file, index, grid)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{report}");
    if let Some(path) = grid {
        println!("  grid: {} (de-normalised)", path.display());
    }
    Ok(())
}

/// `kiln import`: a torchvision state dict as a kiln checkpoint (`OUT/model.bpk` and its spec).
pub(crate) fn import(a: &ImportArgs) -> anyhow::Result<()> {
    let arch = kiln_models::AnyModel::from_name(&a.arch).map_err(|e| Usage(format!("--arch: {e}")))?;
    let normalization: NormalizationSpec = a
        .normalization
        .parse()
        .map_err(|e| Usage(format!("--normalization: {e}")))?;
    let class_names: Vec<String> = match &a.class_names {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--class-names {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let arch = match arch {
        kiln_models::AnyModel::Classifier(c) => c,
        kiln_models::AnyModel::Detector(d) => return import_detector(a, d, normalization, class_names),
    };
    if a.backbone.is_some() {
        return Err(Usage("--backbone is for detectors (--arch fcos)".into()).into());
    }
    let request = ImportRequest {
        architecture: arch,
        weights: a.weights.clone(),
        out: a.out.clone(),
        classes: a.classes.unwrap_or(1000),
        normalization,
        input_size: a.input_size,
        class_names,
    };
    let t = kiln_train::infer::import_torchvision(&request, &Device::flex())?;
    let (path, spec) = (&t.path, &t.spec);
    let [c, h, w] = spec.input_chw;
    if a.json {
        let v = serde_json::json!({
            "weights": path,
            "spec": PretrainedSpec::sidecar_path(path),
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

/// `kiln import --arch fcos`: torchvision detector weights as kiln detector weights.
fn import_detector(
    a: &ImportArgs,
    mut arch: kiln_models::detector::DetectorConfig,
    normalization: NormalizationSpec,
    class_names: Vec<String>,
) -> anyhow::Result<()> {
    if a.input_size.is_some() {
        return Err(Usage(
            "--input-size is for classifiers; a detector resizes each image by its min_size / max_size (torchvision's 800 / 1333)".into(),
        )
        .into());
    }
    if let Some(name) = &a.backbone {
        arch = arch
            .with_setting("backbone", name.to_ascii_lowercase().into())
            .map_err(|e| Usage(format!("--backbone: {e}")))?;
    }
    let request = kiln_train::detection_run::DetectorImport {
        architecture: arch,
        weights: a.weights.clone(),
        out: a.out.clone(),
        classes: a.classes.unwrap_or(91),
        normalization,
        class_names,
    };
    let t = kiln_train::detection_run::import_torchvision_detector(&request, &Device::flex())?;
    if a.json {
        let v = serde_json::json!({
            "weights": &t.path,
            "spec": PretrainedSpec::sidecar_path(&t.path),
            "model": t.spec.model,
            "num_classes": t.spec.num_classes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "kiln import: {} -> {} ({}, {} classes, {})",
        a.weights.display(),
        t.path.display(),
        t.spec.model,
        t.spec.num_classes,
        a.normalization
    );
    println!(
        "  use it: kiln predict --weights {} --input IMAGE --out boxes.png; kiln eval --weights {} --data COCO_DIR",
        t.path.display(),
        t.path.display()
    );
    Ok(())
}

/// `kiln export`: the weights as ONNX or as torchvision's safetensors layout.
pub(crate) fn export(a: &ExportArgs) -> anyhow::Result<()> {
    use kiln_train::infer::ExportFormat;
    let weights = match (a.run.as_deref(), a.weights.as_deref()) {
        (Some(dir), None) => dir.join("model.bpk"),
        (None, Some(w)) => w.to_path_buf(),
        _ => return Err(Usage("give --run DIR or --weights W".into()).into()),
    };
    let onnx_only = [
        ("--dynamic-batch", a.dynamic_batch),
        ("--fold-bn", a.fold_bn),
        ("--batch", a.batch != 1),
        ("--opset", a.opset != kiln_models::onnx::DEFAULT_OPSET),
    ];
    let format = match a.format {
        ExportFormatArg::Onnx => {
            if !kiln_models::onnx::OPSETS.contains(&a.opset) {
                return Err(Usage(format!(
                    "--opset {}: kiln writes opsets {} to {}",
                    a.opset,
                    kiln_models::onnx::OPSETS.start(),
                    kiln_models::onnx::OPSETS.end()
                ))
                .into());
            }
            if a.batch == 0 {
                return Err(
                    Usage("--batch 0: a graph needs at least one image (or --dynamic-batch)".into()).into(),
                );
            }
            ExportFormat::Onnx(kiln_models::onnx::OnnxOptions {
                opset: a.opset,
                dynamic_batch: a.dynamic_batch,
                batch: a.batch,
                fold_bn: a.fold_bn,
            })
        }
        ExportFormatArg::Safetensors => {
            if let Some((flag, _)) = onnx_only.iter().find(|(_, set)| *set) {
                return Err(Usage(format!(
                    "{flag} is for --format onnx; safetensors holds the weights as they are"
                ))
                .into());
            }
            ExportFormat::TorchvisionSafetensors
        }
    };
    let wanted = match a.format {
        ExportFormatArg::Onnx => "onnx",
        ExportFormatArg::Safetensors => "safetensors",
    };
    if a.out.extension().and_then(|e| e.to_str()) != Some(wanted) {
        return Err(Usage(format!("--out {}: name it .{wanted}", a.out.display())).into());
    }
    writable(&a.out)?;
    if TrainedDetector::open(&weights)?.is_some() {
        return Err(Usage(format!(
            "{} are detector weights; kiln exports classifiers so far (a detector's weights are torchvision's layout through `kiln import`'s key map, not yet written back)",
            weights.display()
        ))
        .into());
    }
    // Specs written before kiln recorded the architecture: the config.toml beside the weights says it.
    let file = run_file_for(&weights, None)?;
    let t = trained(&weights, file.as_ref())?;
    let done = t.export(&format, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    let [c, h, w] = t.spec.input_chw;
    println!(
        "kiln export: {} -> {} ({}, {} bytes; {}, {c}x{h}x{w} -> {} classes)",
        weights.display(),
        done.path.display(),
        done.format,
        done.bytes,
        t.spec.model,
        t.spec.num_classes
    );
    if let ExportFormat::Onnx(o) = &format {
        let ops: Vec<String> = done
            .operators
            .iter()
            .map(|o| format!("{} x{}", o.op, o.count))
            .collect();
        let batch = if o.dynamic_batch {
            "N".to_string()
        } else {
            o.batch.to_string()
        };
        println!(
            "  graph: input [{batch}, {c}, {h}, {w}] -> logits, probabilities [{batch}, {}]; opset {}; {}",
            t.spec.num_classes,
            o.opset,
            ops.join(", ")
        );
        println!(
            "  the preprocessing is in the model's metadata_props (normalization, colour order, input size, class names)"
        );
    }
    Ok(())
}

/// `kiln make-detection`: pasted-item COCO folders for training and validation.
pub(crate) fn make_detection(a: &MakeDetectionArgs) -> anyhow::Result<()> {
    use kiln_data::{MnistDataset, MnistSplit, PasteConfig, paste_detection_set};
    if a.out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} is not empty; choose another --out or remove it",
            a.out.display()
        );
    }
    let data = kiln_data::DatasetRoot::resolve(a.data.as_deref().unwrap_or(crate::VENDORED_DATA.as_ref()))?;
    for (split, name, images, seed) in [
        (MnistSplit::Train, "train", a.train, a.seed),
        (MnistSplit::Test, "val", a.val, a.seed.wrapping_add(1)),
    ] {
        let source = MnistDataset::from_dir(data.path(), split)?;
        const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let classes = if a.mnist {
            DIGITS
        } else {
            kiln_data::FASHION_MNIST_CLASSES
        };
        let cfg = PasteConfig {
            images,
            size: [a.size, a.size],
            objects: [a.min_objects, a.max_objects],
            scale: [a.min_scale, a.max_scale],
            seed,
            ..PasteConfig::default()
        };
        let out = a.out.join(name);
        let summary = paste_detection_set(&source, &classes, &cfg, &out, |done, total| {
            if done == total || done % 100 == 0 {
                eprint!("\r{name}: {done}/{total} images");
            }
        })?;
        eprintln!();
        println!(
            "{name}: {} images, {} objects ({} skipped: no room) -> {}",
            summary.images,
            summary.objects,
            summary.skipped,
            summary.annotations.display()
        );
    }
    Ok(())
}

/// `kiln score`: COCO metrics of a results file, as pycocotools' `COCOeval` computes them.
pub(crate) fn score(a: &ScoreArgs) -> anyhow::Result<()> {
    let gt = kiln_data::CocoFile::read(&a.annotations)?;
    let results = kiln_data::read_coco_results(&a.detections, &gt)?;
    let metrics = kiln_train::coco_evaluate(&gt, &results)?;
    if metrics.unknown_category_detections > 0 {
        eprintln!(
            "warning: {} detections have a category id {} does not list; they were dropped, as pycocotools drops them",
            metrics.unknown_category_detections,
            a.annotations.display()
        );
    }
    if metrics.zero_id_annotations > 0 {
        eprintln!(
            "warning: {} annotations in {} have id 0: pycocotools counts a detection matched to one as a false positive, and so do these numbers; number annotations from 1",
            metrics.zero_id_annotations,
            a.annotations.display()
        );
    }
    if a.json {
        let mut value = serde_json::to_value(&metrics)?;
        value["summary"] = metrics
            .named()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    eprintln!(
        "kiln score: {} detections on {} images, {} annotations, {} categories",
        metrics.detections,
        metrics.images,
        metrics.annotations,
        metrics.per_category.len()
    );
    print!("{metrics}");
    print_category_table(&metrics);
    Ok(())
}

/// `kiln models`: every registered architecture by its `--model` name, classifiers then
/// detectors.
pub(crate) fn models(json: bool) -> anyhow::Result<()> {
    let presets = ModelConfig::presets();
    let detectors = kiln_models::detector::DetectorConfig::presets();
    if json {
        let mut rows: Vec<serde_json::Value> = presets
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "task": "classification",
                    "about": p.about,
                    "default_input_chw": p.config.default_input(),
                    "config": &p.config,
                })
            })
            .collect();
        rows.extend(detectors.iter().map(|p| {
            serde_json::json!({
                "name": p.name,
                "task": "detection",
                "about": p.about,
                "input_min_max": p.config.input_sizes(),
                "config": &p.config,
            })
        }));
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for p in &presets {
        println!("{:<16} {}", p.name, p.about);
    }
    println!("detectors (COCO data):");
    for p in &detectors {
        println!("{:<16} {}", p.name, p.about);
    }
    Ok(())
}
