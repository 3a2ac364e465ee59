//! The detector registry: every detection architecture kiln builds, registered once — the
//! detection side of [`crate::zoo`].
//!
//! A detector architecture is a serialisable config (what `[model]` holds when its `name` is a
//! detector's) implementing [`DetectorArch`]; its model implements [`Detector`]: a loss on a
//! padded batch and its targets, and post-processed detections in each image's original pixels.
//! [`DetectorConfig`] is the registry, one line per architecture in `detectors!` at the end of
//! this file; code that works on any detector (training, evaluation, prediction, import) is a
//! [`DetectorFn`] handed to [`DetectorConfig::build_with`].
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::detector::{Detector, DetectorConfig, DetectorFn};
//!
//! struct Classes;
//! impl DetectorFn for Classes {
//!     type Output = usize;
//!     fn call<M: Detector>(self, model: M) -> usize {
//!         model.num_classes()
//!     }
//! }
//!
//! let config = DetectorConfig::from_name("fcos")?;
//! assert_eq!(config.input_sizes(), [800, 1333]);
//! assert_eq!(config.build_with(3, &Device::flex(), Classes)?, 3);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use std::fmt::Debug;

use burn::module::Module;
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::boxes::{BoxTargets, Detection};
use crate::zoo::Preset;

/// What training and inference need of any registered detector. Images are a padded,
/// normalised `[N, 3, H, W]` batch; boxes are `[x1, y1, x2, y2]` pixels.
pub trait Detector: Module + 'static {
    /// Object classes (labels `0..num_classes`).
    fn num_classes(&self) -> usize;

    /// The training loss of `images` against each image's `targets` (in the batch's pixels).
    fn loss(&self, images: Tensor<4>, targets: &[BoxTargets]) -> Tensor<1>;

    /// The loss when `targets` are given, and each image's detections: `image_sizes[i]` is image
    /// `i`'s resized `[H, W]` inside the padding, `original_sizes[i]` the size its boxes are
    /// scaled back to.
    fn detect(
        &self,
        images: Tensor<4>,
        targets: Option<&[BoxTargets]>,
        image_sizes: &[[usize; 2]],
        original_sizes: &[[usize; 2]],
    ) -> (Option<Tensor<1>>, Vec<Vec<Detection>>);

    /// torchvision's state-dict names → this model's parameter paths, as `(regex, replacement)`
    /// pairs, for `kiln import`.
    fn torchvision_key_map(&self) -> Vec<(String, String)>;
}

/// One registered detector architecture: a serialisable config that builds its model.
pub trait DetectorArch:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The model it builds.
    type Model: Detector;

    /// The `--model` names it answers to, with their default configs.
    fn presets() -> Vec<Preset<Self>>;

    /// The model for `num_classes` object classes. Parameters are drawn from the device's
    /// generator: seed it first for a repeatable model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for settings that cannot work.
    fn build(&self, num_classes: usize, device: &Device) -> Result<Self::Model, ModelError>;

    /// The registry name (`fcos`).
    fn id(&self) -> String;

    /// One line: the architecture and its outputs.
    fn describe(&self, num_classes: usize) -> String;

    /// `[min_size, max_size]`: images are resized so the shorter side is `min_size` and the longer
    /// at most `max_size` (torchvision's `GeneralizedRCNNTransform`).
    fn input_sizes(&self) -> [usize; 2];
}

/// Code generic over the detector type, run on whichever model a [`DetectorConfig`] builds.
pub trait DetectorFn {
    /// What the code returns.
    type Output;

    /// Runs on the built model.
    fn call<M: Detector>(self, model: M) -> Self::Output;
}

