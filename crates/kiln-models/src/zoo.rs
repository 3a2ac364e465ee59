//! The model registry: every architecture kiln builds, registered once.
//!
//! An architecture is a small serialisable config (what `[model]` in a run file holds) that
//! implements [`Architecture`]: it builds its model for an input shape and a class count, says
//! what it is in one line, and lists the `--model` names it answers to. [`ModelConfig`] is the
//! registry itself — one line per architecture in the `registry!` call at the end of this file —
//! and the only place that matches on architectures. Code that works on any model (training,
//! evaluation, prediction, import) is written once, generic over [`ZooModel`], as a [`ModelFn`]
//! handed to [`ModelConfig::build_with`].
//!
//! Adding a model: a file with the model, its config implementing [`Architecture`] and its
//! [`ZooModel`] impl, and one line in `registry!`.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::zoo::{ModelConfig, ModelFn, ZooModel};
//!
//! struct Outputs;
//! impl ModelFn for Outputs {
//!     type Output = [usize; 2];
//!     fn call<M: ZooModel>(self, model: M) -> [usize; 2] {
//!         let device = Device::flex();
//!         model.logits(Tensor::zeros([2, 3, 32, 32], &device)).dims()
//!     }
//! }
//!
//! let config = ModelConfig::from_name("cifar-resnet20")?;
//! assert_eq!(config.id(), "cifar-resnet20");
//! let dims = config.build_with([3, 32, 32], 5, &Device::flex(), Outputs)?;
//! assert_eq!(dims, [2, 5]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use std::fmt::Debug;

use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::detector::DetectorConfig;
use crate::{Classifier, FineTune, InitScheme, ModelError};

/// What the run needs of any registered model: a classifier with a replaceable head, and the
/// state-dict names of its torchvision counterpart where it has one.
pub trait ZooModel: Classifier + FineTune {
    /// `(torchvision prefix, kiln prefix)` pairs when torchvision's state-dict names map onto
    /// this model's parameter paths prefix by prefix (each ending in a dot, or a whole name);
    /// the key maps below follow from them. `None`: no such mapping.
    fn torchvision_prefixes(&self) -> Option<Vec<(String, String)>> {
        None
    }

    /// torchvision's state-dict names → this model's parameter paths, as `(regex, replacement)`
    /// pairs, when torchvision has this architecture (`None`: no torchvision import). By default
    /// from [`torchvision_prefixes`](Self::torchvision_prefixes).
    fn torchvision_key_map(&self) -> Option<Vec<(String, String)>> {
        Some(crate::import::prefix_map(self.torchvision_prefixes()?, false))
    }

    /// The inverse of [`torchvision_key_map`](Self::torchvision_key_map), for the export.
    fn torchvision_export_key_map(&self) -> Option<Vec<(String, String)>> {
        Some(crate::import::prefix_map(self.torchvision_prefixes()?, true))
    }

    /// Writes the inference graph into `g` on the input value `x` and returns the logits'
    /// value ([`crate::onnx::export`] wraps it into a model). Layers are named by their
    /// parameter paths.
    ///
    /// # Errors
    ///
    /// [`ModelError::Export`] naming the first layer without an ONNX form (the default: the
    /// whole model).
    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        let _ = (g, x);
        Err(ModelError::Export {
            format: "ONNX",
            layer: self.name().to_string(),
            reason: "this model has no ONNX graph yet".into(),
        })
    }
}

/// A `--model` name and the config it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset<A> {
    /// The name (`cifar-resnet20`).
    pub name: &'static str,
    /// One line for `--help` and error messages.
    pub about: &'static str,
    /// The config with its defaults.
    pub config: A,
}

