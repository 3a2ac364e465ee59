//! End to end through every crate: real Fashion-MNIST images → typed batches → normalised tensors
//! → the reference CNN → the SGD loop. The loss must fall.

mod common;

use burn::module::Module;
use burn::prelude::*;
use kiln_data::{MnistDataset, MnistSplit};
use kiln_models::ReferenceCnnConfig;
use kiln_train::{BatchSource, ClassificationSource, FitOutputs, TrainConfig, evaluate, fit};
use kiln_transforms::{ChannelOrder, Normalization, Scale};

#[test]
fn reference_cnn_loss_falls_on_real_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 320, 64)?;
    let src = common::fmnist_train_source(dir.path())?;
    assert_eq!(src.len(), 320);

    let device = Device::flex();
    device.seed(7);
    let model = ReferenceCnnConfig::new().init(&device)?;
    let before = evaluate(&model.valid(), &src, 160, &device)?;

    // 4 epochs × 10 steps of 32 = 40 SGD steps.
    let cfg = TrainConfig {
        epochs: 4,
        batch_size: 32,
        lr: 0.05,
        seed: 7,
        ..TrainConfig::default()
    };
    let result = fit(model, &src, None, &cfg, &device, FitOutputs::default())?;
    let after = evaluate(&result.model.valid(), &src, 160, &device)?;

    assert!(
        result.warnings.is_empty(),
        "the preset fits the data: {:?}",
        result.warnings
    );
    let losses: Vec<f64> = result.epochs.iter().map(|r| r.train_loss).collect();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[3] < 0.7 * losses[0], "training loss per epoch: {losses:?}");
    assert!(
        after.loss < 0.5 * before.loss,
        "eval loss before {} after {}",
        before.loss,
        after.loss
    );
    // Ten classes: chance is 0.1. Forty steps on real images get far above it.
    assert!(
        after.accuracy > 0.6,
        "accuracy after 40 steps: {}",
        after.accuracy
    );
    Ok(())
}

#[test]
fn exploding_loss_stops_the_run_with_where_it_happened() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 128, 16)?;
    let src = common::fmnist_train_source(dir.path())?;
    let device = Device::flex();
    let model = ReferenceCnnConfig::new().init(&device)?;
    // An absurd learning rate: the unnormalised classifier head blows the logits up within a few steps.
    let cfg = TrainConfig {
        epochs: 20,
        batch_size: 32,
        lr: 1e12,
        ..TrainConfig::default()
    };
    match fit(model, &src, None, &cfg, &device, FitOutputs::default()) {
        Err(kiln_train::TrainError::NonFiniteLoss {
            epoch, step, batch, ..
        }) => {
            assert!(epoch >= 1 && (1..=4).contains(&step) && batch == 32);
        }
        Err(other) => anyhow::bail!("wrong error: {other}"),
        Ok(r) => anyhow::bail!("training with lr 1e12 finished: {:?}", r.epochs),
    }
    Ok(())
}

#[test]
fn a_normalization_that_does_not_fit_the_data_is_reported_on_the_first_batch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 64, 16)?;
    // Statistics of some other dataset (bright images, little spread): Fashion-MNIST's first batch
    // comes out with a channel mean far below 0.
    let wrong = Normalization::new("bright", vec![0.9], vec![0.05], Scale::Unit, ChannelOrder::Gray)?;
    let src = ClassificationSource::new(MnistDataset::from_dir(dir.path(), MnistSplit::Train)?, wrong);
    let device = Device::flex();
    let model = ReferenceCnnConfig::new().init(&device)?;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let mut seen = Vec::new();
    let mut on_warning = |w: &str| seen.push(w.to_string());
    let outputs = FitOutputs {
        on_warning: Some(&mut on_warning),
        ..FitOutputs::default()
    };
    let result = fit(model, &src, None, &cfg, &device, outputs)?;
    assert_eq!(result.warnings.len(), 1, "{:?}", result.warnings);
    assert!(
        result.warnings[0].contains("channel 0 of the first batch has mean"),
        "{:?}",
        result.warnings
    );
    assert_eq!(seen, result.warnings, "the callback saw it as it happened");
    Ok(())
}

#[test]
fn an_mlp_trains_through_the_same_loop() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 320, 16)?;
    let src = common::fmnist_train_source(dir.path())?;
    let device = Device::flex();
    let model = kiln_models::MlpConfig::new(vec![128]).init(&device)?;
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        seed: 5,
        ..TrainConfig::default()
    };
    let result = fit(model, &src, None, &cfg, &device, FitOutputs::default())?;
    let losses: Vec<f64> = result.epochs.iter().map(|r| r.train_loss).collect();
    assert!(
        losses[2] < 0.8 * losses[0],
        "MLP training loss per epoch: {losses:?}"
    );
    Ok(())
}

