//! The loop's guarantees on real (tiny) Fashion-MNIST: exact resume from a checkpoint, gradient
//! accumulation that averages, early stopping with the best model kept, the overfitting verdict on
//! a deliberately tiny training set, and the NaN stop naming the last good checkpoint.

mod common;

use burn::prelude::*;
use kiln_data::{MnistDataset, MnistSplit};
use kiln_models::{MlpConfig, ReferenceCnnConfig};
use kiln_train::{
    BatchSource, CheckpointOptions, ClassificationSource, EarlyStopping, FitOutputs, Monitor,
    OptimizerConfig, TrainConfig, evaluate, fit,
};
use kiln_transforms::Normalization;

fn source(dir: &std::path::Path, split: MnistSplit) -> anyhow::Result<impl BatchSource + use<>> {
    Ok(ClassificationSource::new(
        MnistDataset::from_dir(dir, split)?,
        Normalization::fashion_mnist(),
    ))
}

#[test]
fn a_resumed_run_ends_with_the_same_metrics_as_an_uninterrupted_one_on_every_backend() -> anyhow::Result<()> {
    for (name, device) in common::backends() {
        resumed_equals_straight(name, &device)?;
    }
    Ok(())
}

/// Three epochs straight, then the same run resumed from epoch 2's checkpoint: the metrics of
/// every epoch are bit-identical (same kernels, same order), on `device`.
fn resumed_equals_straight(name: &str, device: &Device) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 256, 64)?;
    let (train, val) = (
        source(data.path(), MnistSplit::Train)?,
        source(data.path(), MnistSplit::Test)?,
    );
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        lr: 0.05,
        optimizer: OptimizerConfig::adamw(), // moments and step counts must survive the resume
        seed: 3,
        ..TrainConfig::default()
    };
    let ckpt = tempfile::tempdir()?;
    let opts = CheckpointOptions {
        dir: ckpt.path().to_path_buf(),
        keep_last: 3,
        resume: false,
        on_error: kiln_train::OnCheckpointError::Stop,
    };
    device.seed(3);
    let model = ReferenceCnnConfig::new().init(device)?;
    let straight = fit(
        model,
        &train,
        Some(&val),
        &cfg,
        device,
        FitOutputs {
            checkpoints: Some(opts.clone()),
            ..Default::default()
        },
    )?;
    // "Stopped after epoch 2": the third checkpoint never happened.
    std::fs::remove_dir_all(ckpt.path().join("epoch-0003"))?;
    assert!(ckpt.path().join("epoch-0002/optimizer.bpk").is_file());
    device.seed(99); // a different fresh init: the resume must not depend on it
    let fresh = ReferenceCnnConfig::new().init(device)?;
    let resumed = fit(
        fresh,
        &train,
        Some(&val),
        &cfg,
        device,
        FitOutputs {
            checkpoints: Some(CheckpointOptions { resume: true, ..opts }),
            ..Default::default()
        },
    )?;
    assert_eq!(resumed.resumed_after, 2, "{name}");
    assert_eq!(resumed.epochs.len(), 3);
    for (a, b) in straight.epochs.iter().zip(&resumed.epochs) {
        assert_eq!(
            (a.train_loss, a.val_loss, &a.metrics),
            (b.train_loss, b.val_loss, &b.metrics),
            "{name}: epoch {}",
            a.epoch
        );
    }
    // A resume with another config is refused instead of silently mixing runs.
    let other = TrainConfig { lr: 0.1, ..cfg };
    let err = fit(
        ReferenceCnnConfig::new().init(device)?,
        &train,
        Some(&val),
        &other,
        device,
        FitOutputs {
            checkpoints: Some(CheckpointOptions {
                dir: ckpt.path().to_path_buf(),
                keep_last: 3,
                resume: true,
                on_error: kiln_train::OnCheckpointError::Stop,
            }),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("another training config") && err.contains("state.json"),
        "{name}: {err}"
    );
    eprintln!("{name}: the resumed run's 3 epochs of metrics are bit-identical to the uninterrupted run's");
    Ok(())
}

#[test]
fn accumulating_two_half_batches_equals_one_full_batch_on_every_backend() -> anyhow::Result<()> {
    for (name, device) in common::backends() {
        accumulation_averages(name, &device)?;
    }
    Ok(())
}

fn accumulation_averages(name: &str, device: &Device) -> anyhow::Result<()> {
    // Without BatchNorm (whose statistics depend on the batch), the mean loss over 32 samples has
    // the gradient of the average of two 16-sample mean losses: accumulation must average.
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 128, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    // One init, cloned for every run: `Device::seed` is process-global on flex, so seeding and
    // initialising inside each run would race with the other tests of this binary (their `fit`
    // re-seeds the device every epoch) and the three runs would start from different weights.
    device.seed(5);
    let init = MlpConfig::new(vec![32]).with_batch_norm(false).init(device)?;
    let run = |batch_size, accumulate| -> anyhow::Result<Vec<f32>> {
        let model = init.clone();
        let cfg = TrainConfig {
            epochs: 1,
            batch_size,
            accumulate,
            lr: 0.1,
            seed: 5,
            ..TrainConfig::default()
        };
        let r = fit(model, &train, None, &cfg, device, FitOutputs::default())?;
        let probe = train.batch(&[0, 1, 2, 3])?.into_tensors(device).0;
        Ok(kiln_models::Classifier::logits(&r.model.valid(), probe)
            .into_data()
            .try_into_vec_as::<f32>()?)
    };
    let full = run(32, 1)?;
    let accumulated = run(16, 2)?;
    let summed_would_be = run(16, 1)?; // 8 steps of 16 instead of 4 of 32: visibly different
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(
        diff(&full, &accumulated) < 1e-4,
        "{name}: {}",
        diff(&full, &accumulated)
    );
    assert!(diff(&full, &summed_would_be) > 1e-2, "{name}");
    eprintln!(
        "{name}: 2 × 16 accumulated within {:.1e} of one batch of 32",
        diff(&full, &accumulated)
    );
    Ok(())
}

