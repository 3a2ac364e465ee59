//! Train the reference CNN on the vendored Fashion-MNIST subset with the library crates directly —
//! what `kiln train` does, without the CLI.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example train         # 1 epoch on 9,000 images, ~20 s on 2 cores
//! ```

use burn::data::dataset::Dataset;
use burn::module::Module;
use kiln_data::{MnistDataset, MnistSplit, random_split};
use kiln_models::ReferenceCnnConfig;
use kiln_train::{ClassificationSource, DeviceSpec, FitOutputs, TrainConfig, evaluate, fit};
use kiln_transforms::Normalization;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist-mini");
    let train = MnistDataset::from_dir(root, MnistSplit::Train)?;
    let test = MnistDataset::from_dir(root, MnistSplit::Test)?;

    // Hold out 10% for validation; the split is seeded.
    let (train_idx, val_idx) = random_split(train.len(), 0.1, 42);
    let norm = Normalization::fashion_mnist();
    let train_src = ClassificationSource::subset(train.clone(), train_idx, norm.clone())?;
    let val_src = ClassificationSource::subset(train, val_idx, norm.clone())?;

    let device = DeviceSpec::Flex.device()?;
    let model = ReferenceCnnConfig::new().init(&device)?;
    let cfg = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut print = |r: &kiln_train::EpochRecord| println!("{r:?}");
    let result = fit(
        model,
        &train_src,
        Some(&val_src),
        &cfg,
        &device,
        FitOutputs {
            progress: true,
            on_epoch: Some(&mut print),
            on_warning: Some(&mut |w: &str| eprintln!("warning: {w}")),
            ..Default::default()
        },
    )?;

    let metrics = evaluate(
        &result.model.valid(),
        &ClassificationSource::new(test, norm),
        1000,
        &device,
    )?;
    println!("test_loss={:.4} test_acc={:.4}", metrics.loss, metrics.accuracy);
    Ok(())
}
