//! kiln's flex kernels inside whole models: the same model, the same batch, with the kernels on and
//! off (`kernels::set_enabled`), through a training forward, backward, an SGD step and an
//! inference forward. Per-op comparisons with Burn are in `crates/kiln-models/src/kernels/tests.rs`.
//!
//! One test function: the switch is process-wide, so the comparisons run in sequence.

use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_models::{Classifier, MlpConfig, ReferenceCnnConfig, ResNetConfig, ResNetKind, kernels};
use kiln_train::{LossConfig, OptimizerConfig};

/// Values in [-1, 1) from a xorshift generator.
fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape(shape)
}

fn values<const D: usize>(t: Tensor<D>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Training logits, loss, the logits of the same batch in eval mode after one SGD step (which
/// folds in the gradients and the updated running statistics) — with the kernels on or off.
fn one_step<M: Classifier>(
    model: M,
    x: &Tensor<4>,
    y: &Tensor<1, Int>,
    on: bool,
) -> anyhow::Result<[Vec<f32>; 3]> {
    kernels::set_enabled(on);
    let logits = model.logits(x.clone());
    let loss = LossConfig::default().forward(logits.clone(), y.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = OptimizerConfig::default().build(vec![])?;
    let model = optim.step(0.1, model, grads);
    let after = model.valid().logits(x.clone().without_autodiff());
    kernels::set_enabled(true);
    Ok([values(logits)?, values(loss)?, values(after)?])
}

#[track_caller]
fn assert_close(what: &str, on: &[f32], off: &[f32], bound: f32) {
    let scale = off.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = on
        .iter()
        .zip(off)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= bound * scale && on.len() == off.len(),
        "{what}: max |on − off| = {worst:e} (scale {scale}, bound {bound:e})"
    );
}

/// `make` builds the model; it is called twice with the same seed, so both copies start from the
/// same weights but keep their own BatchNorm running statistics (clones would share them).
fn compare<M: Classifier>(
    name: &str,
    make: impl Fn(&Device) -> anyhow::Result<M>,
    chw: [usize; 3],
) -> anyhow::Result<()> {
    let ad = Device::flex().autodiff();
    let x = random([6, chw[0], chw[1], chw[2]], 3, &ad);
    let y = Tensor::<1, Int>::from_data([0, 1, 2, 3, 4, 5], &ad);
    let build = || -> anyhow::Result<M> {
        // The generator is process-wide; this test binary has one test, so nothing races it.
        Device::flex().seed(7);
        let model = make(&Device::flex())?.fork(&ad).train();
        // Draw every lazily initialised parameter now, from the seed just set.
        let _ = model.valid().logits(x.clone().without_autodiff());
        Ok(model)
    };
    let [logits_on, loss_on, after_on] = one_step(build()?, &x, &y, true)?;
    let [logits_off, loss_off, after_off] = one_step(build()?, &x, &y, false)?;
    // Per-op agreement is 1e-4 relative; through a whole network and an SGD step the differences
    // (summation order) compound a little.
    assert_close(&format!("{name}: training logits"), &logits_on, &logits_off, 1e-4);
    assert_close(&format!("{name}: loss"), &loss_on, &loss_off, 1e-4);
    assert_close(
        &format!("{name}: logits after a step"),
        &after_on,
        &after_off,
        5e-4,
    );
    // The step changed the model (a test that cannot fail would not compare anything).
    assert!(
        after_on.iter().zip(&logits_on).any(|(a, b)| (a - b).abs() > 1e-3),
        "{name}: the step left the logits unchanged"
    );
    Ok(())
}

#[test]
fn models_give_the_same_results_with_the_kernels_on_and_off() -> anyhow::Result<()> {
    let device = Device::flex();
    compare(
        "ReferenceCnn",
        |d| Ok(ReferenceCnnConfig::new().init(d)?),
        [1, 28, 28],
    )?;
    compare(
        "ReferenceCnn without BatchNorm",
        |d| {
            Ok(ReferenceCnnConfig::new()
                .with_batch_norm(false)
                .with_height(12)
                .with_width(12)
                .init(d)?)
        },
        [1, 12, 12],
    )?;
    // Stride-2 convolutions, 1×1 projection shortcuts, identity activations before the addition.
    compare(
        "CIFAR ResNet-20",
        |d| Ok(ResNetConfig::new(ResNetKind::Cifar20).init(d)?),
        [3, 16, 16],
    )?;
    compare(
        "MLP with BatchNorm1d",
        |d| {
            Ok(MlpConfig::new(vec![32])
                .with_num_classes(6)
                .with_input_chw([1, 8, 8])
                .init(d)?)
        },
        [1, 8, 8],
    )?;

    // The switch: off, nothing applies; on again, flex f32 tensors do.
    let x = Tensor::<2>::zeros([2, 2], &device);
    kernels::set_enabled(false);
    assert!(!kernels::applies_to(&x));
    kernels::set_enabled(true);
    assert!(kernels::applies_to(&x));
    Ok(())
}
