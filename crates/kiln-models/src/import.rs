//! Importing torchvision weights (`.pth` or `.safetensors` state dicts) into kiln's ResNets.
//!
//! Keys are renamed from torchvision's layout ([`ResNet::torchvision_key_map`]); Burn's
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

use crate::{ModelError, ResNet};

/// Loads a torchvision ResNet state dict (`.pth`/`.pt`, or `.safetensors`) into `model`, which must
/// be the matching architecture.
///
/// # Errors
///
/// [`ModelError::Weights`] naming the file and the tensors that are missing, unused or of the wrong
/// shape.
pub fn load_torchvision_resnet(mut model: ResNet, path: &Path) -> Result<ResNet, ModelError> {
    let fail = |reason: String| ModelError::Weights {
        action: "load",
        path: path.to_path_buf(),
        reason,
    };
    let pairs = model.torchvision_key_map();
    let remapper = KeyRemapper::from_patterns(pairs).map_err(|e| fail(e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let result = if ext == "safetensors" {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remapper)
            .allow_partial(true);
        model.load_from(&mut store).map_err(|e| fail(format!("{e:?}")))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .remap(remapper)
            .map_indices_contiguous(false)
            .allow_partial(true);
        model.load_from(&mut store).map_err(|e| fail(format!("{e:?}")))?
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
            show(result.errors.iter().map(|e| format!("{e:?}")).collect()),
            result.missing.len(),
            show(result.missing.iter().map(|(k, _)| k.clone()).collect()),
            unused.len(),
            show(unused.into_iter().cloned().collect()),
        )));
    }
    Ok(model)
}
