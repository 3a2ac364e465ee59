//! # kiln-transforms
//!
//! From typed u8 images to normalised float batches, with the scale and colour order checked.
//!
//! * [`convert`] — HWC u8 (any [`ColorOrder`](kiln_data::ColorOrder)) → CHW f32 in the model's
//!   colour order (BGR becomes RGB, grey stays grey), on an explicit [`Scale`]: unit (`x/255`,
//!   torchvision) or byte (`0..255`, Caffe/mmdetection). The scale travels with the data.
//! * [`normalize`] — a [`Normalization`] (mean, std, **scale** and **channel order**) that refuses
//!   data of the other scale or order instead of silently producing garbage.
//! * [`pointwise`] — the automatic augmentations' colour operations (invert, posterize, solarize,
//!   brightness, contrast, color, sharpness, autocontrast, equalize), bit-exact with torchvision v2.
//! * [`affine`], [`autoaugment`] — the policies' geometric operations (nearest or bilinear, with
//!   a fill), and TrivialAugmentWide, RandAugment, AutoAugment and AugMix with torchvision's
//!   tables.
//! * [`stats`] — per-channel mean and std of a dataset, accumulated exactly (integer sums) and
//!   reported in f64, which is where the Fashion-MNIST preset's numbers come from.
//!
//! Invariant: no I/O of its own, except the statistics cache of [`dataset_stats_cached`]
//! ([`dataset_stats`] reads through a kiln-data dataset and loader).
//! Tensors are created only at the very end ([`ChwBatch::into_tensors`]).
//!
//! ```
//! use kiln_data::{collate, Gray, Hwc, Image};
//! use kiln_transforms::{to_chw, Normalization, Scale};
//!
//! let img = Image::<Hwc, Gray>::new(1, 2, vec![0, 255])?;
//! let batch = collate([(img, 3)])?;
//! let x = to_chw(&batch, Scale::Unit);
//! let norm = Normalization::fashion_mnist();
//! let y = norm.apply(x)?;
//! assert!((y.data[0] - (0.0 - 0.2860406) / 0.3530242).abs() < 1e-5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod affine;
pub mod augment;
pub mod autoaugment;
pub mod check;
pub mod compose;
pub mod convert;
pub mod error;
pub mod normalize;
pub mod pointwise;
pub mod sample;
pub mod stats;

pub use convert::{ChwBatch, ModelColor, OrderValue, ReorderTo, Scale, to_chw};
pub use error::TransformError;
pub use normalize::{ChannelOrder, Normalization, NormalizationSpec};
pub use sample::{
    normalize_image, normalize_image_to, resize_area, resize_bilinear, resize_nearest, resize_normalize,
    resize_normalize_to,
};
pub use stats::{ChannelStats, dataset_stats, dataset_stats_cached, fingerprint};

/// The README's examples run as doctests, so what crates.io shows stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
