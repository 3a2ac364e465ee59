//! Saving and loading weights: kiln checkpoints (Burn's burnpack, `.bpk`) and an export to
//! torchvision's safetensors layout that PyTorch loads back into the matching model.
//!
//! Every write is atomic: the bytes go to a temporary file in the same folder, which is flushed to
//! disk and then renamed over the target, so a crash or a full disk leaves the previous file intact.
//! A [`PretrainedSpec`] given to a save travels with the weights: next to a `.bpk` as
//! `<weights>.kiln.json`, inside a `.safetensors` file as the `kiln.pretrained` metadata entry.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::weights::{load_weights, save_weights};
//! use kiln_models::{PretrainedSpec, ResNetConfig, ResNetKind};
//! use kiln_transforms::NormalizationSpec;
//!
//! let device = Device::flex();
//! let dir = tempfile::tempdir()?;
//! let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device)?;
//! let spec = PretrainedSpec {
//!     model: "cifar-resnet20".into(),
//!     architecture: None,
//!     normalization: NormalizationSpec::Cifar10,
//!     input_chw: [3, 32, 32],
//!     num_classes: 10,
//!     class_names: vec![],
//!     eval: vec![],
//!     jpeg_draft: false,
//!     detector: None,
//! };
//! let path = save_weights(&model, &dir.path().join("model.bpk"), Some(&spec))?;
//! let fresh = ResNetConfig::new(ResNetKind::Cifar20).init(&device)?;
//! let (_loaded, restored) = load_weights(fresh, &path)?;
//! assert_eq!(restored, Some(spec));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore};

use crate::{ModelError, PretrainedSpec};

/// The safetensors metadata key under which a [`PretrainedSpec`] is stored (as JSON).
pub const SPEC_METADATA_KEY: &str = "kiln.pretrained";