/// The run as a library value: a run file parsed, validated, its data resolved (the idx files
/// detected), run by `kiln_train::runner::train` with its events collected; the weights it saves
/// then open with nothing but their spec and evaluate to the run's own test figures.
#[test]
fn a_run_file_runs_from_rust_and_its_weights_reopen_from_their_spec() -> anyhow::Result<()> {
    use kiln_train::config::{DataFormat, RunFile};
    use kiln_train::data::Splits;
    use kiln_train::infer::Trained;
    use kiln_train::runner::{self, RunEvent, RunOptions};

    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 256, 64)?;
    let text = format!(
        "[data]\npath = {:?}\n\n[train]\nepochs = 1\nbatch_size = 32\n\n[run]\nout = {:?}\n",
        dir.path(),
        dir.path().join("run")
    );
    let mut file = RunFile::parse(&text, "run.toml".as_ref(), &[])?;
    file.validate()?;
    assert_eq!(file.data.format, DataFormat::Auto);
    let notes = file.resolve_data()?;
    assert_eq!(file.data.format, DataFormat::FashionMnist, "{notes:?}");
    assert!(notes[0].contains("idx files"), "{notes:?}");

    let (mut setup, mut epochs) = (Vec::new(), 0);
    let outcome = runner::train(
        file.clone(),
        &RunOptions::default(),
        &mut |e: RunEvent<'_>| match e {
            RunEvent::Setup(line) => setup.push(line),
            RunEvent::Epoch(_) => epochs += 1,
            _ => {}
        },
    )?;
    assert_eq!(epochs, 1);
    assert!(
        setup[0].contains("ReferenceCnn(1x28x28 -> 10 classes)"),
        "{setup:?}"
    );
    for f in [
        "config.json",
        "config.toml",
        "metrics.jsonl",
        "report.md",
        "loss.png",
        "summary.json",
    ] {
        assert!(outcome.run_dir.join(f).is_file(), "{f}");
    }

    let trained = Trained::open(&outcome.model, None)?;
    assert_eq!(Some(&trained.architecture), file.model.classifier());
    let data = Splits::open(&file)?;
    let device = Device::flex();
    let (metrics, _) = trained.evaluate(data.test.as_ref(), 32, &device)?;
    assert_eq!(metrics.samples, 64);
    assert_eq!(Some(metrics.accuracy), outcome.summary.test_acc);
    assert!((metrics.loss - outcome.summary.test_loss).abs() < 1e-9);
    Ok(())
}

#[test]
fn torchvision_weights_import_from_rust_and_predict_like_the_cli() -> anyhow::Result<()> {
    use kiln_train::infer::{ImportRequest, import_torchvision};
    // The cifar_resnet20 fixture: seeded random weights and their PyTorch logits
    // (crates/kiln-models/tests/fixtures/cifar_resnet20, made by scripts/).
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/kiln-models/tests/fixtures/cifar_resnet20");
    let root = tempfile::tempdir()?;
    let request = ImportRequest {
        architecture: kiln_models::ModelConfig::from_name("cifar-resnet20")?,
        weights: fixtures.join("weights.safetensors"),
        out: root.path().join("imported"),
        classes: 10,
        normalization: "cifar10".parse()?,
        input_size: None,
        class_names: Vec::new(),
    };
    let device = Device::flex();
    let bad_names = ImportRequest {
        class_names: vec!["cat".into(), "dog".into()],
        ..request.clone()
    };
    let err = import_torchvision(&bad_names, &device).unwrap_err().to_string();
    assert!(err.contains("2 names") && err.contains("10 classes"), "{err}");
    let t = import_torchvision(&request, &device)?;
    assert_eq!((t.spec.input_chw, t.spec.num_classes), ([3, 32, 32], 10));
    // Reopened from its spec alone, it predicts: the fixture's input, model-ready, as a .npy.
    let bytes = std::fs::read(fixtures.join("input.f32"))?;
    let input: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let npy = root.path().join("input.npy");
    kiln_data::npy::write_f32(&npy, &[2, 3, 32, 32], &input)?;
    let reopened = kiln_train::infer::Trained::open(&t.path, None)?;
    let (predictions, probs) = reopened.predict(&npy, None, 3, &device)?;
    assert_eq!((predictions.len(), probs.len()), (2, 20));
    for (p, row) in predictions.iter().zip(probs.chunks(10)) {
        let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
        assert_eq!(p.top_k[0].index, best);
        assert_eq!(p.top_k[0].class, best.to_string(), "no class names: indices");
        assert!(p.top_k.windows(2).all(|w| w[0].probability >= w[1].probability));
    }
    // A second import into the same folder is refused, naming the file.
    let err = import_torchvision(&request, &device).unwrap_err().to_string();
    assert!(
        err.contains("model.bpk") && err.contains("exists already"),
        "{err}"
    );
    Ok(())
}
