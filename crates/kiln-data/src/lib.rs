//! # kiln-data
//!
//! The first wall of kiln: everything that touches files and bytes before a tensor exists.
//!
//! * [`image`] — images whose **layout** (HWC/CHW) and **colour order** (BGR/RGB/Gray) are part of the
//!   type, so a function that wants CHW/RGB cannot be handed HWC/BGR. Loaders emit HWC u8.
//! * [`idx`] — the MNIST / Fashion-MNIST idx format, gzipped or raw, with typed errors that name the
//!   file and what was expected versus found.
//! * [`mnist`] — the MNIST-family datasets (MNIST, Fashion-MNIST) as Burn [`Dataset`]s.
//! * [`paths`] — dataset roots resolved to absolute paths, with errors that show the path as given,
//!   as resolved and the current directory (the "works only from one directory" bug).
//! * [`split`] — seeded train/validation splits.
//! * [`batch`] — collate: a list of samples into one batch of bytes plus integer labels, with a
//!   seeded, deterministic batch order ([`BatchOrder`]).
//!
//! Invariants: this crate never creates tensors and never normalises pixels; it hands the next crate
//! (kiln-transforms) typed u8 images and integer labels. Everything a user's file can break returns a
//! [`DataError`]; nothing here panics on user data.
//!
//! ```
//! use kiln_data::idx::{parse_idx, IdxArray};
//!
//! // An idx1 file of three u8 labels: magic 0x00000801, one big-endian dimension, the data.
//! let bytes = [0u8, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1];
//! let labels: IdxArray = parse_idx(&bytes, "labels.idx".as_ref())?;
//! assert_eq!(labels.dims, vec![3]);
//! assert_eq!(labels.data, vec![7, 2, 1]);
//! # Ok::<(), kiln_data::DataError>(())
//! ```
//!
//! [`Dataset`]: burn::data::dataset::Dataset
#![deny(missing_docs)]

pub mod alloc;
pub mod batch;
pub mod batcher;
pub mod cifar;
pub mod coco;
pub mod decode;
pub mod error;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod mnist;
pub mod ops;
pub mod paths;
pub mod split;

pub use batch::{BatchOrder, ImageBatch, collate};
pub use cifar::{CIFAR10_CLASSES, Cifar100Label, CifarDataset, CifarItem, CifarSplit};
pub use coco::{CocoDetection, DetectionItem};
pub use error::DataError;
pub use folder::{ImageFolder, ImageFolderItem, ImageFolderOptions};
pub use image::{Bgr, Chw, ColorOrder, Gray, Hwc, Image, LabeledImage, Layout, Pixel, Rgb};
pub use loader::{Loader, LoaderConfig, SampleRng, SampleTransform};
pub use mnist::{FASHION_MNIST_CLASSES, MNIST_NUM_CLASSES, MnistDataset, MnistItem, MnistSplit};
pub use ops::{Concat, InMemory, Mapped, Subset, stratified_split};
pub use paths::DatasetRoot;
pub use split::random_split;
