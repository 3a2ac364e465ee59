//! The Fashion-MNIST normalization preset is what `ChannelStats` computes from the training set.

mod common;

use kiln_data::{Gray, MnistDataset, MnistSplit};
use kiln_transforms::{ChannelStats, Normalization, Scale};

fn stats_of(dir: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    let train = MnistDataset::from_dir(dir, MnistSplit::Train)?;
    let mut stats = ChannelStats::new(1);
    stats.add_hwc::<Gray>(train.pixels());
    let (mean, std) = stats.mean_std(Scale::Unit)?;
    Ok((mean[0], std[0]))
}

#[test]
fn preset_is_close_to_the_vendored_subset_statistics() -> anyhow::Result<()> {
    // numpy on the first 10,000 training images (data/fashion-mnist-mini):
    //   x = idx("train-images-idx3-ubyte.gz") / 255; x.mean(), x.std()
    let (mean, std) = stats_of(&common::vendored_data())?;
    let preset = Normalization::fashion_mnist();
    assert!(
        (mean - f64::from(preset.mean[0])).abs() < 0.005,
        "subset mean {mean}"
    );
    assert!((std - f64::from(preset.std[0])).abs() < 0.005, "subset std {std}");
    Ok(())
}

#[test]
fn preset_equals_full_training_set_statistics() -> anyhow::Result<()> {
    let full = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    if !full.is_dir() {
        eprintln!(
            "skipped: {} absent (apt-get install dataset-fashion-mnist)",
            full.display()
        );
        return Ok(());
    }
    // Python over all 47,040,000 training pixels: Σx = 3431114169, Σx² = 631470052347 →
    // mean 0.2860405969887955, std 0.3530242445149226 (unit scale, population std).
    let (mean, std) = stats_of(full)?;
    assert!((mean - 0.286_040_596_988_795_5).abs() < 1e-12, "{mean}");
    assert!((std - 0.353_024_244_514_922_6).abs() < 1e-12, "{std}");
    let preset = Normalization::fashion_mnist();
    assert!((f64::from(preset.mean[0]) - mean).abs() < 1e-7);
    assert!((f64::from(preset.std[0]) - std).abs() < 1e-7);
    Ok(())
}
