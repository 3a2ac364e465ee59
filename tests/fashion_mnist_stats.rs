//! The Fashion-MNIST normalization preset is what `ChannelStats` computes from the training set.

mod common;

use kiln_data::{Gray, MnistDataset, MnistSplit};
use kiln_transforms::{ChannelStats, Normalization, Scale, dataset_stats};

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

#[test]
fn parallel_dataset_stats_equal_numpy_for_any_worker_count() -> anyhow::Result<()> {
    // numpy, float64, on the vendored 10,000 training images:
    //   x = np.frombuffer(gzip.open("train-images-idx3-ubyte.gz").read()[16:], np.uint8) / 255
    //   x.mean() = 0.2863089170668267, x.std() = 0.35401796410642805
    let mut reference = None;
    for workers in [0, 1, 3] {
        let train = MnistDataset::from_dir(common::vendored_data(), MnistSplit::Train)?;
        let mut calls = 0;
        let stats = dataset_stats(train, workers, |done, total| {
            calls += 1;
            assert!(done <= total && total == 10_000);
        })?;
        assert_eq!(calls, 40, "one progress call per 256-image chunk");
        let (mean, std) = stats.mean_std(Scale::Unit)?;
        assert!((mean[0] - 0.286_308_917_066_826_7).abs() < 1e-12, "{mean:?}");
        assert!((std[0] - 0.354_017_964_106_428_05).abs() < 1e-12, "{std:?}");
        // Byte scale: the same numbers × 255.
        let (mean_b, _) = stats.mean_std(Scale::Byte)?;
        assert!((mean_b[0] - 255.0 * mean[0]).abs() < 1e-9);
        match &reference {
            None => reference = Some(stats),
            Some(r) => assert_eq!(&stats, r, "{workers} workers"),
        }
    }
    Ok(())
}

#[test]
fn dataset_stats_are_in_the_models_channel_order() -> anyhow::Result<()> {
    // CIFAR records store R, G, B planes; kiln reads them as BGR and reports statistics in RGB.
    let dir = tempfile::tempdir()?;
    let mut bytes = Vec::new();
    for (r, g, b) in [(10u8, 20u8, 30u8), (30, 40, 50)] {
        bytes.push(0);
        for v in [r, g, b] {
            bytes.extend(std::iter::repeat_n(v, 1024));
        }
    }
    std::fs::write(dir.path().join("test_batch.bin"), bytes)?;
    let ds = kiln_data::CifarDataset::cifar10(dir.path(), kiln_data::CifarSplit::Test)?;
    let (mean, std) = dataset_stats(ds, 2, |_, _| ())?.mean_std(Scale::Byte)?;
    assert_eq!(mean, vec![20.0, 30.0, 40.0], "R, G, B");
    assert_eq!(std, vec![10.0, 10.0, 10.0]);
    Ok(())
}

#[test]
fn stats_are_cached_under_a_fingerprint_of_the_files() -> anyhow::Result<()> {
    use kiln_transforms::{dataset_stats_cached, fingerprint};
    let dir = tempfile::tempdir()?;
    for (class, value) in [("a", 10u8), ("b", 50u8)] {
        std::fs::create_dir_all(dir.path().join(class))?;
        image::RgbImage::from_pixel(4, 4, image::Rgb([value, value, value]))
            .save(dir.path().join(class).join("0.png"))?;
    }
    let cache = dir.path().join(".kiln-stats.json");
    let run = || -> anyhow::Result<(Vec<f64>, bool)> {
        let ds = kiln_data::ImageFolder::new(dir.path())?;
        let fp = fingerprint(ds.samples().iter().map(|(p, _)| p.as_path()))?;
        let (stats, cached) = dataset_stats_cached(ds, 2, &cache, &fp, |_, _| ())?;
        Ok((stats.mean_std(Scale::Byte)?.0, cached))
    };
    assert_eq!(run()?, (vec![30.0; 3], false), "computed and written");
    assert_eq!(run()?, (vec![30.0; 3], true), "read back");
    // Another image of another size: the fingerprint changes, the stats are recomputed.
    image::RgbImage::from_pixel(8, 8, image::Rgb([90, 90, 90])).save(dir.path().join("b/0.png"))?;
    let (mean, cached) = run()?;
    assert!(!cached);
    assert!(
        (mean[0] - (16.0 * 10.0 + 64.0 * 90.0) / 80.0).abs() < 1e-12,
        "{mean:?}"
    );
    // A corrupt cache is recomputed, not an error.
    std::fs::write(&cache, "not json")?;
    assert!(!run()?.1);
    Ok(())
}

#[test]
fn mnist_preset_equals_its_training_set_when_installed() -> anyhow::Result<()> {
    let root = std::path::Path::new("/usr/share/datasets/mnist");
    if !root.is_dir() {
        eprintln!(
            "skipped: {} absent (MNIST is not packaged on this machine)",
            root.display()
        );
        return Ok(());
    }
    let (mean, std) = stats_of(root)?;
    let preset = Normalization::mnist();
    // The preset is rounded to 4 decimals.
    assert!((f64::from(preset.mean[0]) - mean).abs() < 5e-5, "{mean}");
    assert!((f64::from(preset.std[0]) - std).abs() < 5e-5, "{std}");
    Ok(())
}
