//! FCOS trained through the task-generic loop on pasted Fashion-MNIST items: the COCO folder that
//! `kiln make-detection` writes, batches resized and padded as torchvision's transform does, the
//! loss falling, and COCO AP measured on the validation split every epoch.

use burn::prelude::*;
use kiln_data::{CocoDetection, CocoFile, MnistDataset, MnistSplit, PasteConfig, paste_detection_set};
use kiln_models::fcos::FcosConfig;
use kiln_models::resnet::ResNetKind;
use kiln_train::detection::{DetectionSource, DetectionTask, MAP, MAP50, resized_size};
use kiln_train::{BatchSource, FitOutputs, TrainConfig, fit_task};
use kiln_transforms::Normalization;

fn make(dir: &std::path::Path, split: MnistSplit, images: usize, seed: u64) -> (CocoDetection, CocoFile) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini");
    let source = MnistDataset::from_dir(root, split).unwrap();
    let cfg = PasteConfig {
        images,
        size: [64, 64],
        objects: [1, 2],
        scale: [0.8, 1.8],
        seed,
        ..PasteConfig::default()
    };
    let summary =
        paste_detection_set(&source, &kiln_data::FASHION_MNIST_CLASSES, &cfg, dir, |_, _| {}).unwrap();
    let file = CocoFile::read(&summary.annotations).unwrap();
    (CocoDetection::from_file(dir.join("images"), &file).unwrap(), file)
}

#[test]
fn torchvisions_resize_rule() {
    // GeneralizedRCNNTransform(min_size=800, max_size=1333) on a 480x640 COCO image: 800x1066.
    assert_eq!(resized_size([480, 640], 800, 1333), [800, 1066]);
    // A long image is bounded by max_size: 1333 / 2000 of 300x2000 is 199.95 → 199.
    assert_eq!(resized_size([300, 2000], 800, 1333), [199, 1333]);
    // GeneralizedRCNNTransform(800, 1333, ...)([torch.rand(3, 333, 517)]).image_sizes: 800x1242.
    assert_eq!(resized_size([333, 517], 800, 1333), [800, 1242]);
}

#[test]
fn fcos_trains_through_the_loop_and_is_scored_with_coco_ap() {
    let dir = tempfile::tempdir().unwrap();
    let (train_set, _) = make(&dir.path().join("train"), MnistSplit::Train, 16, 1);
    let (val_set, val_gt) = make(&dir.path().join("val"), MnistSplit::Test, 8, 2);
    let norm = Normalization::torch_imagenet();
    let train = DetectionSource::new(train_set, norm.clone(), 64, 64, 0.5, 3);
    let task = DetectionTask::new(val_gt, &val_set).unwrap();
    let val = DetectionSource::new(val_set, norm, 64, 64, 0.0, 3);
    let first = train.epoch_batch(&[0, 1, 2, 3], 0).unwrap();
    assert_eq!(first.images.dims(), [4, 3, 64, 64]);
    assert_eq!(
        train.epoch_batch(&[0, 1], 0).unwrap().boxes.into_data(),
        train.epoch_batch(&[0, 1], 0).unwrap().boxes.into_data(),
        "seeded flips"
    );

    let device = Device::flex();
    device.seed(4);
    let model = FcosConfig::new(ResNetKind::ResNet18, 10)
        .with_channels(32)
        .with_head_convs(1)
        .init(&device)
        .unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 4,
        lr: 0.01,
        num_workers: 2,
        seed: 7,
        ..TrainConfig::default()
    };
    let r = fit_task(
        &task,
        model,
        &train,
        Some(&val),
        &cfg,
        &device,
        FitOutputs::default(),
    )
    .unwrap();
    let (e1, e3) = (&r.epochs[0], &r.epochs[2]);
    assert!(
        e3.train_loss < e1.train_loss,
        "{} → {}",
        e1.train_loss,
        e3.train_loss
    );
    for e in &r.epochs {
        let (map, map50) = (e.val(&MAP).unwrap(), e.val(&MAP50).unwrap());
        assert!(
            (0.0..=1.0).contains(&map) && map <= map50 + 1e-12,
            "{map} {map50}"
        );
        assert!(e.val_loss.is_some_and(f64::is_finite));
    }
}