#[test]
fn early_stopping_keeps_the_best_model_and_a_tiny_training_set_is_called_overfitting() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 48, 200)?;
    let (train, val) = (
        source(data.path(), MnistSplit::Train)?,
        source(data.path(), MnistSplit::Test)?,
    );
    let device = Device::flex();
    device.seed(11);
    let model = MlpConfig::new(vec![128]).init(&device)?;
    let ckpt = tempfile::tempdir()?;
    // 48 training images, 200 validation images: memorised within a few dozen steps.
    let cfg = TrainConfig {
        epochs: 40,
        batch_size: 16,
        lr: 0.05,
        optimizer: OptimizerConfig::adam(),
        early_stopping: Some(EarlyStopping {
            monitor: Monitor::ValLoss,
            patience: 4,
            min_delta: 0.0,
        }),
        seed: 11,
        ..TrainConfig::default()
    };
    let r = fit(
        model,
        &train,
        Some(&val),
        &cfg,
        &device,
        FitOutputs {
            checkpoints: Some(CheckpointOptions {
                dir: ckpt.path().to_path_buf(),
                keep_last: 1,
                resume: false,
                on_error: kiln_train::OnCheckpointError::Stop,
            }),
            ..Default::default()
        },
    )?;
    let last = r.epochs.last().unwrap();
    assert!(r.stopped_early, "stopped at epoch {} of 40", last.epoch);
    let (best_loss, best_epoch) = r.best.unwrap();
    assert_eq!(last.epoch, best_epoch + 4, "patience 4 after the best epoch");
    assert!(r.epochs.iter().all(|e| e.val_loss.unwrap() >= best_loss));
    // The best model is on disk and gives the best epoch's validation loss.
    let (best_model, _) = kiln_models::weights::load_weights(
        MlpConfig::new(vec![128]).init(&device)?,
        &ckpt.path().join("best.bpk"),
    )?;
    let again = evaluate(&best_model, &val, 16, &device)?;
    assert!(
        (again.loss - best_loss).abs() < 1e-5,
        "{} vs {best_loss}",
        again.loss
    );
    // Only the last epoch checkpoint is kept.
    let epochs: Vec<_> = std::fs::read_dir(ckpt.path())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("epoch-"))
        .collect();
    assert_eq!(epochs, vec![format!("epoch-{:04}", last.epoch)]);
    // The verdict: training accuracy near 1 with a wide gap to validation.
    assert_eq!(r.verdict.label(), "overfitting", "{} / {:?}", r.verdict, last);
    assert!(last.verdict.as_deref().unwrap_or("").starts_with("overfitting"));
    assert_eq!(r.val_confusion().map(|c| c.total()), Some(200));
    Ok(())
}

#[test]
fn a_nan_stop_names_the_last_good_checkpoint() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    let model = MlpConfig::new(vec![32]).with_batch_norm(false).init(&device)?;
    let ckpt = tempfile::tempdir()?;
    // A warmup from a sane rate to an absurd one: epoch 1 trains, later epochs explode.
    let cfg = TrainConfig {
        epochs: 30,
        batch_size: 16,
        lr: 1e9,
        schedule: kiln_train::Schedule {
            warmup: Some(kiln_train::schedule::Warmup {
                length: 20,
                unit: kiln_train::schedule::Unit::Epoch,
                start_factor: 1e-10,
            }),
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    let err = fit(
        model,
        &train,
        None,
        &cfg,
        &device,
        FitOutputs {
            checkpoints: Some(CheckpointOptions {
                dir: ckpt.path().to_path_buf(),
                keep_last: 2,
                resume: false,
                on_error: kiln_train::OnCheckpointError::Stop,
            }),
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    match err {
        kiln_train::TrainError::NonFiniteLoss {
            epoch, checkpoint, ..
        } => {
            assert!(epoch > 1, "{msg}");
            let checkpoint = checkpoint.expect("a checkpoint before the explosion");
            assert!(checkpoint.join("model.bpk").is_file());
            assert!(msg.contains(&checkpoint.display().to_string()), "{msg}");
        }
        other => anyhow::bail!("wrong error: {other}"),
    }
    Ok(())
}

#[test]
fn fine_tuning_a_frozen_backbone_trains_only_the_new_head() -> anyhow::Result<()> {
    use burn::module::Module;
    use kiln_models::FineTune;
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    device.seed(21);
    // "Pretrained" on 5 classes; fine-tuned for Fashion-MNIST's 10 with the backbone frozen.
    let pretrained = MlpConfig::new(vec![32]).with_num_classes(5).init(&device)?;
    // Every float tensor of the model in visiting order (parameters and BatchNorm statistics).
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0
                .push(p.val().into_data().try_into_vec_as::<f32>().unwrap_or_default());
        }
    }
    let snapshot = |m: &kiln_models::Mlp| -> Vec<Vec<f32>> {
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        c.0
    };
    let before = snapshot(&pretrained);
    let model = pretrained.replace_head(10, &device)?.freeze_backbone();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        lr: 0.05,
        seed: 21,
        ..TrainConfig::default()
    };
    let r = fit(model, &train, None, &cfg, &device, FitOutputs::default())?;
    let after = snapshot(&r.model.valid());
    // Same order of tensors: the backbone's (weights, BatchNorm γ/β and running statistics) are
    // untouched; the head's changed.
    let n = before.len();
    // linear weight, BatchNorm γ, β, running mean and variance; head weight and bias.
    assert_eq!(n, 7);
    assert_eq!(after.len(), n);
    assert_eq!(
        &after[..n - 2],
        &before[..n - 2],
        "frozen backbone, BatchNorm statistics included"
    );
    assert!(r.epochs[1].train_loss < r.epochs[0].train_loss, "{:?}", r.epochs);
    Ok(())
}

