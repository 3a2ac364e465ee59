//! FCOS trained through the task-generic loop on pasted Fashion-MNIST items: the COCO folder that
//! `kiln make-detection` writes, batches resized and padded as torchvision's transform does, the
//! loss falling, and COCO AP measured on the validation split every epoch.

use burn::prelude::*;
use kiln_data::{CocoDetection, CocoFile, MnistDataset, MnistSplit, PasteConfig, paste_detection_set};
use kiln_models::fcos::FcosConfig;
use kiln_models::resnet::ResNetKind;
use kiln_train::detection::{DetectionSource, FcosDetection, MAP, MAP50, resized_size};
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
    let task = FcosDetection::new(val_gt, &val_set).unwrap();
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
