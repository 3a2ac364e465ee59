//! What a set of weights expects: its preprocessing, input size and classes, kept with the weights.
//!
//! Fine-tuning with another normalization than the one the weights were trained with is a silent
//! accuracy loss. A [`PretrainedSpec`] travels next to the weights (`<weights>.kiln.json`) and
//! [`PretrainedSpec::check_normalization`] refuses a pipeline whose normalization differs, showing
//! both, unless the caller overrides it explicitly.
//!
//! ```
//! use kiln_models::PretrainedSpec;
//! use kiln_transforms::{Normalization, NormalizationSpec};
//!
//! let spec = PretrainedSpec::torchvision_imagenet("resnet18");
//! // The same normalization on the other scale is fine; CIFAR statistics are not.
//! assert!(spec.check_normalization(&Normalization::torch_imagenet_unit(), false).is_ok());
//! let err = spec.check_normalization(&Normalization::cifar10(), false).unwrap_err();
//! assert!(err.to_string().contains("torch-imagenet"));
//! assert!(spec.check_normalization(&Normalization::cifar10(), true).is_ok()); // explicit override
//! # let _ = NormalizationSpec::Cifar10;
//! ```

use std::path::{Path, PathBuf};

use kiln_transforms::{Normalization, NormalizationSpec, Scale};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The preprocessing and output a set of weights was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedSpec {
    /// The architecture's registry name (e.g. `"resnet18"`, `"reference-cnn"`).
    pub model: String,
    /// The architecture with its settings, so the weights can be loaded without a run file
    /// (absent in specs written before kiln recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<crate::ModelConfig>,
    /// The normalization of the training data.
    pub normalization: NormalizationSpec,
    /// Input `[C, H, W]` it was trained on.
    pub input_chw: [usize; 3],
    /// Number of output classes.
    pub num_classes: usize,
    /// Class names by label (may be empty when unknown).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// The deterministic stages evaluation images went through before normalization (resize,
    /// centre crop); empty when they were fed as stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval: Vec<kiln_transforms::compose::Stage>,
    /// Evaluation JPEGs were decoded at reduced size where the first stage allowed it
    /// (`data.jpeg_draft`, PIL's `Image.draft`); `kiln predict` does the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jpeg_draft: bool,
    /// Detector weights: the detector and its classes' COCO ids (`None` for a classifier;
    /// `architecture` is then `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorSpec>,
}

/// What detector weights add to their [`PretrainedSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorSpec {
    /// The detector with its settings (input sizes and post-processing included).
    pub architecture: crate::detector::DetectorConfig,
    /// The COCO category id of each label, so detections are written with the dataset's ids.
    pub category_ids: Vec<u64>,
}

impl PretrainedSpec {
    /// torchvision's ImageNet weights for `model`: `torch-imagenet` normalization, 3×224×224,
    /// 1000 classes.
    pub fn torchvision_imagenet(model: &str) -> Self {
        Self {
            model: model.to_string(),
            architecture: crate::ModelConfig::from_name(model).ok(),
            normalization: NormalizationSpec::TorchImagenet,
            input_chw: [3, 224, 224],
            num_classes: 1000,
            class_names: Vec::new(),
            eval: kiln_transforms::compose::Stage::torchvision_eval([224, 224]),
            jpeg_draft: false,
            detector: None,
        }
    }

    /// The spec of torchvision weights imported as `architecture` (`kiln import`): trained with
    /// `normalization` on `input_chw` images, `num_classes` outputs, and torchvision's
    /// evaluation recipe at that size (the shorter side to size / 0.875 — 256 for 224 — then the
    /// centre crop).
    pub fn torchvision(
        architecture: crate::ModelConfig,
        normalization: NormalizationSpec,
        input_chw: [usize; 3],
        num_classes: usize,
        class_names: Vec<String>,
    ) -> Self {
        use kiln_transforms::compose::Stage;
        let [_, h, w] = input_chw;
        Self {
            model: architecture.id(),
            architecture: Some(architecture),
            normalization,
            input_chw,
            num_classes,
            class_names,
            eval: Stage::torchvision_eval([h, w]),
            jpeg_draft: false,
            detector: None,
        }
    }

    /// Where the spec of `weights` lives: `<weights>.kiln.json`.
    pub fn sidecar_path(weights: &Path) -> PathBuf {
        let mut name = weights.as_os_str().to_os_string();
        name.push(".kiln.json");
        PathBuf::from(name)
    }