/// Writes `path` atomically: `write` fills a temporary file next to it, which is synced and
/// renamed over `path`. On any error the temporary file is removed and `path` is untouched.
///
/// # Errors
///
/// [`ModelError::Weights`] naming `path` and what failed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), ModelError> {
    kiln_data::paths::write_atomically(path, write).map_err(|e| ModelError::Weights {
        action: "save",
        path: path.to_path_buf(),
        reason: match e {
            kiln_data::DataError::Write { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

/// Saves `model` as a kiln checkpoint (burnpack) at `path`, atomically, with `spec` next to it
/// (`<path>.kiln.json`). Returns `path`.
///
/// # Errors
///
/// [`ModelError::Weights`] when either file cannot be written.
pub fn save_weights<M: Module>(
    model: &M,
    path: &Path,
    spec: Option<&PretrainedSpec>,
) -> Result<PathBuf, ModelError> {
    write_atomically(path, |tmp| {
        model.clone().save_file(tmp).map_err(|e| e.to_string())?;
        // Burn's recorder may add its extension; the temporary file must be the one renamed.
        if tmp.exists() {
            Ok(())
        } else {
            Err(format!("the writer did not create {}", tmp.display()))
        }
    })?;
    if let Some(spec) = spec {
        spec.save_next_to(path)?;
    }
    Ok(path.to_path_buf())
}

/// Loads a kiln checkpoint written by [`save_weights`] into `model` (which must be the same
/// architecture), and the spec kept next to it when there is one.
///
/// # Errors
///
/// [`ModelError::Weights`] for a missing or unreadable file, another architecture, or an
/// unreadable spec.
pub fn load_weights<M: Module>(model: M, path: &Path) -> Result<(M, Option<PretrainedSpec>), ModelError> {
    let fail = |reason: String| ModelError::Weights {
        action: "load",
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let model = model
        .try_load_file(path)
        .map_err(|e| fail(format!("{e} — was it saved from the same architecture?")))?;
    let spec = if PretrainedSpec::sidecar_path(path).exists() {
        Some(PretrainedSpec::load_next_to(path)?)
    } else {
        None
    };
    Ok((model, spec))
}

/// Exports a model's weights (a ResNet's: the models torchvision has) in torchvision's state-dict layout (`conv1.weight`,
/// `layer1.0.bn1.running_var`, `fc.weight` as `[out, in]`, ...) to a `.safetensors` file, with
/// `spec` in its metadata. PyTorch loads it with
/// `model.load_state_dict(safetensors.torch.load_file(path))` into the matching torchvision model
/// (BatchNorm's `num_batches_tracked` is not written; PyTorch fills it in).
///
/// # Errors
///
/// [`ModelError::Export`] for a model torchvision does not have; [`ModelError::Weights`] when
/// the file cannot be written.
pub fn export_torchvision_safetensors<M: crate::ZooModel>(
    model: &M,
    path: &Path,
    spec: Option<&PretrainedSpec>,
) -> Result<PathBuf, ModelError> {
    let fail = |reason: String| ModelError::Weights {
        action: "save",
        path: path.to_path_buf(),
        reason,
    };
    let patterns = model
        .torchvision_export_key_map()
        .ok_or_else(|| ModelError::Export {
            format: "torchvision's layout",
            layer: model.name().to_string(),
            reason: "torchvision has no such model (`kiln export --format onnx` writes every model)".into(),
        })?;
    let remapper = KeyRemapper::from_patterns(patterns).map_err(|e| fail(e.to_string()))?;
    let spec_json = spec
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| fail(e.to_string()))?;
    write_atomically(path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp)
            .with_to_adapter(BurnToPyTorchAdapter)
            .remap(remapper)
            .overwrite(true)
            .metadata("format", "pt");
        if let Some(json) = spec_json {
            store = store.metadata(SPEC_METADATA_KEY, json);
        }
        model.save_into(&mut store).map_err(|e| e.to_string())
    })?;
    Ok(path.to_path_buf())
}

/// Tensor name → (dtype, shape), as a `.safetensors` header lists them.
pub type TensorIndex = BTreeMap<String, (String, Vec<usize>)>;

/// Reads the header of a `.safetensors` file: `(tensor name → (dtype, shape))` and the metadata.
///
/// # Errors
///
/// [`ModelError::Weights`] for an unreadable file or a malformed header.
pub fn safetensors_header(path: &Path) -> Result<(TensorIndex, BTreeMap<String, String>), ModelError> {
    use std::io::Read;
    let fail = |reason: String| ModelError::Weights {
        action: "load",
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| fail(format!("not a safetensors file (no header length: {e})")))?;
    let n = u64::from_le_bytes(len);
    if n > file_len.saturating_sub(8) || n > 100 << 20 {
        return Err(fail(format!(
            "not a safetensors file (header length {n} in a file of {file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| fail(format!("truncated header: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| fail(format!("malformed header: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in json {
        if name == "__metadata__" {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let dtype = value
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| fail(format!("tensor `{name}` has no dtype")))?;
        let shape = value
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| fail(format!("tensor `{name}` has no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| fail(format!("tensor `{name}` has a malformed shape")))?;
        tensors.insert(name, (dtype.to_string(), shape));
    }
    Ok((tensors, metadata))
}

impl PretrainedSpec {
    /// The spec stored in a `.safetensors` file's metadata by
    /// [`export_torchvision_safetensors`], or `None` when the file carries none.
    ///
    /// # Errors
    ///
    /// [`ModelError::Weights`] for an unreadable file or a spec that does not parse.
    pub fn from_safetensors(path: &Path) -> Result<Option<Self>, ModelError> {
        let (_, metadata) = safetensors_header(path)?;
        metadata
            .get(SPEC_METADATA_KEY)
            .map(|json| {
                serde_json::from_str(json).map_err(|e| ModelError::Weights {
                    action: "load",
                    path: path.to_path_buf(),
                    reason: format!("the `{SPEC_METADATA_KEY}` metadata is not a spec: {e}"),
                })
            })
            .transpose()
    }
}

/// Writes `bytes` to `path` atomically (see [`write_atomically`]).
///
/// # Errors
///
/// [`ModelError::Weights`] naming `path`.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    write_atomically(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| e.to_string())?;
        f.write_all(bytes).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ResNetConfig, ResNetKind};
    use burn::prelude::*;

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.bpk");
        write_bytes_atomically(&path, b"good").unwrap();
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, b"half").map_err(|e| e.to_string())?;
            Err("disk full".into())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("disk full") && err.contains("ckpt.bpk"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("ckpt.bpk")],
            "no temporary left"
        );
        let err = write_bytes_atomically(&dir.path().join("missing/x.bpk"), b"x").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn burnpack_round_trip_restores_outputs_and_refuses_another_architecture() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        device.seed(1);
        let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device).unwrap();
        let path = save_weights(&model, &dir.path().join("m.bpk"), None).unwrap();
        device.seed(2);
        let other = ResNetConfig::new(ResNetKind::Cifar20).init(&device).unwrap();
        let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
        let before = model.forward(x.clone());
        assert!(
            (other.forward(x.clone()) - before.clone())
                .abs()
                .max()
                .into_scalar::<f32>()
                > 1e-3,
            "a differently seeded model differs"
        );
        let (loaded, spec) = load_weights(other, &path).unwrap();
        assert_eq!(spec, None);
        let diff = (loaded.forward(x) - before).abs().max().into_scalar::<f32>();
        assert_eq!(diff, 0.0);
        let wrong = ResNetConfig::new(ResNetKind::Cifar56).init(&device).unwrap();
        let err = load_weights(wrong, &path).unwrap_err().to_string();
        assert!(
            err.contains("m.bpk") && err.contains("same architecture"),
            "{err}"
        );
        let err = load_weights(model, &dir.path().join("none.bpk"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}
