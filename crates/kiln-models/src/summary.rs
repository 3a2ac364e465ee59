//! Model summaries: per-layer output shape, parameter count and multiply-accumulates.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{ResNetConfig, ResNetKind};
//!
//! let model = ResNetConfig::new(ResNetKind::Cifar20).init(&Device::flex())?;
//! let s = model.summary([3, 32, 32]);
//! println!("{s}"); // one line per layer, then the totals
//! assert_eq!(s.rows.last().unwrap().output, vec![10]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use std::fmt;

use burn::module::Param;
use burn::prelude::*;

/// A parameter's shape **without drawing its values**: Burn initialises parameters lazily, on
/// first use, from the device's (process-global, seeded) generator, so reading `dims()` before
/// training would draw the weights at another point of the random stream and change the run.
pub fn lazy_dims<const D: usize>(param: &Param<Tensor<D>>) -> [usize; D] {
    let shape = param.lazy_shape();
    let mut out = [0; D];
    for (o, d) in out.iter_mut().zip(shape.iter()) {
        *o = *d;
    }
    out
}

/// The row of a linear layer with a bias, labelled by `label(d_in, d_out)`.
pub(crate) fn linear_row(layer: &burn::nn::Linear, label: impl Fn(usize, usize) -> String) -> Row {
    let [d_in, d_out] = lazy_dims(&layer.weight);
    Row {
        layer: label(d_in, d_out),
        output: vec![d_out],
        params: burn::module::Module::num_params(layer),
        macs: (d_in * d_out) as u64,
    }
}

/// Asserts a model's parameter count and its summary's MACs (within 1%) against a model card.
#[cfg(test)]
pub(crate) fn assert_model_card<M: crate::Classifier>(
    name: &str,
    model: &M,
    input: [usize; 3],
    params: usize,
    gmacs: f64,
) {
    assert_eq!(burn::module::Module::num_params(model), params, "{name}");
    let s = model
        .summary(input)
        .unwrap_or_else(|| panic!("{name} has no summary"));
    assert_eq!(s.params(), params, "{name}: every parameter is in a row");
    let g = s.macs() as f64 / 1e9;
    assert!((g - gmacs).abs() < 0.01 * gmacs, "{name}: {g} GMACs");
}

/// The row of a global average pooling over `channels` channels.
pub(crate) fn global_pool_row(channels: usize) -> Row {
    Row {
        layer: "GlobalAvgPool".into(),
        output: vec![channels],
        params: 0,
        macs: 0,
    }
}

/// One layer (or block) of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What the layer is.
    pub layer: String,
    /// Its output shape for one sample (`[C, H, W]` or `[D]`).
    pub output: Vec<usize>,
    /// Its parameters (Burn's count: BatchNorm running statistics included).
    pub params: usize,
    /// Multiply-accumulates for one sample (FLOPs ≈ 2 × MACs); convolutions and linear layers only.
    pub macs: u64,
}

/// A whole model's summary for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The model's name.
    pub model: String,
    /// The input `[C, H, W]`.
    pub input: [usize; 3],
    /// Layers in order.
    pub rows: Vec<Row>,
}

impl Summary {
    /// Total parameters (Burn's count).
    pub fn params(&self) -> usize {
        self.rows.iter().map(|r| r.params).sum()
    }

    /// Total multiply-accumulates for one sample.
    pub fn macs(&self) -> u64 {
        self.rows.iter().map(|r| r.macs).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} on input {:?} (C, H, W)", self.model, self.input)?;
        let width = self
            .rows
            .iter()
            .map(|r| r.layer.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:>16}  {:>12}  {:>14}",
            "layer", "output", "params", "MACs"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<width$}  {:>16}  {:>12}  {:>14}",
                r.layer,
                format!("{:?}", r.output),
                r.params,
                r.macs
            )?;
        }
        write!(
            f,
            "total: {} parameters (incl. BatchNorm running statistics), {:.3} GMACs ≈ {:.3} GFLOPs per sample",
            self.params(),
            self.macs() as f64 / 1e9,
            2.0 * self.macs() as f64 / 1e9
        )
    }
}