#[test]
fn a_label_the_model_has_no_output_for_is_an_error_not_a_panic() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    // Fashion-MNIST has 10 classes; this model has 5 outputs.
    let model = MlpConfig::new(vec![16]).with_num_classes(5).init(&device)?;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..TrainConfig::default()
    };
    let err = fit(model, &train, None, &cfg, &device, FitOutputs::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, kiln_train::TrainError::LabelOutOfRange { classes: 5, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("outside 0..5") && msg.contains("training, epoch 1"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn augmented_training_gives_the_same_metrics_whatever_the_worker_count() -> anyhow::Result<()> {
    use kiln_transforms::NormalizationSpec;
    use kiln_transforms::compose::{Compose, Stage};
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 96, 16)?;
    let compose = Compose {
        stages: vec![
            Stage::RandomCrop {
                height: 28,
                width: 28,
                padding: 2,
                reflect: false,
            },
            Stage::HorizontalFlip { p: 0.5 },
        ],
        normalization: NormalizationSpec::FashionMnist,
        erasing: 0.25,
    };
    let train = ClassificationSource::new(
        MnistDataset::from_dir(data.path(), MnistSplit::Train)?,
        Normalization::fashion_mnist(),
    )
    .with_augmentation(compose, 9)?;
    // The augmentation is real: another epoch draws other crops, the same epoch the same ones,
    // and plain `batch` (evaluation) is not augmented.
    let positions: Vec<usize> = (0..16).collect();
    let e0 = train.epoch_batch(&positions, 0)?;
    assert_eq!(e0.shape, [16, 1, 28, 28]);
    assert_eq!(e0.data, train.epoch_batch(&positions, 0)?.data);
    assert_ne!(e0.data, train.epoch_batch(&positions, 1)?.data);
    assert_ne!(e0.data, train.batch(&positions)?.data);

    let device = Device::flex();
    device.seed(13);
    let init = ReferenceCnnConfig::new().init(&device)?;
    let run = |num_workers| -> anyhow::Result<Vec<(f64, f64)>> {
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 16,
            seed: 9,
            num_workers,
            ..TrainConfig::default()
        };
        let r = fit(init.clone(), &train, None, &cfg, &device, FitOutputs::default())?;
        Ok(r.epochs
            .iter()
            .map(|e| (e.train_loss, e.metric("train_acc").unwrap_or(f64::NAN)))
            .collect())
    };
    let inline = run(0)?;
    assert_eq!(inline, run(1)?, "1 worker");
    assert_eq!(inline, run(3)?, "3 workers");
    Ok(())
}

#[test]
fn a_panicking_dataset_is_an_error_naming_the_batch_not_a_hang() -> anyhow::Result<()> {
    struct Panics;
    impl BatchSource for Panics {
        fn len(&self) -> usize {
            64
        }
        fn batch(&self, positions: &[usize]) -> Result<kiln_transforms::ChwBatch, kiln_train::TrainError> {
            if positions.contains(&40) {
                panic!("sample 40 is cursed");
            }
            Ok(kiln_transforms::ChwBatch {
                shape: [positions.len(), 1, 28, 28],
                data: vec![0.0; positions.len() * 784],
                labels: positions.iter().map(|&p| (p % 10) as u32).collect(),
                scale: kiln_transforms::Scale::Unit,
                order: kiln_transforms::ChannelOrder::Gray,
                normalized_by: None,
            })
        }
    }
    let device = Device::flex();
    let model = MlpConfig::new(vec![8]).init(&device)?;
    for num_workers in [0, 2] {
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 8,
            num_workers,
            ..TrainConfig::default()
        };
        let err = fit(model.clone(), &Panics, None, &cfg, &device, FitOutputs::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("panicked") && err.contains("sample 40 is cursed"),
            "{num_workers} workers: {err}"
        );
    }
    Ok(())
}

#[test]
fn two_replicas_train_exactly_like_one_device_on_the_whole_batch_on_every_backend() -> anyhow::Result<()> {
    for (name, device) in common::backends() {
        if name == "flex" {
            replicas_average(name, &device)?;
            continue;
        }
        // A GPU listed twice is refused before training (several threads on one wgpu device
        // failed inside Burn's fusion once in three runs here).
        let data = tempfile::tempdir()?;
        common::write_tiny_fashion_mnist(data.path(), 32, 16)?;
        let train = source(data.path(), MnistSplit::Train)?;
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 32,
            ..TrainConfig::default()
        };
        let outputs = FitOutputs {
            data_parallel: Some(kiln_train::parallel::DataParallel::gather(vec![
                device.clone();
                2
            ])),
            ..Default::default()
        };
        let model = MlpConfig::new(vec![32]).init(&device)?;
        let err = match fit(model, &train, None, &cfg, &device, outputs) {
            Ok(_) => anyhow::bail!("{name}: two replicas on one GPU trained"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("`wgpu` is listed twice (position 2)"),
            "{name}: {err}"
        );
        eprintln!("{name}: {err}");
    }
    Ok(())
}

