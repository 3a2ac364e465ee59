//! The error type of kiln-data: every variant names the file or sample it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading a dataset from disk.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error while reading or opening `path`.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A dataset root that does not exist (or is not a directory).
    #[error(
        "dataset root not found: {given} (as given)\n  resolved to: {resolved}\n  current directory: {cwd}\n  hint: pass an absolute path, or a path relative to the current directory"
    )]
    RootNotFound {
        /// The path exactly as the user wrote it.
        given: PathBuf,
        /// The absolute path it was resolved to.
        resolved: PathBuf,
        /// The current working directory at the time of resolution.
        cwd: PathBuf,
    },

    /// A required file is missing from an existing dataset root.
    #[error("{root}: none of the expected files exist: {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingFile {
        /// The dataset root that was searched.
        root: PathBuf,
        /// Every file name that was tried.
        tried: Vec<PathBuf>,
    },

    /// The first bytes of an idx file are not an idx magic number.
    #[error("{path}: not an idx file: magic bytes {found:02x?}, expected [00, 00, 08, ndim] (u8 data)")]
    IdxBadMagic {
        /// The file.
        path: PathBuf,
        /// The four bytes found at the start of the (decompressed) file.
        found: [u8; 4],
    },

    /// An idx file with a data type other than unsigned bytes.
    #[error("{path}: idx data type 0x{found:02x} is not supported, expected 0x08 (u8)")]
    IdxUnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type byte found.
        found: u8,
    },

    /// An idx file whose dimensions are not what the dataset needs.
    #[error("{path}: wrong idx dimensions: expected {expected}, found {found:?}")]
    IdxDims {
        /// The file.
        path: PathBuf,
        /// What was expected, in words (e.g. `3 dims [N, 28, 28]`).
        expected: String,
        /// The dimensions found in the header.
        found: Vec<usize>,
    },

    /// An idx file that ends before its header says it should.
    #[error("{path}: truncated idx file: header promises {expected} bytes, found {found}")]
    IdxTruncated {
        /// The file.
        path: PathBuf,
        /// Total (decompressed) bytes the header requires.
        expected: usize,
        /// Total (decompressed) bytes present.
        found: usize,
    },

    /// An idx file with bytes left over after the data its header describes.
    #[error("{path}: idx file has {extra} unexpected bytes after the {expected} its header describes")]
    IdxTrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes the header describes.
        expected: usize,
        /// Bytes beyond that.
        extra: usize,
    },

    /// Images and labels files that disagree on the number of samples.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },

    /// A label outside `0..num_classes`.
    #[error("{path}: label {label} at index {index} is out of range 0..{num_classes}")]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// The sample index.
        index: usize,
        /// The label found.
        label: u32,
        /// The number of classes of the dataset.
        num_classes: usize,
    },

    /// A sample index past the end of a dataset.
    #[error("index {index} is out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset's length.
        len: usize,
    },

    /// Pixel data whose length does not match the image's shape.
    #[error("image buffer of {found} bytes does not match {height}x{width}x{channels} = {expected}")]
    ImageSize {
        /// Height in pixels.
        height: usize,
        /// Width in pixels.
        width: usize,
        /// Channels of the colour order.
        channels: usize,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },

    /// Samples of different shapes in one batch.
    #[error(
        "cannot collate sample {index} of the batch: shape {found:?} (HxWxC) differs from the first sample's {expected:?}; resize or crop to one size first"
    )]
    ShapeMismatch {
        /// Position of the offending sample in the batch.
        index: usize,
        /// Shape of the first sample.
        expected: [usize; 3],
        /// Shape of the offending sample.
        found: [usize; 3],
    },

    /// An empty batch.
    #[error("cannot collate an empty batch")]
    EmptyBatch,

    /// A batch size of zero.
    #[error("batch size must be at least 1, found 0")]
    ZeroBatchSize,
}