/// One registered architecture: a serialisable config that builds its model.
pub trait Architecture:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The model it builds.
    type Model: ZooModel;

    /// The `--model` names this architecture answers to, with their default configs.
    fn presets() -> Vec<Preset<Self>>;

    /// The model for `[C, H, W]` inputs and `num_classes` outputs. Parameters are drawn lazily from
    /// the device's generator: seed the device first for a repeatable model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] when the config or the input shape cannot work.
    fn build(
        &self,
        input_chw: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<Self::Model, ModelError>;

    /// The registry name of this config (`reference-cnn`, `cifar-resnet20`): what `--model` takes
    /// and what a weights spec records.
    fn id(&self) -> String;

    /// One line: the architecture, its input and its outputs (`ReferenceCnn(1x28x28 -> 10 classes)`).
    fn describe(&self, input_chw: [usize; 3], num_classes: usize) -> String;

    /// The input it is made for when nothing else says (`[3, 224, 224]` for ImageNet stems).
    fn default_input(&self) -> [usize; 3];

    /// Whether BatchNorm follows the convolutions / hidden layers (ablations turn it off).
    fn batch_norm_mut(&mut self) -> &mut bool;

    /// The weight initialisation (`None`: the architecture's own default).
    fn init_mut(&mut self) -> &mut Option<InitScheme>;
}

/// Code generic over the model type, run on whichever model a [`ModelConfig`] builds (a closure
/// cannot be generic, so callers write a small struct).
pub trait ModelFn {
    /// What the code returns.
    type Output;

    /// Runs on the built model.
    fn call<M: ZooModel>(self, model: M) -> Self::Output;
}

/// The config of the preset called `name` (`mobilenet-v3-small` finds `mobilenet_v3_small`:
/// case, `-` and `_` do not matter), else [`ModelError::UnknownModel`] listing the names.
pub(crate) fn find_preset<A: Clone>(presets: Vec<Preset<A>>, name: &str) -> Result<A, ModelError> {
    let key = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    presets
        .iter()
        .find(|p| key(p.name) == key(name))
        .map(|p| p.config.clone())
        .ok_or_else(|| ModelError::UnknownModel {
            name: name.to_string(),
            known: presets.iter().map(|p| p.name.to_string()).collect(),
        })
}

/// serde's default for `batch_norm` keys.
pub(crate) fn yes() -> bool {
    true
}

/// For architectures with LayerNorm and torchvision's own init (ConvNeXt, ViT): the ablation
/// switches `batch_norm = true` and an `init` scheme are refused, each with its reason.
pub(crate) fn refuse_batch_norm_and_init(
    batch_norm: bool,
    init: Option<InitScheme>,
    [no_batch_norm, own_init]: [&'static str; 2],
) -> Result<(), ModelError> {
    let (field, value, reason) = match (batch_norm, init) {
        (true, _) => ("batch_norm", "true".to_string(), no_batch_norm),
        (false, Some(init)) => ("init", format!("{init:?}"), own_init),
        (false, None) => return Ok(()),
    };
    Err(ModelError::InvalidConfig { field, value, reason })
}

/// ` (, no BatchNorm)` in descriptions.
pub(crate) fn bn_note(batch_norm: bool) -> &'static str {
    if batch_norm { "" } else { ", no BatchNorm" }
}

