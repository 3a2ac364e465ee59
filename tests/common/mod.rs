//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use kiln_data::idx::{encode_idx, read_idx};

/// The vendored Fashion-MNIST subset in the source tree (found from whichever package includes
/// this module: the root package or `crates/kiln`).
pub fn vendored_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("data/fashion-mnist-mini"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("data/fashion-mnist-mini"))
}

/// Writes the first `n_train` training and `n_test` test samples of the vendored subset into
/// `dir` as raw (uncompressed) idx files, for tests that need small real data.
pub fn write_tiny_fashion_mnist(dir: &Path, n_train: usize, n_test: usize) -> anyhow::Result<()> {
    let src = vendored_data();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let images = read_idx(&src.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
        let labels = read_idx(&src.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
        anyhow::ensure!(
            images.dims[0] >= n,
            "vendored subset has only {} {prefix} images",
            images.dims[0]
        );
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[n, 28, 28], &images.data[..n * 784]),
        )?;
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[n], &labels.data[..n]),
        )?;
    }
    Ok(())
}

/// The training split in `dir`, normalised with the Fashion-MNIST preset.
pub fn fmnist_train_source(
    dir: &Path,
) -> anyhow::Result<
    kiln_train::ClassificationSource<kiln_data::MnistDataset, kiln_data::MnistItem, kiln_data::Gray>,
> {
    Ok(kiln_train::ClassificationSource::new(
        kiln_data::MnistDataset::from_dir(dir, kiln_data::MnistSplit::Train)?,
        kiln_transforms::Normalization::fashion_mnist(),
    ))
}

/// The backends this test build runs its backend-generic tests on: flex always, and wgpu when the
/// `wgpu` feature is compiled in and an adapter answers (Mesa's software Vulkan in CI). Without
/// an adapter the wgpu part is skipped with the reason on stderr — unless `KILN_REQUIRE_WGPU` is
/// set (`.ci/run` sets it once the driver is installed), where a missing adapter fails the test.
pub fn backends() -> Vec<(&'static str, burn::prelude::Device)> {
    let mut v = vec![("flex", burn::prelude::Device::flex())];
    let wgpu = kiln_train::DeviceSpec::Wgpu;
    if wgpu.is_compiled() {
        match wgpu.device() {
            Ok(d) => v.push(("wgpu", d)),
            Err(e) if std::env::var_os("KILN_REQUIRE_WGPU").is_some() => {
                panic!("KILN_REQUIRE_WGPU is set, but {e}")
            }
            Err(e) => eprintln!("skipped on wgpu: {e}"),
        }
    }
    v
}

/// Whether wgpu is pinned to Mesa's software Vulkan (lavapipe), as `.ci/run` pins it with
/// `VK_ICD_FILENAMES`: slow, and with a 128 MiB limit on one buffer.
pub fn wgpu_is_lavapipe() -> bool {
    std::env::var("VK_ICD_FILENAMES").is_ok_and(|f| f.contains("lvp_icd"))
}

/// Runs the test `name` of this test binary again in a child process (`--exact NAME
/// --nocapture`), with `configure` setting its environment (a variable that tells the test it is
/// the child, drivers hidden, `RUST_BACKTRACE`), and returns its stdout and stderr: for checks on
/// what a user's terminal would show. Fails unless the child ran that one test and it passed.
pub fn run_test_in_child(
    name: &str,
    configure: impl FnOnce(&mut std::process::Command),
) -> anyhow::Result<String> {
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.args(["--exact", name, "--nocapture"]);
    configure(&mut child);
    let out = child.output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "child failed:\n{text}");
    anyhow::ensure!(text.contains("1 passed"), "the child ran no test:\n{text}");
    Ok(text)
}