/// Replicas on `device` (the same CPU device several times: the data-parallel code path without
/// several GPUs).
fn replicas_average(name: &str, device: &Device) -> anyhow::Result<()> {
    use kiln_train::parallel::DataParallel;
    // Without BatchNorm, the mean loss over 32 samples has the gradient of the average of the two
    // 16-sample shard losses: data parallelism must average, as accumulation does.
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 128, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    device.seed(6);
    let init = MlpConfig::new(vec![32]).with_batch_norm(false).init(device)?;
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 0.1,
        seed: 6,
        ..TrainConfig::default()
    };
    let run = |parallel: Option<DataParallel>| -> anyhow::Result<(Vec<f32>, Vec<f64>)> {
        let r = fit(
            init.clone(),
            &train,
            None,
            &cfg,
            device,
            FitOutputs {
                data_parallel: parallel,
                ..Default::default()
            },
        )?;
        let probe = train.batch(&[0, 1, 2, 3])?.into_tensors(device).0;
        let logits = kiln_models::Classifier::logits(&r.model.valid(), probe)
            .into_data()
            .try_into_vec_as::<f32>()?;
        Ok((logits, r.epochs.iter().map(|e| e.train_loss).collect()))
    };
    let (one, one_loss) = run(None)?;
    let (two, two_loss) = run(Some(DataParallel::gather(vec![device.clone(), device.clone()])))?;
    let (four, _) = run(Some(DataParallel::gather(vec![device.clone(); 4])))?;
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(
        diff(&one, &two) < 1e-4,
        "{name}, 2 replicas: {}",
        diff(&one, &two)
    );
    assert!(
        diff(&one, &four) < 1e-4,
        "{name}, 4 replicas: {}",
        diff(&one, &four)
    );
    for (a, b) in one_loss.iter().zip(&two_loss) {
        assert!((a - b).abs() < 1e-5, "{name}: {one_loss:?} vs {two_loss:?}");
    }
    eprintln!(
        "{name}: logits of 2 and 4 replicas within {:.1e} and {:.1e} of one device",
        diff(&one, &two),
        diff(&one, &four)
    );
    // A batch that does not split evenly is refused before training.
    let odd = TrainConfig {
        batch_size: 30,
        ..cfg.clone()
    };
    let err = fit(
        init.clone(),
        &train,
        None,
        &odd,
        device,
        FitOutputs {
            data_parallel: Some(DataParallel::gather(vec![device.clone(); 4])),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("split evenly over the 4 devices"), "{name}: {err}");
    Ok(())
}

/// Fashion-MNIST with some samples that fail to load, as corrupt files would.
struct Flaky {
    inner: MnistDataset,
    bad: Vec<usize>,
}