/// The registry: the [`ModelConfig`] enum (serde-tagged by `name`) and its dispatch, from one line
/// per architecture.
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident($arch:ty), )*) => {
        /// `[model]`: which network, by `name`, and its settings. Every architecture kiln builds
        /// is a variant; [`ModelConfig::presets`] lists the `--model` names.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", rename_all = "kebab-case")]
        pub enum ModelConfig {
            $( $(#[$doc])* $variant($arch), )*
        }

        impl ModelConfig {
            /// Builds the model for `[C, H, W]` inputs and `num_classes` outputs and hands it to `f`.
            ///
            /// # Errors
            ///
            /// [`ModelError::InvalidConfig`] from the architecture's checks.
            pub fn build_with<F: ModelFn>(
                &self,
                input_chw: [usize; 3],
                num_classes: usize,
                device: &Device,
                f: F,
            ) -> Result<F::Output, ModelError> {
                match self {
                    $( Self::$variant(a) => Ok(f.call(a.build(input_chw, num_classes, device)?)), )*
                }
            }

            /// Every `--model` name, in registry order.
            pub fn presets() -> Vec<Preset<ModelConfig>> {
                let mut all = Vec::new();
                $(
                    all.extend(<$arch as Architecture>::presets().into_iter().map(|p| Preset {
                        name: p.name,
                        about: p.about,
                        config: Self::$variant(p.config),
                    }));
                )*
                all
            }

            fn info(&self) -> &dyn Info {
                match self {
                    $( Self::$variant(a) => a, )*
                }
            }

            fn info_mut(&mut self) -> &mut dyn Info {
                match self {
                    $( Self::$variant(a) => a, )*
                }
            }
        }
    };
}

/// The object-safe part of [`Architecture`], for dispatch without a match per method.
trait Info {
    fn id(&self) -> String;
    fn describe(&self, input_chw: [usize; 3], num_classes: usize) -> String;
    fn default_input(&self) -> [usize; 3];
    fn batch_norm_mut(&mut self) -> &mut bool;
    fn init_mut(&mut self) -> &mut Option<InitScheme>;
}

impl<A: Architecture> Info for A {
    fn id(&self) -> String {
        Architecture::id(self)
    }
    fn describe(&self, input_chw: [usize; 3], num_classes: usize) -> String {
        Architecture::describe(self, input_chw, num_classes)
    }
    fn default_input(&self) -> [usize; 3] {
        Architecture::default_input(self)
    }
    fn batch_norm_mut(&mut self) -> &mut bool {
        Architecture::batch_norm_mut(self)
    }
    fn init_mut(&mut self) -> &mut Option<InitScheme> {
        Architecture::init_mut(self)
    }
}

impl ModelConfig {
    /// The config `--model NAME` stands for.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnknownModel`] listing the names there are.
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        find_preset(Self::presets(), name)
    }

    /// The registry name (`reference-cnn`, `cifar-resnet20`).
    pub fn id(&self) -> String {
        self.info().id()
    }

    /// One line: the architecture, its input and its outputs.
    pub fn describe(&self, input_chw: [usize; 3], num_classes: usize) -> String {
        self.info().describe(input_chw, num_classes)
    }

    /// The input the architecture is made for when the data does not say.
    pub fn default_input(&self) -> [usize; 3] {
        self.info().default_input()
    }

    /// Whether BatchNorm is on.
    pub fn batch_norm(&self) -> bool {
        *self.clone().info_mut().batch_norm_mut()
    }

    /// Turns BatchNorm on or off (ablations).
    pub fn set_batch_norm(&mut self, on: bool) {
        *self.info_mut().batch_norm_mut() = on;
    }

    /// Sets the weight initialisation (ablations).
    pub fn set_init(&mut self, scheme: InitScheme) {
        *self.info_mut().init_mut() = Some(scheme);
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::ReferenceCnn(crate::reference_cnn::ReferenceCnnArch::default())
    }
}

/// `[model]` of a run file: a classifier of the [`ModelConfig`] registry or a detector of the
/// [`DetectorConfig`] one, told apart by `name` (both are tagged by it, so either reads and writes
/// as its own table).
#[derive(Debug, Clone, PartialEq)]
pub enum AnyModel {
    /// A classifier.
    Classifier(ModelConfig),
    /// A detector.
    Detector(DetectorConfig),
}

impl Default for AnyModel {
    fn default() -> Self {
        AnyModel::Classifier(ModelConfig::default())
    }
}

impl AnyModel {
    /// The config `--model NAME` stands for, classifier or detector.
    ///
    /// # Errors
    ///
    /// [`ModelError::UnknownModel`] listing every name.
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        match ModelConfig::from_name(name) {
            Ok(c) => Ok(AnyModel::Classifier(c)),
            Err(_) => DetectorConfig::from_name(name)
                .map(AnyModel::Detector)
                .map_err(|_| ModelError::UnknownModel {
                    name: name.to_string(),
                    known: Self::names(),
                }),
        }
    }

    /// Every `--model` name: the classifiers, then the detectors.
    pub fn names() -> Vec<String> {
        let classifiers = ModelConfig::presets().into_iter().map(|p| p.name.to_string());
        classifiers
            .chain(DetectorConfig::presets().into_iter().map(|p| p.name.to_string()))
            .collect()
    }

    /// The registry name.
    pub fn id(&self) -> String {
        match self {
            AnyModel::Classifier(c) => c.id(),
            AnyModel::Detector(d) => d.id(),
        }
    }

    /// The classifier, when it is one.
    pub fn classifier(&self) -> Option<&ModelConfig> {
        match self {
            AnyModel::Classifier(c) => Some(c),
            AnyModel::Detector(_) => None,
        }
    }

    /// The classifier, when it is one, to change.
    pub fn classifier_mut(&mut self) -> Option<&mut ModelConfig> {
        match self {
            AnyModel::Classifier(c) => Some(c),
            AnyModel::Detector(_) => None,
        }
    }

    /// The detector, when it is one.
    pub fn detector(&self) -> Option<&DetectorConfig> {
        match self {
            AnyModel::Classifier(_) => None,
            AnyModel::Detector(d) => Some(d),
        }
    }
}

