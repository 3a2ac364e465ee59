//! Importing torchvision weights (`.pth` or `.safetensors` state dicts) into kiln's models.
//!
//! [`import_torchvision`] turns a state dict into a kiln checkpoint for any registered
//! architecture with a torchvision counterpart ([`ZooModel::torchvision_key_map`]); what
//! `kiln import` runs. Keys are renamed from torchvision's layout ([`ResNet::torchvision_key_map`]); Burn's
//! `PyTorchToBurnAdapter` transposes linear weights and renames BatchNorm's `weight`/`bias` to
//! `gamma`/`beta`. Every model tensor must be found and every file tensor used (BatchNorm's
//! `num_batches_tracked` aside), or the import fails naming them.
//!
//! BatchNorm: PyTorch stores the *unbiased* running variance and Burn updates it with the *biased*
//! batch variance during training. In eval mode both use the stored value the same way, so imported
//! models give PyTorch's logits (checked to 1e-4 on the fixture); after fine-tuning in Burn the
//! running variance drifts slightly lower than PyTorch's would (factor (n−1)/n per update).

use std::path::Path;

use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use burn::prelude::Device;

use crate::zoo::{ModelFn, ZooModel};
use crate::{ModelConfig, ModelError, PretrainedSpec, ResNet};

/// Reads the torchvision state dict `weights` into the model `spec.architecture` names (for
/// `spec.input_chw` and `spec.num_classes`) and writes it as a kiln checkpoint at `out` with
/// `spec` next to it. Returns the checkpoint's path.
///
/// # Errors
///
/// [`ModelError::InvalidConfig`] for a spec without an architecture or an architecture without
/// torchvision weights; the load's errors (naming missing and unused tensors); the write's.
pub fn import_torchvision(
    weights: &Path,
    spec: &PretrainedSpec,
    out: &Path,
    device: &Device,
) -> Result<std::path::PathBuf, ModelError> {
    let arch: &ModelConfig = spec
        .architecture
        .as_ref()
        .ok_or_else(|| ModelError::InvalidConfig {
            field: "architecture",
            value: spec.model.clone(),
            reason: "the spec must name the architecture to import into",
        })?;
    arch.build_with(
        spec.input_chw,
        spec.num_classes,
        device,
        Import { weights, spec, out },
    )?
}

struct Import<'a> {
    weights: &'a Path,
    spec: &'a PretrainedSpec,
    out: &'a Path,
}

impl ModelFn for Import<'_> {
    type Output = Result<std::path::PathBuf, ModelError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        let model = load_torchvision(model, self.weights)?;
        crate::weights::save_weights(&model, self.out, Some(self.spec))
    }
}

/// Loads a torchvision state dict into `model` through its key map.
///
/// # Errors
///
/// [`ModelError::InvalidConfig`] when the model has no torchvision counterpart; otherwise as
/// [`load_torchvision_resnet`].
pub fn load_torchvision<M: ZooModel>(model: M, path: &Path) -> Result<M, ModelError> {
    let pairs = model.torchvision_key_map().ok_or(ModelError::InvalidConfig {
        field: "architecture",
        value: model.name().to_string(),
        reason: "torchvision has no such model, so there are no torchvision weights to import",
    })?;
    load_with_key_map(model, pairs, path)
}

/// Loads a torchvision ResNet state dict (`.pth`/`.pt`, or `.safetensors`) into `model`, which must
/// be the matching architecture.
///
/// # Errors
///
/// [`ModelError::Weights`] naming the file and the tensors that are missing, unused or of the wrong
/// shape.
pub fn load_torchvision_resnet(model: ResNet, path: &Path) -> Result<ResNet, ModelError> {
    let pairs = model.torchvision_key_map();
    load_with_key_map(model, pairs, path)
}

/// Loads a torchvision detector's weights (e.g. an `FCOS` state dict, `.pth` or `.safetensors`)
/// into `model` through its [`Detector::torchvision_key_map`](crate::detector::Detector::torchvision_key_map),
/// refusing a file whose tensors do not all fit (a different backbone depth, class count or
/// width).
///
/// # Errors
///
/// [`ModelError::Weights`] naming the file and the first tensors that did not fit.
pub fn load_torchvision_detector<M: crate::detector::Detector>(
    model: M,
    path: &Path,
) -> Result<M, ModelError> {
    let pairs = model.torchvision_key_map();
    load_with_key_map(model, pairs, path)
}

/// `(regex, replacement)` pairs from `(torchvision prefix, kiln prefix)` pairs (each ending in a
/// dot): torchvision → kiln names for the import, kiln → torchvision (`to_torchvision`) for the
/// export.
pub(crate) fn prefix_map(pairs: Vec<(String, String)>, to_torchvision: bool) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(tv, kiln)| {
            let (from, to) = if to_torchvision { (kiln, tv) } else { (tv, kiln) };
            (format!("^{}", from.replace('.', r"\.")), to)
        })
        .collect()
}

fn load_with_key_map<M: burn::module::Module>(
    mut model: M,
    pairs: Vec<(String, String)>,
    path: &Path,
) -> Result<M, ModelError> {
    let fail = |reason: String| ModelError::Weights {
        action: "load",
        path: path.to_path_buf(),
        reason,
    };
    let remapper = KeyRemapper::from_patterns(pairs).map_err(|e| fail(e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Neither store validates or insists on completeness: the result lists shape mismatches,
    // missing and unused tensors, reported together (and briefly) below.
    let result = if ext == "safetensors" {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remapper)
            .validate(false)
            .allow_partial(true);
        model.load_from(&mut store).map_err(|e| fail(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .remap(remapper)
            .map_indices_contiguous(false)
            .validate(false)
            .allow_partial(true);
        model.load_from(&mut store).map_err(|e| fail(e.to_string()))?
    };
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    if !result.errors.is_empty() || !result.missing.is_empty() || !unused.is_empty() {
        let show = |v: Vec<String>| v.into_iter().take(6).collect::<Vec<_>>().join(", ");
        return Err(fail(format!(
            "{} errors [{}], {} model tensors not in the file [{}], {} file tensors not used [{}] — is it the same architecture?",
            result.errors.len(),
            show(result.errors.iter().map(ToString::to_string).collect()),
            result.missing.len(),
            show(result.missing.iter().map(|(k, _)| k.clone()).collect()),
            unused.len(),
            show(unused.into_iter().cloned().collect()),
        )));
    }
    Ok(model)
}
