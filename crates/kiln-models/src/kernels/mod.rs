//! kiln's own CPU kernels on Burn's flex backend, used automatically by the zoo's layers.
//!
//! Burn 0.22.1's flex backend builds training-mode BatchNorm out of generic tensor operations
//! (swap the batch and channel axes, copy, reduce, broadcast; the same again in the backward),
//! and its max-pooling backward scatters through generic index tensors. On the reference CNN
//! those layout copies cost more than the convolutions. This module supplies fused replacements
//! as a Burn backend extension (`ext::KilnKernels`), with hand-written backward passes:
//!
//! * BatchNorm (training: batch statistics, running statistics updated exactly as Burn's
//!   [`BatchNorm`] does; inference: running statistics) fused with the ReLU that follows it —
//!   [`batch_norm_act`];
//! * 2×2 stride-2 max-pooling that keeps the winning position of each window for its backward —
//!   [`max_pool2d`], and in training BatchNorm + ReLU + that pooling in one pass that never writes
//!   the full-size activation — [`batch_norm_relu_max_pool`];
//! * convolution (im2col + gemm, backward data and weight in one pass), and depthwise
//!   convolution (direct, one plane per task; MobileNet's and EfficientNet's) — [`conv2d`];
//! * a residual join, `relu(a + b)`, whose backward keeps only the output — [`add_relu`];
//! * SiLU, hard swish and GELU in one parallel pass each way — [`silu`], [`hard_swish`],
//!   [`gelu`];
//! * LayerNorm over the last axis, one pass per row each way — [`layer_norm`] (ConvNeXt, ViT);
//! * multi-head self-attention on packed projections, two gemms and a softmax per sample and
//!   head each way — [`attention`] (ViT).
//!
//! They run only where they apply: an `f32` tensor on the flex device (plain or autodiff), with
//! the kernels [`enabled`]. Everything else (wgpu, CUDA, other dtypes, a frozen BatchNorm on the
//! training device) goes through Burn's own operations, unchanged. Switch them off for a
//! comparison or to rule them out while debugging with [`set_enabled`]`(false)` or the
//! environment variable `KILN_FAST_KERNELS=0` (read once, at the first use).
//!
//! Numerics: each kernel equals Burn's reference composition within 1e-4 relative, forward and
//! backward (`tests` below and `tests/kernels.rs` at the workspace root).
//!
//! ```
//! use burn::nn::BatchNormConfig;
//! use burn::nn::pool::MaxPool2dConfig;
//! use burn::prelude::*;
//! use kiln_models::kernels;
//!
//! let device = Device::flex();
//! let bn = BatchNormConfig::new(3).init(&device);
//! let x = Tensor::<4>::ones([2, 3, 4, 4], &device);
//! let pool = MaxPool2dConfig::new([2, 2]).init();
//! let y = kernels::max_pool2d(&pool, kernels::batch_norm_act(&bn, x, true));
//! assert_eq!(y.dims(), [2, 3, 2, 2]);
//! ```

pub(crate) mod cpu;
pub(crate) mod ext;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, LayerNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::relu as burn_relu;

use ext::KilnKernels;

/// 0: not decided yet (read `KILN_FAST_KERNELS`), 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether kiln's kernels are used where they apply (on by default; `KILN_FAST_KERNELS=0` or
/// [`set_enabled`]`(false)` turns them off).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var("KILN_FAST_KERNELS")
                .is_ok_and(|v| matches!(v.trim(), "0" | "off" | "false" | "no"));
            STATE.store(if off { 1 } else { 2 }, Ordering::Relaxed);
            !off
        }
        s => s == 2,
    }
}

/// Turns kiln's kernels on or off for the whole process (overrides `KILN_FAST_KERNELS`).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether the kernels take `x`: enabled, `f32`, on the flex device (autodiff or not).
pub fn applies_to<const D: usize>(x: &Tensor<D>) -> bool {
    enabled()
        && x.dtype() == DType::F32
        && matches!(
            x.device().without_autodiff().as_dispatch(),
            &DispatchDevice::Flex(_)
        )
}

/// `[N, C, ...]` → `[N, C, L]`, the layout the kernels take.
fn as_ncl<const D: usize>(x: Tensor<D>) -> Tensor<3> {
    let dims = x.dims();
    let l = dims[2..].iter().product::<usize>();
    x.reshape([dims[0], dims[1], l])
}