impl burn::data::dataset::Dataset<kiln_data::MnistItem, kiln_data::DataError> for Flaky {
    fn get(&self, index: usize) -> Result<kiln_data::MnistItem, kiln_data::DataError> {
        if self.bad.contains(&index) {
            return Err(kiln_data::DataError::Format {
                path: format!("images/{index:05}.png").into(),
                problem: "truncated PNG stream".into(),
            });
        }
        self.inner.get(index)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[test]
fn bad_samples_stop_the_run_or_are_skipped_and_listed_up_to_a_limit() -> anyhow::Result<()> {
    use kiln_train::OnBadSample;
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let flaky = || -> anyhow::Result<Flaky> {
        Ok(Flaky {
            inner: MnistDataset::from_dir(data.path(), MnistSplit::Train)?,
            bad: vec![3, 17, 40],
        })
    };
    let device = Device::flex();
    let model = MlpConfig::new(vec![16]).init(&device)?;
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        ..TrainConfig::default()
    };
    let train = |src: &dyn BatchSource| fit(model.clone(), src, None, &cfg, &device, FitOutputs::default());

    // The default stops at the first bad sample, naming it and its file.
    let strict = ClassificationSource::new(flaky()?, Normalization::fashion_mnist());
    let err = train(&strict).unwrap_err().to_string();
    assert!(
        err.contains("images/000") && err.contains("truncated PNG stream"),
        "{err}"
    );
    assert!(
        err.contains("sample 3") || err.contains("sample 17") || err.contains("sample 40"),
        "{err}"
    );

    // Skip: the run goes on with smaller batches and lists every bad sample once.
    let lenient = ClassificationSource::new(flaky()?, Normalization::fashion_mnist())
        .on_bad_sample(OnBadSample::Skip, 0.1)?;
    let r = train(&lenient)?;
    let skipped: Vec<usize> = r.skipped.iter().map(|s| s.index).collect();
    assert_eq!(skipped, vec![3, 17, 40]);
    assert!(
        r.skipped[0].reason.contains("images/00003.png"),
        "{:?}",
        r.skipped[0]
    );
    // Each epoch saw the 61 good samples of its 4 batches of 16.
    assert_eq!(r.epochs.len(), 2);

    // Also through the augmentation path.
    let compose = kiln_transforms::compose::Compose {
        stages: vec![kiln_transforms::compose::Stage::HorizontalFlip { p: 0.5 }],
        normalization: kiln_transforms::NormalizationSpec::FashionMnist,
        erasing: 0.0,
    };
    let augmented = ClassificationSource::new(flaky()?, Normalization::fashion_mnist())
        .on_bad_sample(OnBadSample::Skip, 0.1)?
        .with_augmentation(compose, 1)?;
    assert_eq!(train(&augmented)?.skipped.len(), 3);

    // More bad samples than allowed (the third of 64 passes 4% = 2.56): stop, saying how many
    // and which.
    let tight = ClassificationSource::new(flaky()?, Normalization::fashion_mnist())
        .on_bad_sample(OnBadSample::Skip, 0.04)?;
    let err = train(&tight).unwrap_err().to_string();
    assert!(
        err.contains("3 of 64 samples") && err.contains("0.04") && err.contains("first: sample 3:"),
        "{err}"
    );
    assert!(
        ClassificationSource::new(flaky()?, Normalization::fashion_mnist())
            .on_bad_sample(OnBadSample::Skip, 1.5)
            .is_err()
    );
    Ok(())
}

/// A checkpoint write that fails mid-run (here: epoch 2's temporary folder cannot be created,
/// because something else already sits at its path). With `Stop`, the run ends at once with an
/// error naming the file and the last good checkpoint, which loads and resumes; with `Continue`,
/// the failure is reported, listed, and training goes on to write the next epoch's checkpoint.
/// The disk-full version of this, at process level, is `crates/kiln/tests/cli.rs`'s
/// `a_full_disk_during_checkpointing_stops_the_run_with_the_file_named`.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_or_continues_by_policy() -> anyhow::Result<()> {
    use kiln_train::{OnCheckpointError, TrainError};
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        seed: 5,
        ..TrainConfig::default()
    };
    let model = || MlpConfig::new(vec![32]).init(&Device::flex());
    for policy in [OnCheckpointError::Stop, OnCheckpointError::Continue] {
        let ckpt = tempfile::tempdir()?;
        let blocker = ckpt.path().join(".epoch-0002.tmp");
        let opts = CheckpointOptions {
            on_error: policy,
            keep_last: 5,
            ..CheckpointOptions::new(ckpt.path())
        };
        let mut warnings = Vec::new();
        let mut on_warning = |w: &str| warnings.push(w.to_string());
        // After epoch 1's checkpoint is written, block epoch 2's.
        let mut on_epoch = |r: &kiln_train::EpochRecord| {
            if r.epoch == 1 {
                std::fs::write(&blocker, b"in the way").unwrap();
            }
        };
        let result = fit(
            model()?,
            &train,
            None,
            &cfg,
            &device,
            FitOutputs {
                checkpoints: Some(opts.clone()),
                on_epoch: Some(&mut on_epoch),
                on_warning: Some(&mut on_warning),
                ..Default::default()
            },
        );
        // Reported at once: by the error that stops the run, or by a warning as it goes on.
        let reported: Vec<_> = warnings.iter().filter(|w| w.contains("checkpoint")).collect();
        let expected = usize::from(policy == OnCheckpointError::Continue);
        assert_eq!(reported.len(), expected, "{warnings:?}");
        if let Some(w) = reported.first() {
            assert!(
                w.contains("epoch 2's checkpoint") && w.contains("epoch-0001"),
                "{w}"
            );
        }
        let good = ckpt.path().join("epoch-0001");
        match policy {
            OnCheckpointError::Stop => {
                let Err(err) = result else {
                    anyhow::bail!("the run should stop")
                };
                let msg = err.to_string();
                let TrainError::CheckpointFailed { epoch, last_good, .. } = err else {
                    anyhow::bail!("wrong error: {msg}");
                };
                assert_eq!((epoch, last_good.as_deref()), (2, Some(good.as_path())));
                assert!(
                    msg.contains(".epoch-0002.tmp")
                        && msg.contains(&good.display().to_string())
                        && msg.contains("resuming the run continues from it"),
                    "{msg}"
                );
                assert!(!ckpt.path().join("epoch-0002").exists());
                // The last good checkpoint is whole: it loads, and the run resumes from it once
                // the cause is gone, to the end.
                let restored = kiln_train::checkpoint::load(&good, model()?)?;
                assert_eq!(restored.state.epoch, 1);
                std::fs::remove_file(&blocker)?;
                let resumed = fit(
                    model()?,
                    &train,
                    None,
                    &cfg,
                    &device,
                    FitOutputs {
                        checkpoints: Some(CheckpointOptions { resume: true, ..opts }),
                        ..Default::default()
                    },
                )?;
                assert_eq!((resumed.resumed_after, resumed.epochs.len()), (1, 3));
                assert!(resumed.checkpoint_failures.is_empty());
            }
            OnCheckpointError::Continue => {
                let r = result?;
                assert_eq!(r.epochs.len(), 3, "trained on");
                let failed: Vec<_> = r.checkpoint_failures.iter().map(|f| f.epoch).collect();
                assert_eq!(failed, vec![2]);
                assert!(r.checkpoint_failures[0].error.contains(".epoch-0002.tmp"));
                assert!(!ckpt.path().join("epoch-0002").exists());
                let last = kiln_train::checkpoint::latest(ckpt.path()).unwrap();
                assert_eq!(kiln_train::checkpoint::read_state(&last)?.epoch, 3);
                assert!(good.join("model.bpk").is_file());
                assert!(r.warnings.iter().any(|w| w.contains("epoch 2's checkpoint")));
            }
        }
    }
    Ok(())
}

/// Images of different sizes in one classification batch through `fit`: an error naming the
/// sample's position, its shape against the first one's, and the fix (resize or crop), before
/// any step, instead of Burn's shape panic in `Tensor::cat`. With a resizing eval stage the same
/// folder trains.
#[test]
fn images_of_different_sizes_in_one_batch_are_an_error_that_suggests_a_resize() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    for (class, rgb) in [("a", [200u8, 10, 10]), ("b", [10, 10, 200])] {
        let dir = root.path().join(class);
        std::fs::create_dir_all(&dir)?;
        for i in 0..4u32 {
            // One odd-sized image per class.
            let (w, h) = if i == 2 { (12, 9) } else { (10, 10) };
            image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(dir.join(format!("{i}.png")))?;
        }
    }
    let device = Device::flex();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 8,
        ..TrainConfig::default()
    };
    let model = || {
        ReferenceCnnConfig::new()
            .with_in_channels(3)
            .with_height(8)
            .with_width(8)
            .with_num_classes(2)
            .init(&Device::flex())
    };
    let folder = || kiln_data::ImageFolder::new(root.path());
    let plain = ClassificationSource::new(folder()?, Normalization::torch_imagenet());
    let Err(err) = fit(model()?, &plain, None, &cfg, &device, FitOutputs::default()) else {
        anyhow::bail!("mixed sizes cannot be stacked")
    };
    let msg = err.to_string();
    assert!(
        msg.contains("cannot collate sample")
            && msg.contains("[9, 12, 3]")
            && msg.contains("[10, 10, 3]")
            && msg.contains("resize or crop"),
        "{msg}"
    );
    let resized = ClassificationSource::new(folder()?, Normalization::torch_imagenet()).with_eval_transform(
        kiln_transforms::compose::Compose {
            stages: vec![kiln_transforms::compose::Stage::Resize { height: 8, width: 8 }],
            normalization: kiln_transforms::NormalizationSpec::TorchImagenet,
            erasing: 0.0,
        },
    )?;
    let r = fit(model()?, &resized, None, &cfg, &device, FitOutputs::default())?;
    assert_eq!(r.epochs.len(), 1);
    Ok(())
}

