//! The error type of kiln-models.

/// A model config or input that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A config field with an unusable value.
    #[error("invalid model config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it cannot work.
        reason: &'static str,
    },

    /// Input of a shape the model was not built for.
    #[error("{model} expects input [N, {expected_chw:?}] (N, C, H, W) but got {found:?}")]
    InputShape {
        /// The model's name.
        model: &'static str,
        /// `[C, H, W]` the model was configured for.
        expected_chw: [usize; 3],
        /// The shape received.
        found: Vec<usize>,
    },

    /// A model name the registry does not have.
    #[error("no model named `{name}`; the models are: {}", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },

    /// Saving or loading weights failed.
    #[error("cannot {action} weights at {path}: {reason}")]
    Weights {
        /// `"save"` or `"load"`.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error, printed.
        reason: String,
    },

    /// A layer (or model) an export cannot write.
    #[error("cannot export {layer} to {format}: {reason}")]
    Export {
        /// `ONNX`, or `torchvision's layout`.
        format: &'static str,
        /// The layer (its parameter path) or the model.
        layer: String,
        /// Why.
        reason: String,
    },

    /// A transform pipeline whose normalization is not the one the weights were trained with.
    #[error(
        "{model} was trained with normalization {expected}, but the pipeline uses {found}; use the weights' normalization, or override explicitly if this is intended"
    )]
    NormalizationMismatch {
        /// The model.
        model: String,
        /// What the weights expect.
        expected: String,
        /// What the pipeline uses.
        found: String,
    },
}

/// An `[N, C, H, W]` input with the model's channels and at least `min`×`min` pixels.
pub(crate) fn check_nchw(
    dims: &[usize],
    model: &'static str,
    channels: usize,
    min: usize,
) -> Result<(), ModelError> {
    if dims.len() == 4 && dims[0] > 0 && dims[1] == channels && dims[2] >= min && dims[3] >= min {
        Ok(())
    } else {
        Err(ModelError::InputShape {
            model,
            expected_chw: [channels, min, min],
            found: dims.to_vec(),
        })
    }
}

/// A classifier needs at least two classes.
pub(crate) fn check_num_classes(n: usize) -> Result<(), ModelError> {
    if n < 2 {
        return Err(ModelError::InvalidConfig {
            field: "num_classes",
            value: n.to_string(),
            reason: "a classifier needs at least 2 classes",
        });
    }
    Ok(())
}