/// `bn` followed by ReLU when `relu`, exactly as `relu(bn.forward(x))` computes it (training
/// mode on an autodiff input with `bn` trainable, updating the running statistics; inference
/// mode otherwise), through kiln's fused kernel where it [applies](applies_to).
///
/// # Shapes
///
/// `[N, C, ...]` → same, with C = `bn`'s features.
///
/// # Panics
///
/// As `bn.forward`, when C is not `bn`'s feature count.
pub fn batch_norm_act<const D: usize>(bn: &BatchNorm, x: Tensor<D>, relu: bool) -> Tensor<D> {
    let dims = x.dims();
    let [features] = bn.gamma.shape().dims();
    let device = x.device();
    // Training mode exactly when Burn's `BatchNorm::forward` would train: an autodiff input and a
    // trainable layer. A frozen BatchNorm on the training device stays on Burn's path.
    let training = device.is_autodiff();
    let frozen = training && !bn.training.is_enabled();
    if frozen || !applies_to(&x) || D < 2 || dims[1] != features || dims[0] == 0 {
        let y = bn.forward(x);
        return if relu { burn_relu(y) } else { y };
    }
    let x3 = as_ncl(x);
    let y = if training {
        let stats = batch_statistics(bn, &x3);
        Tensor::<3>::from_dispatch(<Dispatch as KilnKernels>::kiln_batch_norm_act(
            x3.into_dispatch(),
            bn.gamma.val().into_dispatch(),
            bn.beta.val().into_dispatch(),
            stats.into_dispatch(),
            bn.epsilon,
            relu,
        ))
    } else {
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt());
        let shift = bn.beta.val().sub(mean.mul(scale.clone()));
        Tensor::<3>::from_dispatch(<Dispatch as KilnKernels>::kiln_scale_shift_act(
            x3.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
            relu,
        ))
    };
    y.reshape(dims)
}

/// The batch statistics of `x` `[N, C, L]` (`[2, C]`: mean, biased variance) for a training step
/// of `bn`, whose running statistics they update exactly as Burn's `BatchNorm::forward_train`.
fn batch_statistics(bn: &BatchNorm, x: &Tensor<3>) -> Tensor<2> {
    let [features] = bn.gamma.shape().dims();
    let device = x.device();
    let stats = Tensor::<2>::from_dispatch(<Dispatch as KilnKernels>::kiln_channel_stats(
        x.clone().detach().into_dispatch(),
    ));
    let mean = stats.clone().slice([0..1, 0..features]).reshape([features]);
    let var = stats.clone().slice([1..2, 0..features]).reshape([features]);
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(var.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    stats
}

/// `pool.forward(relu(bn.forward(x)))`, exactly as [`max_pool2d`] of [`batch_norm_act`]
/// computes it, with one kernel in training where both apply (a trainable `bn` on an autodiff
/// input, a 2×2 stride-2 `pool`): the full-size activation is neither written nor kept for the
/// backward, which needs only the pooled output and each window's winner.
///
/// # Shapes
///
/// `[N, C, H, W]` → `[N, C, H', W']`, with C = `bn`'s features.
///
/// # Panics
///
/// As `bn.forward`, when C is not `bn`'s feature count.
pub fn batch_norm_relu_max_pool(bn: &BatchNorm, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [features] = bn.gamma.shape().dims();
    let training = x.device().is_autodiff() && bn.training.is_enabled();
    if !training || !is_two_by_two(pool) || !applies_to(&x) || c != features || n == 0 || h < 2 || w < 2 {
        return max_pool2d(pool, batch_norm_act(bn, x, true));
    }
    let stats = batch_statistics(bn, &as_ncl(x.clone()));
    Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_batch_norm_relu_pool(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        stats.into_dispatch(),
        bn.epsilon,
    ))
}

/// A 2×2 window with stride 2, no padding or dilation, floor mode: the pooling kiln's kernels do.
fn is_two_by_two(pool: &MaxPool2d) -> bool {
    pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && matches!(
            pool.padding,
            PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
        )
        && !pool.ceil_mode
}

/// `pool.forward(x)`, through kiln's kernel where it [applies](applies_to) and `pool` is a
/// 2×2 window with stride 2, no padding or dilation, floor mode (`MaxPool2dConfig::new([2, 2])`);
/// Burn's layer otherwise.
///
/// # Shapes
///
/// `[N, C, H, W]` → `[N, C, H', W']` (`H/2`, `W/2` for the 2×2 case).
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if !is_two_by_two(pool) || !applies_to(&x) || h < 2 || w < 2 {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_max_pool2x2(x.into_dispatch()))
}

/// `relu(a + b)`, a residual connection's join, through kiln's kernel where it
/// [applies](applies_to) to both (and the shapes are equal); Burn's ops otherwise.
///
/// Same values and gradients as `relu(a + b)`, with less memory in training: Burn's `relu`
/// keeps its input for the backward, a tensor of the block's output size that nothing else
/// needs; this keeps only the output, which the next layer keeps anyway.
///
/// # Shapes
///
/// `a` and `b` of the same shape (broadcasting goes through Burn's ops) → that shape.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if a.dims() != b.dims() || !applies_to(&a) || !applies_to(&b) {
        return burn_relu(a + b);
    }
    Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_add_relu(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// SiLU (`x·σ(x)`) element-wise, as Burn's `silu`, through kiln's kernel where it
/// [applies](applies_to): one parallel pass with an exp that vectorises, and a backward from the
/// input (Burn's composes sigmoid, with a scalar `expf` per element, and a product).
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if applies_to(&x) {
        pointwise(x, 0)
    } else {
        burn::tensor::activation::silu(x)
    }
}