/// A model whose logits turn NaN on one forward pass: the loss is NaN at a known step.
#[derive(burn::module::Module, Debug)]
struct NanOnCall {
    inner: kiln_models::Mlp,
    #[module(skip)]
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    #[module(skip)]
    nan_on: usize,
}

impl kiln_models::Classifier for NanOnCall {
    fn name(&self) -> &'static str {
        "NanOnCall"
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let logits = self.inner.logits(images);
        if call == self.nan_on {
            logits.mul_scalar(f32::NAN)
        } else {
            logits
        }
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), kiln_models::ModelError> {
        self.inner.check_input(dims)
    }
}

/// A NaN injected into the loss at a known step (epoch 2, step 2: the 6th forward pass with 4
/// steps per epoch): the run stops there, naming that step and epoch 1's checkpoint, which
/// loads; the lr explosion of `a_nan_stop_names_the_last_good_checkpoint` is the natural cause.
#[test]
fn a_nan_injected_into_the_loss_stops_at_that_step_with_the_checkpoint_before_it() -> anyhow::Result<()> {
    use kiln_models::Classifier as _;
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    let model = NanOnCall {
        inner: MlpConfig::new(vec![32]).init(&device)?,
        calls: Default::default(),
        nan_on: 5,
    };
    let ckpt = tempfile::tempdir()?;
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        ..TrainConfig::default()
    };
    let Err(err) = fit(
        model,
        &train,
        None,
        &cfg,
        &device,
        FitOutputs {
            checkpoints: Some(CheckpointOptions::new(ckpt.path())),
            ..Default::default()
        },
    ) else {
        anyhow::bail!("the NaN must stop the run");
    };
    let msg = err.to_string();
    let kiln_train::TrainError::NonFiniteLoss {
        epoch,
        step,
        loss,
        checkpoint,
        ..
    } = err
    else {
        anyhow::bail!("wrong error: {msg}");
    };
    assert_eq!((epoch, step), (2, 2), "{msg}");
    assert!(loss.is_nan());
    let good = ckpt.path().join("epoch-0001");
    assert_eq!(checkpoint.as_deref(), Some(good.as_path()));
    assert!(
        msg.contains("loss is NaN at epoch 2, step 2") && msg.contains("epoch-0001"),
        "{msg}"
    );
    let fresh = NanOnCall {
        inner: MlpConfig::new(vec![32]).init(&device)?,
        calls: Default::default(),
        nan_on: usize::MAX,
    };
    let restored = kiln_train::checkpoint::load(&good, fresh)?;
    assert_eq!(restored.state.epoch, 1);
    assert!(
        restored
            .model
            .inner
            .logits(Tensor::zeros([1, 1, 28, 28], &device))
            .into_data()
            .iter::<f32>()
            .all(f32::is_finite)
    );
    Ok(())
}

/// A model whose forward pass panics with `message` on a batch larger than `max_batch`, as a
/// backend does when a tensor does not fit the device.
#[derive(burn::module::Module, Debug)]
struct PanicsAbove {
    inner: kiln_models::Mlp,
    #[module(skip)]
    max_batch: usize,
    #[module(skip)]
    message: String,
}

impl kiln_models::Classifier for PanicsAbove {
    fn name(&self) -> &'static str {
        "PanicsAbove"
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        if images.dims()[0] > self.max_batch {
            panic!("{}", self.message);
        }
        self.inner.logits(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), kiln_models::ModelError> {
        self.inner.check_input(dims)
    }
}

/// A panic inside a training step or an evaluation batch reaches the user once, as kiln's
/// error — not first as the panic hook's print of the backend's whole text (cubecl's
/// out-of-memory panic is a chain of `Caused by:` lines and a backtrace section; lavapipe's, in
/// `tests/backends.rs`, printed twenty lines before kiln's one). Checked in a child process, whose
/// stderr is what a terminal would show: the out-of-memory panics in training (one device and two
/// replicas) and in evaluation print nothing, even with `RUST_BACKTRACE=1`; another panic in a step
/// (a bug) is the error with where it was raised, and is printed by the hook too only with
/// `RUST_BACKTRACE=1`; a panic outside any step prints as always.
#[test]
fn a_backend_panic_is_reported_once_as_an_error_not_printed_by_the_panic_hook() -> anyhow::Result<()> {
    const CHILD: &str = "KILN_TEST_QUIET_PANIC_CHILD";
    const NAME: &str = "a_backend_panic_is_reported_once_as_an_error_not_printed_by_the_panic_hook";
    if std::env::var_os(CHILD).is_some() {
        return backend_panics_become_errors();
    }
    for backtrace in [false, true] {
        let text = common::run_test_in_child(NAME, |child| {
            child.env(CHILD, "1");
            if backtrace {
                child.env("RUST_BACKTRACE", "1");
            } else {
                child.env_remove("RUST_BACKTRACE");
            }
        })?;
        assert_eq!(
            text.matches("out of memory on flex at epoch 1, step 1 (batch_size 32)")
                .count(),
            2,
            "one device, then two replicas:\n{text}"
        );
        assert!(
            text.contains("out of memory on flex at evaluation batch 1 (batch_size 32)"),
            "{text}"
        );
        assert!(
            text.contains("the backend failed on flex at epoch 1, step 1"),
            "{text}"
        );
        // Only kiln's errors: not the backend's chain of causes.
        assert!(!text.contains("Caused by"), "{text}");
        // What the panic hook printed: `thread '…' panicked at file:line:col:`, then the message.
        let lines: Vec<&str> = text.lines().collect();
        let printed: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0].starts_with("thread '") && w[0].contains(" panicked at "))
            .map(|w| w[1])
            .collect();
        let expected: &[&str] = if backtrace {
            &["index 40 is out of bounds for 32 classes", "outside any step"]
        } else {
            &["outside any step"]
        };
        assert_eq!(printed, expected, "RUST_BACKTRACE {backtrace}:\n{text}");
    }
    Ok(())
}

