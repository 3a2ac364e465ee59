//! The error type of kiln-data: every variant names the file or sample it is about.

use std::path::PathBuf;

/// Everything that can go wrong while reading a dataset from disk.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error while reading or opening `path`.
    #[error("cannot read {}: {source}", crate::paths::shown(.path))]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A dataset root that does not exist (or is not a directory).
    #[error(
        "dataset root not found: {given} (as given)\n  resolved to: {resolved}{}\n  current directory: {cwd}\n  hint: {hint}",
        .also_tried.iter().map(|p| format!("\n  also tried: {}", p.display())).collect::<String>()
    )]
    RootNotFound {
        /// The path exactly as the user wrote it.
        given: PathBuf,
        /// The absolute path it was resolved to.
        resolved: PathBuf,
        /// Other places looked at (under `KILN_DATA`).
        also_tried: Vec<PathBuf>,
        /// The current working directory at the time of resolution.
        cwd: PathBuf,
        /// What relative paths are relative to, in words.
        hint: String,
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
    #[error("{}: not an idx file: magic bytes {found:02x?}, expected [00, 00, 08, ndim] (u8 data)", crate::paths::shown(.path))]
    IdxBadMagic {
        /// The file.
        path: PathBuf,
        /// The four bytes found at the start of the (decompressed) file.
        found: [u8; 4],
    },

    /// An idx file with a data type other than unsigned bytes.
    #[error("{}: idx data type 0x{found:02x} is not supported, expected 0x08 (u8)", crate::paths::shown(.path))]
    IdxUnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type byte found.
        found: u8,
    },

    /// An idx file whose dimensions are not what the dataset needs.
    #[error("{}: wrong idx dimensions: expected {expected}, found {found:?}", crate::paths::shown(.path))]
    IdxDims {
        /// The file.
        path: PathBuf,
        /// What was expected, in words (e.g. `3 dims [N, 28, 28]`).
        expected: String,
        /// The dimensions found in the header.
        found: Vec<usize>,
    },

    /// An idx file that ends before its header says it should.
    #[error("{}: truncated idx file: header promises {expected} bytes, found {found}", crate::paths::shown(.path))]
    IdxTruncated {
        /// The file.
        path: PathBuf,
        /// Total (decompressed) bytes the header requires.
        expected: usize,
        /// Total (decompressed) bytes present.
        found: usize,
    },

    /// An idx file with bytes left over after the data its header describes.
    #[error("{}: idx file has {extra} unexpected bytes after the {expected} its header describes", crate::paths::shown(.path))]
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
    #[error("{}: label {label} at index {index} is out of range 0..{num_classes}", crate::paths::shown(.path))]
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

    /// A file that could not be written (the previous file, if any, is left as it was).
    #[error("cannot write {}: {reason}", crate::paths::shown(.path))]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },

    /// A file whose bytes are not an image format kiln can decode.
    #[error(
        "{}: not a supported image (first bytes {magic:02x?}); kiln decodes JPEG, PNG, BMP, TIFF, PNM and WebP", crate::paths::shown(.path)
    )]
    UnknownImageFormat {
        /// The file.
        path: PathBuf,
        /// Its first (up to 8) bytes.
        magic: Vec<u8>,
    },

    /// A file in a known image format that failed to decode (truncated, corrupt).
    #[error("{}: cannot decode {format} image: {reason}", crate::paths::shown(.path))]
    Decode {
        /// The file.
        path: PathBuf,
        /// The format its first bytes announce.
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },

    /// An image whose header claims more pixels than the budget ([`crate::decode::max_pixels`]):
    /// refused before decoding (a decompression bomb, or an image far larger than the model).
    #[error(
        "{}: {width}x{height} pixels ({}) is more than the limit of {limit} per image (PIL's decompression-bomb limit by default); downscale the file, or raise data.max_image_pixels if it is meant to be this large", crate::paths::shown(.path),
        width.saturating_mul(*height)
    )]
    TooManyPixels {
        /// The file.
        path: PathBuf,
        /// Width its header claims.
        width: u64,
        /// Height its header claims.
        height: u64,
        /// The budget in force.
        limit: u64,
    },

    /// A decodable image whose pixel type has no 8-bit reading (e.g. float TIFF).
    #[error("{}: {what} images are not supported; convert to 8- or 16-bit first", crate::paths::shown(.path))]
    UnsupportedPixels {
        /// The file.
        path: PathBuf,
        /// The pixel type found.
        what: String,
    },

    /// A dataset folder laid out wrongly (e.g. images directly under an ImageFolder root).
    #[error("{root}: {problem}\n  expected layout: {expected}\n  found: {}", .found.join(", "))]
    Layout {
        /// The dataset root.
        root: PathBuf,
        /// What is wrong, in words.
        problem: String,
        /// The layout the format expects.
        expected: &'static str,
        /// The first few entries actually found.
        found: Vec<String>,
    },

    /// A file or record that does not follow its format (CIFAR binary, COCO JSON, ...).
    #[error("{}: {problem}", crate::paths::shown(.path))]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the record or field it concerns.
        problem: String,
    },

    /// A transform (from a crate downstream) that could not be applied to a sample: a crop
    /// larger than the image, say. Its text says which stage and why.
    #[error("{0}")]
    Transform(String),

    /// A sample that failed to load, with its index in the dataset.
    #[error("sample {index}: {source}")]
    Sample {
        /// The sample's index in the dataset.
        index: usize,
        /// Why it failed (names the file where there is one).
        source: Box<DataError>,
    },

    /// A loader worker thread that panicked while building a batch.
    #[error("loader worker panicked while building batch {batch}: {message}")]
    WorkerPanic {
        /// The batch being built.
        batch: usize,
        /// The panic message.
        message: String,
    },

    /// An error raised by a user transform or batcher.
    #[error("{0}")]
    Custom(String),

    /// A label outside `0..num_classes` met while building a batch.
    #[error("sample {index}{}: label {label} is out of range 0..{num_classes}", show_path(.path))]
    BatchLabel {
        /// The sample's index in the dataset.
        index: usize,
        /// Its file, when it has one.
        path: Option<PathBuf>,
        /// The label found.
        label: u32,
        /// The batcher's number of classes.
        num_classes: usize,
    },

    /// A sample whose size differs from the batch's first sample.
    #[error(
        "sample {index}{}: size {found:?} (CxHxW) differs from {expected:?} of the batch's first sample; add a resize or crop transform so every sample has one size",
        show_path(.path)
    )]
    BatchShape {
        /// The sample's index in the dataset.
        index: usize,
        /// Its file, when it has one.
        path: Option<PathBuf>,
        /// The first sample's `[C, H, W]`.
        expected: [usize; 3],
        /// This sample's `[C, H, W]`.
        found: [usize; 3],
    },
}

impl DataError {
    /// Whether a transform could not be applied (a crop larger than the image, say), seen
    /// through a [`DataError::Sample`] wrapper: the stages, not the file, are what to change.
    pub fn is_transform(&self) -> bool {
        match self {
            DataError::Transform(_) => true,
            DataError::Sample { source, .. } => source.is_transform(),
            _ => false,
        }
    }
}

fn show_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" ({})", p.display()))
        .unwrap_or_default()
}