    /// Writes the spec next to `weights`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Weights`] when the file cannot be written.
    pub fn save_next_to(&self, weights: &Path) -> Result<PathBuf, ModelError> {
        let path = Self::sidecar_path(weights);
        let fail = |reason: String| ModelError::Weights {
            action: "save",
            path: path.clone(),
            reason,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| fail(e.to_string()))?;
        crate::weights::write_atomically(&path, |tmp| std::fs::write(tmp, &json).map_err(|e| e.to_string()))?;
        Ok(path)
    }

    /// Reads the spec kept next to `weights`.
    ///
    /// # Errors
    ///
    /// [`ModelError::Weights`] when it is missing or not a spec.
    pub fn load_next_to(weights: &Path) -> Result<Self, ModelError> {
        let path = Self::sidecar_path(weights);
        let fail = |reason: String| ModelError::Weights {
            action: "load",
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            fail(format!(
                "{e} (the spec is written next to the weights when they are saved)"
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))
    }

    /// Checks that `used` is the normalization these weights were trained with (the same values on
    /// either scale, in the same channel order). `allow_override` accepts a difference on purpose.
    ///
    /// # Errors
    ///
    /// [`ModelError::NormalizationMismatch`] showing both, or the spec's own normalization errors.
    pub fn check_normalization(&self, used: &Normalization, allow_override: bool) -> Result<(), ModelError> {
        let expected = self
            .normalization
            .resolve()
            .map_err(|e| ModelError::NormalizationMismatch {
                model: self.model.clone(),
                expected: format!("an invalid spec ({e})"),
                found: show(used),
            })?;
        if allow_override || same(&expected, used) {
            return Ok(());
        }
        Err(ModelError::NormalizationMismatch {
            model: self.model.clone(),
            expected: show(&expected),
            found: show(used),
        })
    }
}

fn show(n: &Normalization) -> String {
    format!(
        "`{}` mean {:?} std {:?} ({:?} scale, {:?})",
        n.name, n.mean, n.std, n.scale, n.order
    )
}

/// The same normalization, compared on the unit scale (so byte and unit presets agree).
fn same(a: &Normalization, b: &Normalization) -> bool {
    let unit = |n: &Normalization, v: f32| match n.scale {
        Scale::Unit => f64::from(v),
        Scale::Byte => f64::from(v) / 255.0,
    };
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1e-3);
    a.order == b.order
        && a.mean.len() == b.mean.len()
        && a.mean
            .iter()
            .zip(&b.mean)
            .all(|(&x, &y)| close(unit(a, x), unit(b, y)))
        && a.std
            .iter()
            .zip(&b.std)
            .all(|(&x, &y)| close(unit(a, x), unit(b, y)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_transforms::ChannelOrder;

    #[test]
    fn specs_round_trip_next_to_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.bpk");
        let spec = PretrainedSpec {
            class_names: vec!["cat".into(), "dog".into()],
            num_classes: 2,
            ..PretrainedSpec::torchvision_imagenet("resnet18")
        };
        let path = spec.save_next_to(&weights).unwrap();
        assert_eq!(path, dir.path().join("model.bpk.kiln.json"));
        assert_eq!(PretrainedSpec::load_next_to(&weights).unwrap(), spec);
        let missing = PretrainedSpec::load_next_to(&dir.path().join("other.bpk"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("other.bpk.kiln.json"), "{missing}");
    }

    #[test]
    fn mismatches_show_both_and_bgr_is_not_rgb() {
        let spec = PretrainedSpec::torchvision_imagenet("resnet50");
        let caffe = Normalization::caffe_imagenet();
        let msg = spec.check_normalization(&caffe, false).unwrap_err().to_string();
        assert!(
            msg.contains("resnet50") && msg.contains("`torch-imagenet`") && msg.contains("`caffe-imagenet`"),
            "{msg}"
        );
        let custom_same = Normalization::new(
            "mine",
            vec![0.485, 0.456, 0.406],
            vec![0.229, 0.224, 0.225],
            Scale::Unit,
            ChannelOrder::Rgb,
        )
        .unwrap();
        assert!(
            spec.check_normalization(&custom_same, false).is_ok(),
            "same values under another name"
        );
    }
}
