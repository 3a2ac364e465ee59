//! The error type of kiln-transforms.

use crate::{ChannelOrder, Scale};

/// A transform applied to data it does not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// A normalization for one scale applied to data of the other.
    #[error(
        "normalization `{name}` expects {expected:?}-scale input but the batch is on the {found:?} scale; convert with Scale::{expected:?}"
    )]
    ScaleMismatch {
        /// The normalization's name.
        name: String,
        /// The scale the normalization was defined on.
        expected: Scale,
        /// The scale of the data.
        found: Scale,
    },

    /// A normalization for one channel order applied to data of another.
    #[error("normalization `{name}` expects {expected:?} channels but the batch is {found:?}")]
    OrderMismatch {
        /// The normalization's name.
        name: String,
        /// The channel order of the normalization.
        expected: ChannelOrder,
        /// The channel order of the data.
        found: ChannelOrder,
    },

    /// A normalization whose mean/std lengths do not match its channel order.
    #[error("normalization `{name}`: {what} has {found} values, expected {expected} for {order:?}")]
    ChannelCount {
        /// The normalization's name.
        name: String,
        /// `"mean"` or `"std"`.
        what: &'static str,
        /// Channel order of the normalization.
        order: ChannelOrder,
        /// Number of channels expected.
        expected: usize,
        /// Number of values found.
        found: usize,
    },

    /// A zero, negative or non-finite std (division by it would give inf/NaN).
    #[error("normalization `{name}`: std[{channel}] = {value} must be finite and > 0")]
    BadStd {
        /// The normalization's name.
        name: String,
        /// The channel.
        channel: usize,
        /// The value found.
        value: f32,
    },

    /// A resize from or to an empty size.
    #[error("cannot resize {from:?} (HxW) to {to:?}: sizes must be at least 1x1")]
    BadSize {
        /// Input `[H, W]`.
        from: [usize; 2],
        /// Requested `[H, W]`.
        to: [usize; 2],
    },

    /// A crop window that does not fit in the image.
    #[error("crop window {window:?} (top, left, height, width) does not fit in a {image:?} (HxW) image")]
    BadWindow {
        /// `[top, left, height, width]`.
        window: [usize; 4],
        /// The image's `[H, W]`.
        image: [usize; 2],
    },

    /// An augmentation factor outside its range.
    #[error("{what} factor {value} is outside {range}")]
    BadFactor {
        /// Which factor.
        what: &'static str,
        /// The value given.
        value: f32,
        /// The allowed range.
        range: &'static str,
    },

    /// An item of a short augmentation list that is not one.
    #[error("{item}: {reason}")]
    BadShorthand {
        /// The item as written.
        item: String,
        /// What is wrong.
        reason: String,
    },

    /// A stage whose settings do not fit the images it gets (e.g. a fill of 3 values on grey).
    #[error("stage `{stage}`: {reason}")]
    BadStage {
        /// The stage's `op`.
        stage: &'static str,
        /// What does not fit.
        reason: String,
    },

    /// A broken invariant inside a transform (a bug in kiln, reported rather than panicking).
    #[error("internal transform error: {0}")]
    Internal(String),

    /// A preset name that does not exist.
    #[error("unknown normalization preset `{name}`; known presets: {known}, or custom values")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },

    /// Statistics asked of an empty dataset.
    #[error("cannot compute statistics of zero pixels")]
    NoPixels,
}