/// The child's half of the test above: every failure is an error naming where.
fn backend_panics_become_errors() -> anyhow::Result<()> {
    use kiln_train::{RunPoint, TrainError};
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let device = Device::flex();
    // cubecl-runtime 0.11.3's `IoError::BufferTooBig` in the chain Burn panics with (the text
    // lavapipe gave in tests/backends.rs, its backtrace section shortened).
    let oom = "Error while reading data: Execution(An error happened during execution\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 154140672\nNo backtrace available)";
    let model = |message: &str| -> anyhow::Result<PanicsAbove> {
        Ok(PanicsAbove {
            inner: MlpConfig::new(vec![32]).init(&device)?,
            max_batch: 8,
            message: message.into(),
        })
    };
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let parallel = || kiln_train::parallel::DataParallel::gather(vec![device.clone(), device.clone()]);
    for data_parallel in [None, Some(parallel())] {
        let outputs = FitOutputs {
            data_parallel,
            ..Default::default()
        };
        let Err(err) = fit(model(oom)?, &train, None, &cfg, &device, outputs) else {
            anyhow::bail!("a step larger than the device trained");
        };
        eprintln!("{err}");
        assert!(
            matches!(
                err,
                TrainError::OutOfMemory {
                    at: RunPoint::Training { epoch: 1, step: 1 },
                    batch: 32,
                    ..
                }
            ),
            "{err}"
        );
    }
    let Err(err) = evaluate(&model(oom)?, &train, 32, &device) else {
        anyhow::bail!("a batch larger than the device was evaluated");
    };
    eprintln!("{err}");
    assert!(
        matches!(
            err,
            TrainError::OutOfMemory {
                at: RunPoint::Evaluation { batch: 1 },
                ..
            }
        ),
        "{err}"
    );
    // Any other panic: the message, and where it was raised (the hook did not print it).
    let Err(err) = fit(
        model("index 40 is out of bounds for 32 classes")?,
        &train,
        None,
        &cfg,
        &device,
        FitOutputs::default(),
    ) else {
        anyhow::bail!("the panicking model trained");
    };
    eprintln!("{err}");
    let TrainError::BackendPanic {
        message, location, ..
    } = &err
    else {
        anyhow::bail!("wrong error: {err}");
    };
    assert_eq!(message, "index 40 is out of bounds for 32 classes");
    let at = location.as_deref().unwrap_or_default();
    assert!(at.contains("train_loop.rs:"), "{at}");
    // The guard is gone after the run: a panic outside a step prints as usual.
    let outside = std::panic::catch_unwind(|| panic!("outside any step"));
    assert!(outside.is_err());
    Ok(())
}

/// Every float tensor of a module, in visiting order (the reference CNN's head, `fc2`, comes
/// last: its weight and bias).
fn float_tensors<M: burn::module::Module>(m: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.push(p.val().into_data().iter::<f32>().collect());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// Fine-tuning with a frozen backbone through `fit`: a new head for 3 classes on weights trained
/// for 10, and after an epoch every backbone tensor — weights and BatchNorm running statistics —
/// is bit-identical to the pretrained one while the head has moved.
#[test]
fn a_frozen_backbone_keeps_every_tensor_and_only_the_head_trains() -> anyhow::Result<()> {
    use kiln_models::FineTune;
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    // Three of the ten classes, relabelled 0..3.
    let three = kiln_data::Mapped::new(
        kiln_data::Subset::new(
            MnistDataset::from_dir(data.path(), MnistSplit::Train)?,
            (0..64).collect(),
        )?,
        |mut item: kiln_data::MnistItem| {
            item.label %= 3;
            Ok(item)
        },
    );
    let train = ClassificationSource::new(three, Normalization::fashion_mnist());
    let device = Device::flex();
    device.seed(4);
    let pretrained = ReferenceCnnConfig::new().init(&device)?;
    let before = float_tensors(&pretrained);
    let model = pretrained.replace_head(3, &device)?;
    let head_before = float_tensors(&model).into_iter().rev().nth(1).unwrap_or_default();
    let model = model.freeze_backbone();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        ..TrainConfig::default()
    };
    let r = fit(model, &train, None, &cfg, &device, FitOutputs::default())?;
    let after = float_tensors(&r.model.valid());
    // conv1, BN (γ, β, running mean, running var), conv2, BN ×4, fc1, BN ×4, fc2 weight and bias.
    assert_eq!((before.len(), after.len()), (17, 17));
    let n = after.len();
    for (i, (a, b)) in before.iter().zip(&after).enumerate().take(n - 2) {
        assert_eq!(a, b, "backbone tensor {i} changed");
    }
    assert_eq!(after[n - 2].len(), 128 * 3, "the new head");
    assert_ne!(after[n - 2], head_before, "the head trained");
    Ok(())
}

