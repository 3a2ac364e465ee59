//! # kiln-data
//!
//! The first wall of kiln: everything that touches files and bytes, up to the batch on the device.
//!
//! * [`image`] — images whose **layout** (HWC/CHW), **colour order** (BGR/RGB/Gray) and pixel type
//!   (u8/f32) are part of the type, so a function that wants CHW/RGB cannot be handed HWC/BGR.
//! * [`decode`] — `imread`: the pixels `cv2.imread` gives (HWC, BGR, u8), checked against OpenCV.
//! * Datasets, each a Burn [`Dataset`] with typed errors: [`mnist`] (idx), [`cifar`] (CIFAR-10/100
//!   binary), [`folder`] (ImageFolder), [`coco`] (COCO detection JSON), [`ops`] (in-memory, subset,
//!   concatenation, map, stratified split); [`idx`] is the MNIST file format.
//! * [`format`](mod@format) — which format a dataset folder holds, detected once from its files ([`format::detect`]).
//! * [`paths`] — dataset roots resolved once to canonical paths (`~`, config-relative, `KILN_DATA`),
//!   with errors that show the path as given, every place tried and the current directory.
//! * [`split`] — seeded train/validation splits.
//! * [`batch`] — u8 collate and a seeded, deterministic batch order ([`BatchOrder`]).
//! * [`batcher`] — PyTorch's `collate_fn`, typed: classification and detection batches on the device.
//! * [`loader`] — a parallel loader whose batches do not depend on the number of workers.
//! * [`alloc`] — allocator settings that keep batch memory from being page-faulted in every batch.
//!
//! Invariants: nothing here normalises pixels (the per-sample transform does, with kiln-transforms);
//! tensors are created only by batchers. Everything a user's file can break returns a
//! [`DataError`] naming the file or sample; nothing here panics on user data.
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
pub mod format;
pub mod idx;
pub mod image;
pub mod loader;
pub mod mnist;
pub mod npy;
pub mod ops;
pub mod paths;
pub mod split;
pub mod synth;

/// The Burn this crate is built on (pinned `=0.22.1`): code that uses these datasets and batchers can name
/// Burn's types through it and so always gets the same version.
pub use burn;

pub use batch::{BatchOrder, ImageBatch, collate};
pub use batcher::{
    ClassBatch, ClassSample, ClassificationBatcher, Collate, DetBatch, DetSample, DetectionBatcher,
    ImageMeta, Indexed,
};
pub use cifar::{CIFAR10_CLASSES, Cifar100Label, CifarDataset, CifarItem, CifarSplit};
pub use coco::{
    BoxFixes, CocoAnnotation, CocoCategory, CocoDetection, CocoFile, CocoImage, CocoResult, DetectionItem,
    read_coco_results,
};
pub use decode::{DraftSize, imread, imread_draft, imread_gray};
pub use error::DataError;
pub use folder::{ImageFolder, ImageFolderItem, ImageFolderOptions};
pub use image::{Bgr, Chw, ColorOrder, Gray, Hwc, Image, LabeledImage, Layout, Pixel, Rgb};
pub use loader::{Loader, LoaderConfig, SampleRng, SampleTransform};
pub use mnist::{FASHION_MNIST_CLASSES, MNIST_NUM_CLASSES, MnistDataset, MnistItem, MnistSplit};
pub use ops::{Concat, InMemory, Mapped, Subset, stratified_split};
pub use paths::DatasetRoot;
pub use split::random_split;
pub use synth::{PasteConfig, PasteSummary, paste_detection_set};

/// The README's examples run as doctests, so what crates.io shows stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