/// Hard swish (`x·relu6(x + 3)/6`) element-wise, as Burn's `hard_swish`, through kiln's kernel
/// where it [applies](applies_to).
pub fn hard_swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if applies_to(&x) {
        pointwise(x, 1)
    } else {
        burn::tensor::activation::hard_swish(x)
    }
}

/// The exact GELU (`½x·(1 + erf(x/√2))`) element-wise, as Burn's `gelu`, through kiln's kernel
/// where it [applies](applies_to) (an erf without libm, within 1.5e-7).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if applies_to(&x) {
        pointwise(x, 2)
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// `norm.forward(x)` (LayerNorm over the last axis, ε `epsilon`: the layer's own, which Burn
/// keeps private) through kiln's kernel where it [applies](applies_to): one pass per row each
/// way, where Burn's autodiff composes eight operations and keeps their intermediates.
///
/// # Panics
///
/// As `norm.forward`, when the last axis is not the layer's width.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let d = crate::summary::lazy_dims(&norm.gamma)[0];
    let Some(beta) = &norm.beta else {
        return norm.forward(x);
    };
    if d == 0 || x.dims()[D - 1] != d || !applies_to(&x) {
        return norm.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        epsilon,
    ))
}

/// Multi-head self-attention on packed projections, as `nn.MultiheadAttention` computes it
/// after its input projection: `qkv` `[N, S, 3D]` (per token q, k and v, each `heads` runs of
/// `D/heads`) → `[N, S, D]`, each head's `softmax(q·kᵀ/√(D/heads))·v` in its own columns.
/// kiln's kernel where it [applies](applies_to) (per sample and head, two gemms and a softmax
/// each way, no head transposes; the backward keeps the attention weights); Burn's `attention`
/// operation on the split heads otherwise.
///
/// # Panics
///
/// When the last axis is not a multiple of `3·heads`.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [n, s, d3] = qkv.dims();
    assert!(
        heads > 0 && d3 % (3 * heads) == 0,
        "attention: the last axis ({d3}) is not 3 × a multiple of {heads} heads"
    );
    if n > 0 && s > 0 && applies_to(&qkv) {
        return Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_attention(
            qkv.into_dispatch(),
            heads,
        ));
    }
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let heads_first = qkv.reshape([n, s, 3 * heads, hd]).swap_dims(1, 2);
    let part = |i: usize| heads_first.clone().narrow(1, i * heads, heads);
    burn::tensor::module::attention(part(0), part(1), part(2), None, None, Default::default())
        .swap_dims(1, 2)
        .reshape([n, s, d])
}

/// kiln's element-wise activation `kind` (the caller checked that the kernels apply).
fn pointwise<const D: usize>(x: Tensor<D>, kind: u8) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as KilnKernels>::kiln_pointwise(x.into_dispatch(), kind))
}

/// `conv.forward(x)` through kiln's convolution where it [applies](applies_to) and the layer
/// is a plain one (dilation 1, one group, explicit or no padding) or a depthwise one (as
/// plain, but one filter per channel: `groups` = input = output channels); Burn's otherwise. A
/// bias is added after the kernel.
///
/// # Shapes
///
/// `[N, C_in, H, W]` → `[N, C_out, H', W']`.
///
/// # Panics
///
/// As `conv.forward`, on an input whose channels are not the layer's.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, bottom, left, right]),
        PaddingConfig2d::Valid => Some([0, 0, 0, 0]),
        PaddingConfig2d::Same => None,
    };
    let [co, ci, kh, kw] = crate::summary::lazy_dims(&conv.weight);
    let dims = x.dims();
    let geometry = padding.and_then(|p| cpu::ConvGeometry::new(dims, [co, kh, kw], conv.stride, p));
    let fits = conv.dilation == [1, 1] && dims[0] > 0;
    let plain = fits && conv.groups == 1 && dims[1] == ci;
    let depthwise = fits && ci == 1 && conv.groups == co && dims[1] == co;
    let (Some(padding), Some(_), true, true) = (padding, geometry, plain || depthwise, applies_to(&x)) else {
        return conv.forward(x);
    };
    let kernel = if depthwise {
        <Dispatch as KilnKernels>::kiln_depthwise_conv2d
    } else {
        <Dispatch as KilnKernels>::kiln_conv2d
    };
    let y = Tensor::<4>::from_dispatch(kernel(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        conv.stride,
        padding,
    ));
    match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, co, 1, 1]),
        None => y,
    }
}

#[cfg(test)]
mod tests;