/// The registry: the [`DetectorConfig`] enum (serde-tagged by `name`) and its dispatch, from one
/// line per architecture.
macro_rules! detectors {
    ($( $(#[$doc:meta])* $variant:ident($arch:ty), )*) => {
        /// `[model]` for a detector: which one, by `name`, and its settings.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", rename_all = "kebab-case")]
        pub enum DetectorConfig {
            $( $(#[$doc])* $variant($arch), )*
        }

        impl DetectorConfig {
            /// Builds the model for `num_classes` classes and hands it to `f`.
            ///
            /// # Errors
            ///
            /// [`ModelError::InvalidConfig`] from the architecture's checks.
            pub fn build_with<F: DetectorFn>(
                &self,
                num_classes: usize,
                device: &Device,
                f: F,
            ) -> Result<F::Output, ModelError> {
                match self {
                    $( Self::$variant(a) => Ok(f.call(a.build(num_classes, device)?)), )*
                }
            }

            /// Every detector `--model` name, in registry order.
            pub fn presets() -> Vec<Preset<DetectorConfig>> {
                let mut all = Vec::new();
                $(
                    all.extend(<$arch as DetectorArch>::presets().into_iter().map(|p| Preset {
                        name: p.name,
                        about: p.about,
                        config: Self::$variant(p.config),
                    }));
                )*
                all
            }

            /// The registry name.
            pub fn id(&self) -> String {
                match self {
                    $( Self::$variant(a) => a.id(), )*
                }
            }

            /// One line: the architecture and its outputs.
            pub fn describe(&self, num_classes: usize) -> String {
                match self {
                    $( Self::$variant(a) => a.describe(num_classes), )*
                }
            }

            /// `[min_size, max_size]` of the resize.
            pub fn input_sizes(&self) -> [usize; 2] {
                match self {
                    $( Self::$variant(a) => a.input_sizes(), )*
                }
            }
        }
    };
}

impl DetectorConfig {
    /// The config `--model NAME` stands for.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnknownModel`] listing the detector names.
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        crate::zoo::find_preset(Self::presets(), name)
    }

    /// The config with one setting changed by its run-file key (`backbone`, `min_size`, …), as
    /// `--set model.KEY=VALUE` would: without a match on the detector.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for a key the detector does not have or a value it cannot
    /// take (serde's message, naming the valid ones).
    pub fn with_setting(&self, key: &'static str, value: serde_json::Value) -> Result<Self, ModelError> {
        let invalid = |why: String| ModelError::InvalidConfig {
            field: key,
            value: format!("{value} ({why})"),
            reason: "not a setting this detector takes",
        };
        let mut json = serde_json::to_value(self).map_err(|e| invalid(e.to_string()))?;
        if let Some(table) = json.as_object_mut() {
            table.insert(key.to_string(), value.clone());
        }
        serde_json::from_value(json).map_err(|e| invalid(e.to_string()))
    }
}

detectors! {
    /// FCOS with a ResNet-FPN backbone (torchvision's definition).
    Fcos(crate::fcos::FcosArch),
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys;
    impl DetectorFn for Keys {
        type Output = (usize, usize);
        fn call<M: Detector>(self, model: M) -> (usize, usize) {
            (model.num_classes(), model.torchvision_key_map().len())
        }
    }

    #[test]
    fn every_preset_builds_and_round_trips() {
        let device = Device::flex();
        for p in DetectorConfig::presets() {
            assert_eq!(p.config.id(), p.name);
            let (classes, keys) = p.config.build_with(4, &device, Keys).unwrap();
            assert_eq!(classes, 4);
            assert!(keys > 10, "{keys}");
            let json = serde_json::to_string(&p.config).unwrap();
            let back: DetectorConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p.config, "{json}");
            assert!(p.config.describe(4).contains("4 classes"));
        }
    }

    #[test]
    fn settings_are_read_by_name_and_checked_when_built() {
        let c: DetectorConfig = serde_json::from_str(
            r#"{"name": "fcos", "backbone": "resnet18", "min_size": 128, "max_size": 128}"#,
        )
        .unwrap();
        assert_eq!(c.input_sizes(), [128, 128]);
        assert!(c.describe(2).contains("ResNet-18"), "{}", c.describe(2));
        let err = serde_json::from_str::<DetectorConfig>(r#"{"name": "fcos", "min_sise": 128}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_sise"), "{err}");
        let bad: DetectorConfig = serde_json::from_str(
            r#"{"name": "fcos", "backbone": "resnet18", "min_size": 900, "max_size": 800}"#,
        )
        .unwrap();
        let err = bad.build_with(2, &Device::flex(), Keys).unwrap_err().to_string();
        assert!(err.contains("min_size"), "{err}");
        assert!(DetectorConfig::from_name("FCOS").is_ok());
        let small = c.with_setting("backbone", "resnet34".into()).unwrap();
        assert!(small.describe(2).contains("ResNet-34"), "{}", small.describe(2));
        let err = c
            .with_setting("backbone", "resnet19".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("resnet19") && err.contains("resnet18"), "{err}");
        assert!(
            DetectorConfig::from_name("retinanet")
                .unwrap_err()
                .to_string()
                .contains("fcos")
        );
    }
}
