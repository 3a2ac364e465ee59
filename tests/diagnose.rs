//! Pre-flight checks, the overfit-one-batch test and the learning-rate finder on real (tiny)
//! Fashion-MNIST.

mod common;

use burn::prelude::*;
use kiln_data::{MnistDataset, MnistSplit};
use kiln_models::{MlpConfig, ReferenceCnnConfig};
use kiln_train::diagnose::{LrFindConfig, doctor, lr_find, overfit_one_batch};
use kiln_train::{Classification, ClassificationSource, TrainConfig};
use kiln_transforms::{ChannelOrder, Normalization, Scale};

fn train_source(
    dir: &std::path::Path,
    norm: Normalization,
) -> anyhow::Result<impl kiln_train::BatchSource + use<>> {
    Ok(ClassificationSource::new(
        MnistDataset::from_dir(dir, MnistSplit::Train)?,
        norm,
    ))
}

#[test]
fn doctor_passes_a_sound_setup_and_lists_every_problem_of_a_broken_one() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 256, 16)?;
    let device = Device::flex();
    device.seed(1);
    let cfg = TrainConfig {
        batch_size: 64,
        ..TrainConfig::default()
    };
    let good = doctor(
        ReferenceCnnConfig::new().init(&device)?,
        &train_source(data.path(), Normalization::fashion_mnist())?,
        &cfg,
        &device,
    )?;
    println!("{good}");
    assert!(good.ok(), "{good}");
    assert_eq!(good.class_counts.iter().sum::<usize>(), 256);
    assert_eq!(good.class_counts.len(), 10);

    // A 5-class model on 10-class data, fed with another dataset's statistics.
    let bright = Normalization::new("bright", vec![0.9], vec![0.05], Scale::Unit, ChannelOrder::Gray)?;
    let bad = doctor(
        ReferenceCnnConfig::new().with_num_classes(5).init(&device)?,
        &train_source(data.path(), bright)?,
        &cfg,
        &device,
    )?;
    println!("{bad}");
    assert!(!bad.ok());
    let failed: Vec<&str> = bad
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert!(failed.contains(&"labels in range"), "{bad}");
    assert!(failed.contains(&"first batch normalised"), "{bad}");
    assert!(bad.to_string().contains("labels outside 0..5"), "{bad}");
    Ok(())
}

#[test]
fn a_model_fits_one_batch_and_a_frozen_learning_rate_does_not() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 64, 16)?;
    let src = train_source(data.path(), Normalization::fashion_mnist())?;
    let device = Device::flex();
    device.seed(2);
    let cfg = TrainConfig {
        batch_size: 32,
        lr: 0.05,
        ..TrainConfig::default()
    };
    let ok = overfit_one_batch(
        &Classification::new(cfg.loss.clone()),
        MlpConfig::new(vec![64]).init(&device)?,
        &src,
        &cfg,
        &device,
        300,
        0.05,
    )?;
    assert!(ok.passed, "{}", ok.message);
    assert!(
        ok.losses.len() < 300,
        "stops as soon as it fits: {}",
        ok.losses.len()
    );
    let stuck_cfg = TrainConfig { lr: 1e-7, ..cfg };
    let stuck = overfit_one_batch(
        &Classification::new(stuck_cfg.loss.clone()),
        MlpConfig::new(vec![64]).init(&device)?,
        &src,
        &stuck_cfg,
        &device,
        30,
        0.05,
    )?;
    assert!(!stuck.passed);
    assert!(
        stuck.message.contains("cannot fit one batch") && stuck.message.contains("labels"),
        "{}",
        stuck.message
    );
    Ok(())
}

#[test]
fn the_lr_finder_suggests_a_rate_in_the_useful_range_and_plots_it() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(data.path(), 512, 16)?;
    let src = train_source(data.path(), Normalization::fashion_mnist())?;
    let device = Device::flex();
    device.seed(3);
    let cfg = TrainConfig {
        batch_size: 32,
        ..TrainConfig::default()
    };
    let out = tempfile::tempdir()?;
    let plot = out.path().join("lr_find.png");
    let sweep = LrFindConfig {
        start_lr: 1e-5,
        end_lr: 10.0,
        steps: 60,
        ..LrFindConfig::default()
    };
    let r = lr_find(
        &Classification::new(cfg.loss.clone()),
        ReferenceCnnConfig::new().init(&device)?,
        &src,
        &cfg,
        &device,
        &sweep,
        Some(&plot),
    )?;
    let suggested = r.suggested.expect("a suggestion");
    println!(
        "suggested {suggested:e} after {} steps; losses {:?}",
        r.lrs.len(),
        r.losses
    );
    // SGD with momentum on this CNN trains well between 0.005 and 0.2 (the default run uses 0.05).
    assert!((1e-3..=1.0).contains(&suggested), "{suggested}");
    assert!(r.lrs.windows(2).all(|w| w[1] > w[0]));
    assert!(std::fs::read(&plot)?.starts_with(b"\x89PNG"));
    Ok(())
}
