//! Same seed, same run. In its own test binary on purpose: Burn's `Device::seed` sets a
//! *process-global* generator on flex, so a model initialised concurrently by another test in the
//! same process would draw from the same stream and break the comparison (docs/pitfalls.md).

mod common;

use burn::prelude::*;
use kiln_models::ReferenceCnnConfig;
use kiln_train::{FitOutputs, TrainConfig, fit};

#[test]
fn same_seed_same_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 96, 16)?;
    let run = || -> anyhow::Result<Vec<f64>> {
        let src = common::fmnist_train_source(dir.path())?;
        let device = Device::flex();
        device.seed(11);
        let model = ReferenceCnnConfig::new().init(&device)?;
        let cfg = TrainConfig {
            epochs: 2,
            batch_size: 32,
            seed: 11,
            ..TrainConfig::default()
        };
        Ok(fit(model, &src, None, &cfg, &device, FitOutputs::default())?
            .epochs
            .iter()
            .map(|r| r.train_loss)
            .collect())
    };
    let (a, b) = (run()?, run()?);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    Ok(())
}
