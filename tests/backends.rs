//! The backend-generic tests: each runs on every backend this build has (`common::backends()`:
//! flex, and wgpu with `--features wgpu` — on Mesa's software Vulkan in CI). Tolerances per
//! backend are in `docs/gpu.md`: flex is the reference; wgpu's logits and gradients agree with
//! it within 1e-4 relative to the largest magnitude (float32 sums in another order).

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::{Distribution, Int, TensorData};
use kiln_models::{Classifier, ReferenceCnnConfig};
use kiln_train::{FitOutputs, TrainConfig, fit};

/// Every float tensor's gradient, in visiting order.
struct Grads<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = p.grad(self.0) {
            self.1.push(g.into_data().iter::<f32>().collect());
        }
    }
}

/// The reference CNN with its weights drawn (on flex), a batch and its labels. Drawn once and
/// shared by every backend: Burn's generator is process-global on flex, so another test running
/// at the same time would change a second draw.
fn weights_and_batch() -> (kiln_models::ReferenceCnn, TensorData, TensorData) {
    let flex = Device::flex();
    flex.seed(21);
    let model = ReferenceCnnConfig::new().init(&flex).unwrap();
    // Parameters are drawn lazily, on first use: draw them now, before the model is cloned.
    let _ = model.logits(Tensor::zeros([1, 1, 28, 28], &flex));
    let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.0, 1.0), &flex).into_data();
    let y = TensorData::new(vec![0i64, 1, 2, 3, 4, 5, 6, 7], [8]);
    (model, x, y)
}

/// Logits and every parameter's gradient of one cross-entropy step of `model` on `device`.
fn forward_backward(
    model: kiln_models::ReferenceCnn,
    x: TensorData,
    y: TensorData,
    device: &Device,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let ad = device.clone().autodiff();
    let model = model.fork(&ad).train();
    let logits = model.logits(Tensor::from_data(x, &ad));
    let loss = CrossEntropyLossConfig::new()
        .init(&ad)
        .forward(logits.clone(), Tensor::<1, Int>::from_data(y, &ad));
    let grads = loss.backward();
    let mut visitor = Grads(&grads, Vec::new());
    model.visit(&mut visitor);
    (logits.inner().into_data().iter::<f32>().collect(), visitor.1)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn one_forward_backward_matches_flex_on_every_backend() {
    let (model, x, y) = weights_and_batch();
    let (want_logits, want_grads) = forward_backward(model.clone(), x.clone(), y.clone(), &Device::flex());
    assert_eq!(want_grads.len(), 11, "every trainable tensor has a gradient");
    for (name, device) in common::backends() {
        let (logits, grads) = forward_backward(model.clone(), x.clone(), y.clone(), &device);
        let worst_logits = max_rel_diff(&want_logits, &logits);
        assert!(
            worst_logits <= 1e-4,
            "{name}: logits differ by {worst_logits:e} (relative)"
        );
        assert_eq!(grads.len(), want_grads.len(), "{name}");
        let mut worst_grad = 0f32;
        for (i, (a, b)) in want_grads.iter().zip(&grads).enumerate() {
            let worst = max_rel_diff(a, b);
            assert!(
                worst <= 1e-4,
                "{name}: gradient {i} differs by {worst:e} (relative)"
            );
            worst_grad = worst_grad.max(worst);
        }
        eprintln!(
            "{name}: logits within {worst_logits:.1e}, 11 gradients within {worst_grad:.1e} of flex (relative)"
        );
    }
}

#[test]
fn the_reference_cnn_learns_on_every_backend() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    common::write_tiny_fashion_mnist(dir.path(), 64, 16)?;
    let src = common::fmnist_train_source(dir.path())?;
    for (name, device) in common::backends() {
        // 4 epochs × 8 steps of 8: a few dozen steps, affordable on a software GPU.
        let cfg = TrainConfig {
            epochs: 4,
            batch_size: 8,
            lr: 0.05,
            seed: 3,
            num_workers: 0,
            ..TrainConfig::default()
        };
        device.seed(3);
        let model = ReferenceCnnConfig::new().init(&device)?;
        let r = fit(model, &src, None, &cfg, &device, FitOutputs::default())?;
        let losses: Vec<f64> = r.epochs.iter().map(|e| e.train_loss).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(
            losses[3] < 0.7 * losses[0],
            "{name}: training loss per epoch {losses:?}"
        );
        eprintln!(
            "{name}: loss {:.3} → {:.3}, {:.1} img/s",
            losses[0], losses[3], r.train_images_per_s
        );
    }
    Ok(())
}

/// With every graphics driver hidden from wgpu (no Vulkan ICD, no EGL vendor library), asking for
/// the wgpu device is a clear [`kiln_train::DeviceError`] naming the cause, not a panic. Runs
/// itself again as a child process, since the drivers are found once per process.
#[cfg(all(feature = "wgpu", target_os = "linux"))]
#[test]
fn no_wgpu_adapter_is_a_clear_error() -> anyhow::Result<()> {
    const CHILD: &str = "KILN_TEST_NO_ADAPTER_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let err = match kiln_train::DeviceSpec::Wgpu.device() {
            Ok(_) => anyhow::bail!("an adapter answered with every driver hidden"),
            Err(e) => e.to_string(),
        };
        // The backend's own message (from its device thread), then kiln's hint.
        assert!(err.contains("device `wgpu` cannot be used"), "{err}");
        assert!(err.contains("no adapter found"), "{err}");
        assert!(err.contains("mesa-vulkan-drivers"), "{err}");
        return Ok(());
    }
    let runtime_dir = tempfile::tempdir()?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "no_wgpu_adapter_is_a_clear_error", "--nocapture"])
        .env(CHILD, "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/kiln-test-icd.json")
        .env(
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            "/nonexistent/kiln-test-egl.json",
        )
        .env("XDG_RUNTIME_DIR", runtime_dir.path())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    Ok(())
}