/// The whole run from a run file with `[model] name = "fcos"`: the folder `kiln train` writes,
/// validation AP every epoch, the final COCO table, detector weights that
/// [`TrainedDetector`](kiln_train::detection_run::TrainedDetector) scores to the same figures,
/// detections of the validation folder that score the same through pycocotools' algorithm, and a
/// resume that continues the run.
#[test]
fn a_detector_run_from_a_run_file_trains_scores_predicts_and_resumes() {
    use kiln_train::config::RunFile;
    use kiln_train::detection_run::{TrainedDetector, detection_inputs};
    use kiln_train::runner::{self, RunOptions};

    let dir = tempfile::tempdir().unwrap();
    make(&dir.path().join("data/train"), MnistSplit::Train, 16, 1);
    make(&dir.path().join("data/val"), MnistSplit::Test, 8, 2);
    let text = r#"
[data]
path = "data"

[model]
name = "fcos"
backbone = "resnet18"
channels = 32
head_convs = 1
min_size = 64
max_size = 64
score_thresh = 0.05

[train]
epochs = 1
batch_size = 4
lr = 0.01
num_workers = 1

[run]
out = "run"
tensorboard = "tb"
"#;
    let path = dir.path().join("det.toml");
    std::fs::write(&path, text).unwrap();
    let mut file = RunFile::load(&path, &[]).unwrap();
    file.validate().unwrap();
    let notes = file.resolve_data().unwrap();
    assert!(notes[0].contains("COCO detection data"), "{notes:?}");

    let mut lines = Vec::new();
    let out = runner::train(file, &RunOptions::default(), &mut |e| lines.push(e.to_string())).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("FCOS(ResNet-18 FPN")),
        "{lines:?}"
    );
    let run = out.run_dir.clone();
    for name in [
        "config.json",
        "config.toml",
        "metrics.jsonl",
        "report.md",
        "summary.json",
        "detections_val.json",
        "model.bpk",
        "model.bpk.kiln.json",
    ] {
        assert!(run.join(name).is_file(), "{name} missing");
    }
    assert!(out.epochs[0].val(&MAP).is_some());
    let events: Vec<_> = std::fs::read_dir(dir.path().join("tb/run")).unwrap().collect();
    assert_eq!(events.len(), 1, "one TensorBoard event file");
    let coco = out.summary.coco.clone().unwrap();
    assert_eq!(coco.split, "val");
    assert_eq!(out.summary.test_acc, None);
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("Average Precision  (AP) @[ IoU=0.50:0.95"),
        "{report}"
    );

    // The saved weights score the validation split as the run did.
    let device = Device::flex();
    let t = TrainedDetector::open(&out.model).unwrap().unwrap();
    assert_eq!(t.spec.class_names.len(), 10);
    let eval = t.evaluate(&dir.path().join("data"), 4, &device).unwrap();
    for (a, b) in eval.metrics.stats.iter().zip(coco.metrics.stats) {
        assert!(
            (a - b).abs() < 1e-9,
            "{:?} vs {:?}",
            eval.metrics.stats,
            coco.metrics.stats
        );
    }
    // Image by image, the detections of the validation folder carry its image ids and score
    // the same (one image per forward pass instead of batches of four: float sums may differ
    // in the last bits).
    let inputs = detection_inputs(&dir.path().join("data/val")).unwrap();
    assert_eq!(inputs.len(), 8);
    let found = t.predict(&inputs, 0.0, &device).unwrap();
    let results: Vec<kiln_data::CocoResult> = found
        .iter()
        .flat_map(|i| {
            i.detections.iter().map(|d| kiln_data::CocoResult {
                image_id: i.image_id,
                category_id: d.category_id,
                bbox: d.bbox,
                score: d.score,
            })
        })
        .collect();
    let gt = CocoFile::read(dir.path().join("data/val/annotations.json")).unwrap();
    let again = kiln_train::coco_evaluate(&gt, &results).unwrap();
    for (a, b) in again.stats.iter().zip(eval.metrics.stats) {
        assert!(
            (a - b).abs() < 1e-3,
            "{:?} vs {:?}",
            again.stats,
            eval.metrics.stats
        );
    }
    let png = dir.path().join("boxes.png");
    kiln_train::detection_run::draw_detections(&found[0], &png).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 100);

    // Resumed to two epochs: the first epoch's record is kept and a second one trained.
    let mut again = kiln_train::runner::RunConfig::read(&run).unwrap().config;
    again.train.epochs = 2;
    let resumed = runner::train(
        again,
        &RunOptions {
            resume: Some(run.clone()),
            ..RunOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.resumed_after, 1);
    assert_eq!(resumed.epochs.len(), 2);
    assert_eq!(resumed.epochs[0].train_loss, out.epochs[0].train_loss);
}

#[test]
fn a_detector_refuses_what_it_cannot_use_by_name() {
    use kiln_train::config::RunFile;
    let dir = tempfile::tempdir().unwrap();
    make(&dir.path().join("train"), MnistSplit::Train, 4, 1);
    let run = |extra: &str| {
        let text = format!(
            "[data]\npath = \"{}\"\n[model]\nname = \"fcos\"\n{extra}",
            dir.path().display()
        );
        let mut file = RunFile::parse(&text, std::path::Path::new("run.toml"), &[]).unwrap();
        file.resolve_data()?;
        kiln_train::runner::train(file, &kiln_train::runner::RunOptions::default(), &mut |_| {}).map(|_| ())
    };
    let err = run("[train]\nloss = { label_smoothing = 0.1 }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.loss") && err.contains("classifiers"), "{err}");
    let err = run("[transforms]\ntrain = [{ op = \"random-crop\", height = 32, width = 32, padding = 4 }]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("horizontal flip"), "{err}");
    let err = run("[run]\ndevices = [\"flex\", \"flex\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("run.devices"), "{err}");
    // A classifier on COCO data is told to use a detector.
    let text = format!(
        "[data]\npath = \"{}\"\nformat = \"coco\"\nannotations = \"{}\"\n",
        dir.path().join("train").display(),
        dir.path().join("train/annotations.json").display()
    );
    let mut file = RunFile::parse(&text, std::path::Path::new("run.toml"), &[]).unwrap();
    file.resolve_data().unwrap();
    let err = kiln_train::runner::train(file, &kiln_train::runner::RunOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("fcos"), "{err}");
}
