//! # kiln-models
//!
//! Models that train well by default: BatchNorm after every conv/linear and before the activation,
//! biases dropped where BatchNorm follows (its β is the bias), and PyTorch-exact Kaiming init.
//!
//! * [`classifier`] — the [`Classifier`] trait the training loop drives.
//! * [`init`] — named initialisation schemes with PyTorch's formulas ([`InitScheme`]).
//! * [`reference_cnn`] — the reference CNN for 28×28 grey images ([`ReferenceCnn`]).
//! * [`blocks`], [`mlp`], [`resnet`], [`mobilenet`], [`efficientnet`], [`convnext`], [`vit`] —
//!   `ConvBnAct`/`LinearBnAct`, the inverted residual, and the zoo built from them.
//! * [`pretrained`], [`import`], [`weights`] — what weights expect ([`PretrainedSpec`]), torchvision
//!   import, kiln checkpoints and the safetensors export PyTorch loads back.
//! * [`zoo`] — the model registry: [`ModelConfig`] (every architecture, `--model` names) and
//!   [`ModelFn`], code generic over whichever model it builds.
//! * [`onnx`] — the ONNX export of any registered model ([`onnx::export`]).
//! * [`finetune`] — replacing the head, freezing the backbone, backbone/head parameter groups.
//! * [`kernels`] — kiln's own CPU kernels on Burn's flex backend (convolution, BatchNorm + ReLU,
//!   2×2 max-pool), used by the layers above on flex; Burn's ops on every other device.
//!
//! Invariants: no I/O except explicit save/load; every model is built from a serialisable config
//! whose `init` validates it and returns [`ModelError`] instead of panicking; each model checks its
//! input shape with [`ReferenceCnn::check_input`] before a run starts.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::ReferenceCnnConfig;
//!
//! let device = Device::flex();
//! let model = ReferenceCnnConfig::new().init(&device)?;
//! let logits = model.forward(Tensor::zeros([2, 1, 28, 28], &device));
//! assert_eq!(logits.dims(), [2, 10]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```
#![deny(missing_docs)]

pub mod blocks;
pub mod boxes;
pub mod classifier;
pub mod convnext;
pub mod detector;
pub mod efficientnet;
pub mod error;
pub mod fcos;
pub mod finetune;
pub mod import;
pub mod init;
pub mod kernels;
pub mod mlp;
pub mod mobilenet;
pub mod onnx;
pub mod pretrained;
pub mod reference_cnn;
pub mod resnet;
pub mod summary;
pub mod vit;
pub mod weights;
pub mod zoo;

/// The Burn this crate is built on (pinned `=0.22.1`): code that uses these models can name
/// Burn's types through it and so always gets the same version.
pub use burn;

pub use blocks::{Activation, ConvBnAct, ConvBnActConfig, LinearBnAct, LinearBnActConfig};
pub use classifier::Classifier;
pub use convnext::{ConvNext, ConvNextConfig, ConvNextKind};
pub use efficientnet::{EfficientNet, EfficientNetConfig, EfficientNetKind};
pub use error::ModelError;
pub use finetune::{FineTune, ScaledGroup};
pub use import::{import_torchvision, load_torchvision, load_torchvision_resnet};
pub use init::{FanMode, Fans, InitScheme, Nonlinearity};
pub use mlp::{Mlp, MlpConfig};
pub use mobilenet::{MobileNetV3, MobileNetV3Config, MobileNetV3Kind};
pub use pretrained::PretrainedSpec;
pub use reference_cnn::{ReferenceCnn, ReferenceCnnConfig};
pub use resnet::{ResNet, ResNetConfig, ResNetKind};
pub use summary::{Row, Summary};
pub use vit::{VisionTransformer, VitConfig, VitKind};
pub use weights::{export_torchvision_safetensors, load_weights, save_weights};
pub use zoo::{AnyModel, Architecture, ModelConfig, ModelFn, ZooModel};

/// The README's examples run as doctests, so what crates.io shows stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