impl Serialize for AnyModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AnyModel::Classifier(c) => c.serialize(s),
            AnyModel::Detector(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AnyModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        // Only the name itself being unknown sends it to the other registry (not, say, an
        // unknown `init` scheme of a classifier).
        let name = value
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let tag = format!("unknown variant `{name}`");
        let unknown = |e: &serde_json::Error| e.to_string().starts_with(&tag);
        let classifier = match ModelConfig::deserialize(value.clone()) {
            Ok(c) => return Ok(AnyModel::Classifier(c)),
            Err(e) => e,
        };
        if !unknown(&classifier) {
            return Err(D::Error::custom(classifier));
        }
        match DetectorConfig::deserialize(value) {
            Ok(d) => Ok(AnyModel::Detector(d)),
            // Neither registry has the name: serde's message lists both (closest-name hints read it).
            Err(e) if unknown(&e) => {
                let text = e.to_string();
                let detectors: Vec<&str> = text
                    .split_once("expected")
                    .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                    .unwrap_or_default();
                let mut message = classifier.to_string();
                for d in detectors {
                    message.push_str(&format!(", `{d}`"));
                }
                Err(D::Error::custom(message))
            }
            Err(e) => Err(D::Error::custom(e)),
        }
    }
}

registry! {
    /// The reference CNN (two conv blocks, a hidden linear layer).
    ReferenceCnn(crate::reference_cnn::ReferenceCnnArch),
    /// A ResNet from kiln's zoo (`depth` picks which; `docs/models.md`).
    Resnet(crate::resnet::ResNetArch),
    /// A multi-layer perceptron.
    Mlp(crate::mlp::MlpArch),
    /// torchvision's MobileNetV3 (`variant` small or large).
    MobilenetV3(crate::mobilenet::MobileNetV3Arch),
    /// torchvision's EfficientNet B0–B3 (`variant`).
    Efficientnet(crate::efficientnet::EfficientNetArch),
    /// torchvision's ConvNeXt (`variant` tiny or small).
    Convnext(crate::convnext::ConvNextArch),
    /// torchvision's Vision Transformer (`variant` b16, b32, s16 or tiny).
    Vit(crate::vit::VitArch),
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Params;
    impl ModelFn for Params {
        type Output = (usize, usize);
        fn call<M: ZooModel>(self, model: M) -> (usize, usize) {
            (model.num_params(), model.num_classes())
        }
    }

    #[test]
    fn every_preset_builds_round_trips_and_names_itself() {
        let device = Device::flex();
        let presets = ModelConfig::presets();
        assert!(presets.len() >= 8, "{presets:?}");
        for p in presets {
            assert_eq!(p.config.id(), p.name, "a preset's id is its --model name");
            let chw = p.config.default_input();
            let (params, classes) = p.config.build_with(chw, 7, &device, Params).unwrap();
            assert!(params > 0, "{}", p.name);
            assert_eq!(classes, 7, "{}", p.name);
            let json = serde_json::to_string(&p.config).unwrap();
            let back: ModelConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p.config, "{json}");
            assert!(
                p.config.describe(chw, 7).contains("7"),
                "{}",
                p.config.describe(chw, 7)
            );
        }
    }

    #[test]
    fn names_are_case_insensitive_and_an_unknown_one_lists_the_known() {
        assert_eq!(ModelConfig::from_name("ResNet18").unwrap().id(), "resnet18");
        let err = ModelConfig::from_name("resnet19").unwrap_err().to_string();
        assert!(
            err.contains("resnet19") && err.contains("cifar-resnet20") && err.contains("mlp"),
            "{err}"
        );
    }

    #[test]
    fn batch_norm_and_init_are_switched_through_the_registry() {
        let mut m = ModelConfig::from_name("cifar-resnet20").unwrap();
        assert!(m.batch_norm());
        m.set_batch_norm(false);
        m.set_init(InitScheme::XavierNormal { gain: 1.0 });
        assert!(!m.batch_norm());
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains("\"batch_norm\":false") && text.contains("xavier"),
            "{text}"
        );
    }
}
