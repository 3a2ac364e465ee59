//! The one trait the training loop needs of a model.

use burn::module::Module;
use burn::prelude::*;

use crate::ModelError;

/// An image classifier: `[N, C, H, W]` images in, `[N, classes]` logits out.
pub trait Classifier: Module + Clone + Send + 'static {
    /// A short name for messages and reports.
    fn name(&self) -> &'static str;

    /// Logits (no softmax) for a batch of images.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// Checks an input shape before it reaches layers that would panic on it.
    ///
    /// # Errors
    ///
    /// [`ModelError::InputShape`] when the model cannot take `dims`.
    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError>;

    /// Per-layer output shapes, parameters and MACs for one sample of `input_chw`, for models
    /// that describe themselves (every zoo model does; the default is `None`).
    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        let _ = input_chw;
        None
    }
}

impl Classifier for crate::ReferenceCnn {
    fn name(&self) -> &'static str {
        "ReferenceCnn"
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        crate::ReferenceCnn::check_input(self, dims)
    }

    fn summary(&self, _input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(crate::ReferenceCnn::summary(self))
    }
}