/// Every float parameter of `model`, in visiting order.
fn flat_weights<M: burn::module::Module>(model: &M) -> Vec<f32> {
    struct Flat(Vec<f32>);
    impl burn::module::ModuleVisitor for Flat {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut v = Flat(Vec::new());
    model.visit(&mut v);
    v.0
}

/// Ranks as threads of this process (`LocalCluster`): the arithmetic of `mpirun -np N kiln
/// train` without MPI. N ranks with a global batch of 32 train exactly as one process with 32:
/// rank 0's initial weights reach every rank, each rank takes its contiguous shard, the gradients are summed over the ranks, rank 0 reports
/// the figures one process would, and rank 0's early-stopping decision holds for every rank.
#[test]
fn ranks_train_exactly_like_one_process_on_the_whole_batch() -> anyhow::Result<()> {
    use kiln_train::parallel::DataParallel;
    use kiln_train::{Cluster, EarlyStopping, LocalCluster, Monitor};
    let device = Device::flex();
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 128, 32)?;
    let train = source(data.path(), MnistSplit::Train)?;
    let val = source(data.path(), MnistSplit::Test)?;
    // Without BatchNorm (which normalises each rank's shard by its own statistics).
    device.seed(8);
    let init = MlpConfig::new(vec![32]).with_batch_norm(false).init(&device)?;
    // The other ranks start from other weights: rank 0's are broadcast at the start (as DDP does).
    device.seed(9);
    let other_init = MlpConfig::new(vec![32]).with_batch_norm(false).init(&device)?;
    let cfg = TrainConfig {
        epochs: 4,
        batch_size: 32,
        lr: 0.1,
        seed: 8,
        // No epoch improves val_acc by 10: the run stops after epoch 2 of 4, decided by rank 0
        // alone (the only rank that evaluates).
        early_stopping: Some(EarlyStopping {
            monitor: Monitor::ValAcc,
            patience: 1,
            min_delta: 10.0,
        }),
        ..TrainConfig::default()
    };
    let one = fit(
        init.clone(),
        &train,
        Some(&val),
        &cfg,
        &device,
        FitOutputs::default(),
    )?;
    assert_eq!(one.epochs.len(), 2);
    let reference = flat_weights(&one.model);
    let largest = reference.iter().fold(0f32, |m, w| m.max(w.abs()));
    for (ranks, replicas) in [(2, 1), (4, 1), (2, 2)] {
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = LocalCluster::group(ranks)
                .into_iter()
                .map(|cluster| {
                    let init = if cluster.rank() == 0 {
                        init.clone()
                    } else {
                        other_init.clone()
                    };
                    let (cfg, device, train, val) = (&cfg, device.clone(), &train, &val);
                    s.spawn(move || {
                        let parallel =
                            (replicas > 1).then(|| DataParallel::gather(vec![device.clone(); replicas]));
                        let outputs = FitOutputs {
                            cluster: Some(&cluster),
                            data_parallel: parallel,
                            ..Default::default()
                        };
                        fit(init, train, Some(val), cfg, &device, outputs).map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        let label = format!("{ranks} ranks × {replicas} devices");
        let mut results = results
            .into_iter()
            .map(|r| {
                r.map_err(|_| anyhow::anyhow!("{label}: a rank panicked"))?
                    .map_err(anyhow::Error::msg)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let first = results.remove(0);
        let diff = |w: &[f32]| {
            w.iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let d = diff(&flat_weights(&first.model));
        assert!(
            d <= 1e-5 * largest,
            "{label}: weights differ by {d:e} (largest {largest})"
        );
        // Rank 0 reports what one process reports, to the printed digits.
        assert_eq!(first.epochs.len(), 2, "{label}");
        for (a, b) in first.epochs.iter().zip(&one.epochs) {
            assert_eq!(
                format!("{:.4}", a.train_loss),
                format!("{:.4}", b.train_loss),
                "{label}"
            );
            assert_eq!(a.metric("train_acc"), b.metric("train_acc"), "{label}");
            assert_eq!(a.metric("val_acc"), b.metric("val_acc"), "{label}");
            assert_eq!(
                a.val_loss.map(|l| format!("{l:.4}")),
                b.val_loss.map(|l| format!("{l:.4}")),
                "{label}"
            );
            let steps = |r: &kiln_train::EpochRecord| {
                r.step_losses
                    .iter()
                    .map(|l| format!("{l:.4}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(steps(a), steps(b), "{label}");
        }
        // The other ranks hold the same weights, stopped with rank 0, and evaluated nothing.
        for other in &results {
            assert!(diff(&flat_weights(&other.model)) <= 1e-5 * largest, "{label}");
            assert!(
                other.stopped_early && other.epochs.len() == 2,
                "{label}: {:?}",
                other.epochs.len()
            );
            assert!(other.epochs.iter().all(|r| r.val_loss.is_none()), "{label}");
        }
        eprintln!("{label}: weights within {d:.1e} of one process (largest weight {largest:.3})");
    }
    // A global batch that does not split over the ranks is refused before any step.
    let errors = std::thread::scope(|s| {
        let handles: Vec<_> = LocalCluster::group(3)
            .into_iter()
            .map(|cluster| {
                let (init, cfg, device, train) = (init.clone(), &cfg, device.clone(), &train);
                s.spawn(move || {
                    let outputs = FitOutputs {
                        cluster: Some(&cluster),
                        ..Default::default()
                    };
                    fit(init, train, None, cfg, &device, outputs)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    for e in errors {
        let e = e
            .map_err(|_| anyhow::anyhow!("a rank panicked"))?
            .err()
            .unwrap_or_default();
        assert!(e.contains("split evenly over the 3 processes (e.g. 30)"), "{e}");
    }
    Ok(())
}
