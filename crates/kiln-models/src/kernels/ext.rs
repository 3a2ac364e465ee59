//! The kernels as a Burn backend extension: one trait, implemented for the flex backend (forward
//! only) and for autodiff over flex (forward, plus a hand-written backward registered with the
//! graph). Other backends never reach it: [`super`] checks the device first.

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::TensorData;

use super::cpu;

/// kiln's own CPU operations. `x` is `[N, C, L]` (L = H·W, or 1 for BatchNorm1d) for the
/// BatchNorm operations and `[N, C, H, W]` for pooling; all `f32`.
#[backend_extension(Flex, Autodiff)]
pub trait KilnKernels: Backend {
    /// Per-channel batch mean (row 0) and biased variance (row 1), `[2, C]`; not differentiable.
    fn kiln_channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `act(γ·(x − mean)·invstd + β)` with `stats` from [`KilnKernels::kiln_channel_stats`];
    /// differentiable in `x`, `γ` and `β` as training-mode BatchNorm (through the statistics).
    fn kiln_batch_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// `act(x·scale[c] + shift[c])`; differentiable in `x` only (inference BatchNorm).
    fn kiln_scale_shift_act(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// 2×2 max-pooling, stride 2, no padding, floor mode.
    fn kiln_max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Training-mode BatchNorm with batch statistics `stats`, ReLU, then 2×2 stride-2
    /// max-pooling, in one pass that never writes the full-size activation: `[N, C, H, W]` →
    /// `[N, C, H/2, W/2]`; differentiable in `x`, `γ` and `β`.
    fn kiln_batch_norm_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    /// `relu(a + b)` for two tensors of the same shape (a residual join); differentiable in both.
    /// The backward keeps only the output (its sign is the mask), which the next layer holds
    /// anyway: Burn's `relu` keeps its input, a tensor nothing else needs.
    fn kiln_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// An element-wise activation (`kind`: 0 SiLU, 1 hard swish, 2 GELU); differentiable, its backward
    /// keeps the input.
    fn kiln_pointwise(x: FloatTensor<Self>, kind: u8) -> FloatTensor<Self>;
    /// 2-D convolution without bias, dilation 1, one group; `padding` is
    /// `[top, bottom, left, right]`. Differentiable in `x` and `weight`.
    fn kiln_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self>;
    /// LayerNorm over the last axis of `x` `[rows, d]` with γ and β `[d]` (biased variance, ε
    /// inside the root, as Burn's `LayerNorm`); differentiable in all three.
    fn kiln_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    /// Multi-head self-attention on packed projections `qkv` `[n, s, 3d]` → `[n, s, d]`
    /// (`cpu::attention`); differentiable in `qkv`.
    fn kiln_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
    /// Depthwise 2-D convolution without bias (`weight` `[C, 1, kh, kw]`, one filter per channel
    /// of `x` `[N, C, H, W]`), dilation 1; `padding` as for [`KilnKernels::kiln_conv2d`].
    /// Differentiable in `x` and `weight`.
    fn kiln_depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Self>;
}

fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 4],
) -> cpu::ConvGeometry {
    let (xd, wd) = (x.shape().to_vec(), weight.shape().to_vec());
    // The public wrapper checked the shapes before dispatching here.
    cpu::ConvGeometry::new(
        [xd[0], xd[1], xd[2], xd[3]],
        [wd[0], wd[2], wd[3]],
        stride,
        padding,
    )
    .unwrap_or_else(|| unreachable!("kernels::conv2d checks the geometry first"))
}

fn conv(x: &FlexTensor, weight: &FlexTensor, g: &cpu::ConvGeometry) -> FlexTensor {
    let y = cpu::conv2d(&f32s(x), &f32s(weight), g);
    tensor(y, &[g.n, g.co, g.oh, g.ow])
}

fn depthwise(x: &FlexTensor, weight: &FlexTensor, g: &cpu::ConvGeometry) -> FlexTensor {
    let y = cpu::depthwise_conv2d(&f32s(x), &f32s(weight), g);
    tensor(y, &[g.n, g.co, g.oh, g.ow])
}

/// The tensor's elements in logical order (borrowed when already contiguous).
fn f32s(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .unwrap_or_default(),
        ),
    }
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// `(N, C, L)` of an `[N, C, ...]` tensor.
fn ncl(t: &FlexTensor) -> (usize, usize, usize) {
    let dims = t.shape().to_vec();
    let l = dims[2..].iter().product();
    (dims[0], dims[1], l)
}

fn stats(x: &FlexTensor) -> FlexTensor {
    let (n, c, l) = ncl(x);
    let (mean, var) = cpu::channel_stats(&f32s(x), n, c, l);
    tensor([mean, var].concat(), &[2, c])
}

/// `invstd = 1/sqrt(var + eps)` and the mean, from a `[2, C]` stats tensor.
fn mean_invstd(stats: &FlexTensor, epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    let s = f32s(stats);
    let c = s.len() / 2;
    let invstd = s[c..]
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + epsilon).sqrt()) as f32)
        .collect();
    (s[..c].to_vec(), invstd)
}

fn batch_norm_act(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    epsilon: f64,
    relu: bool,
) -> FlexTensor {
    let (n, c, l) = ncl(x);
    let (scale, shift) = scale_shift_of(gamma, beta, stats, epsilon);
    let y = cpu::scale_shift_act(&f32s(x), n, c, l, &scale, &shift, relu);
    tensor(y, &x.shape().to_vec())
}

/// BatchNorm as a per-channel `scale = γ·invstd` and `shift = β − mean·scale`.
fn scale_shift_of(
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let (mean, invstd) = mean_invstd(stats, epsilon);
    let (g, b) = (f32s(gamma), f32s(beta));
    let scale: Vec<f32> = (0..mean.len()).map(|i| g[i] * invstd[i]).collect();
    let shift: Vec<f32> = (0..mean.len()).map(|i| b[i] - mean[i] * scale[i]).collect();
    (scale, shift)
}

/// `[N, C, H, W]` of a 4-D tensor.
fn nchw(t: &FlexTensor) -> [usize; 4] {
    let d = t.shape().to_vec();
    [d[0], d[1], d[2], d[3]]
}

fn batch_norm_relu_pool(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Vec<u8>) {
    let [n, c, h, w] = nchw(x);
    let (scale, shift) = scale_shift_of(gamma, beta, stats, epsilon);
    let (y, arg) = cpu::scale_shift_relu_pool(&f32s(x), [n, c, h, w], &scale, &shift);
    (tensor(y, &[n, c, h / 2, w / 2]), arg)
}

fn scale_shift_act(x: &FlexTensor, scale: &FlexTensor, shift: &FlexTensor, relu: bool) -> FlexTensor {
    let (n, c, l) = ncl(x);
    let y = cpu::scale_shift_act(&f32s(x), n, c, l, &f32s(scale), &f32s(shift), relu);
    tensor(y, &x.shape().to_vec())
}

fn pointwise_kind(kind: u8) -> cpu::Pointwise {
    match kind {
        0 => cpu::Pointwise::Silu,
        1 => cpu::Pointwise::HardSwish,
        _ => cpu::Pointwise::Gelu,
    }
}

fn pointwise(x: &FlexTensor, kind: u8) -> FlexTensor {
    let y = cpu::pointwise(&f32s(x), pointwise_kind(kind));
    tensor(y, &x.shape().to_vec())
}

fn add_relu(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    tensor(cpu::add_relu(&f32s(a), &f32s(b)), &a.shape().to_vec())
}

fn max_pool(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    let dims = x.shape().to_vec();
    let (planes, h, w) = (dims[0] * dims[1], dims[2], dims[3]);
    let (y, arg) = cpu::max_pool2x2(&f32s(x), planes, h, w);
    (tensor(y, &[dims[0], dims[1], h / 2, w / 2]), arg)
}

/// `y` and the rows' `[mean, rstd]` pairs of [`KilnKernels::kiln_layer_norm`].
fn layer_norm(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f64) -> (FlexTensor, Vec<f32>) {
    let dims = x.shape().to_vec();
    let d = dims.last().copied().unwrap_or(1);
    let (y, stats) = cpu::layer_norm(&f32s(x), d, &f32s(gamma), &f32s(beta), epsilon as f32);
    (tensor(y, &dims), stats)
}

/// `[n, s, d]` of a packed `[n, s, 3d]` projection tensor.
fn nsd(qkv: &FlexTensor) -> [usize; 3] {
    let dims = qkv.shape().to_vec();
    [dims[0], dims[1], dims[2] / 3]
}

/// The output and the attention weights of [`KilnKernels::kiln_attention`].
fn attention(qkv: &FlexTensor, heads: usize) -> (FlexTensor, Vec<f32>) {
    let [n, s, d] = nsd(qkv);
    let (y, p) = cpu::attention(&f32s(qkv), [n, s, d], heads);
    (tensor(y, &[n, s, d]), p)
}

impl KilnKernels for Flex {
    fn kiln_channel_stats(x: FlexTensor) -> FlexTensor {
        stats(&x)
    }

    fn kiln_batch_norm_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> FlexTensor {
        batch_norm_act(&x, &gamma, &beta, &stats, epsilon, relu)
    }

    fn kiln_scale_shift_act(x: FlexTensor, scale: FlexTensor, shift: FlexTensor, relu: bool) -> FlexTensor {
        scale_shift_act(&x, &scale, &shift, relu)
    }

    fn kiln_max_pool2x2(x: FlexTensor) -> FlexTensor {
        max_pool(&x).0
    }

    fn kiln_add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        add_relu(&a, &b)
    }

    fn kiln_pointwise(x: FlexTensor, kind: u8) -> FlexTensor {
        pointwise(&x, kind)
    }

    fn kiln_batch_norm_relu_pool(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        batch_norm_relu_pool(&x, &gamma, &beta, &stats, epsilon).0
    }

    fn kiln_conv2d(x: FlexTensor, weight: FlexTensor, stride: [usize; 2], padding: [usize; 4]) -> FlexTensor {
        conv(&x, &weight, &geometry(&x, &weight, stride, padding))
    }

    fn kiln_layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
        layer_norm(&x, &gamma, &beta, epsilon).0
    }

    fn kiln_attention(qkv: FlexTensor, heads: usize) -> FlexTensor {
        attention(&qkv, heads).0
    }

    fn kiln_depthwise_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FlexTensor {
        depthwise(&x, &weight, &geometry(&x, &weight, stride, padding))
    }
}

/// The backward of [`KilnKernels::kiln_conv2d`] (`depthwise: false`) or
/// [`KilnKernels::kiln_depthwise_conv2d`].
#[derive(Debug)]
struct ConvBackward {
    depthwise: bool,
}

impl Backward<Flex, 2> for ConvBackward {
    /// x, weight, geometry.
    type State = (FlexTensor, FlexTensor, cpu::ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, g) = ops.state;
        let (backward, ci_per_filter): (fn(_, _, _, _, _, _) -> _, _) = if self.depthwise {
            (cpu::depthwise_conv2d_backward, 1)
        } else {
            (cpu::conv2d_backward, g.ci)
        };
        let (dx, dw) = backward(
            &f32s(&x),
            &f32s(&weight),
            &f32s(&dy),
            &g,
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, &[g.n, g.ci, g.h, g.w]));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, tensor(dw, &[g.co, ci_per_filter, g.kh, g.kw]));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// x, γ and the rows' `[mean, rstd]`.
    type State = (FlexTensor, FlexTensor, Arc<Vec<f32>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats) = ops.state;
        let dims = x.shape().to_vec();
        let d = dims.last().copied().unwrap_or(1);
        let (dx, dgamma, dbeta) = cpu::layer_norm_backward(&f32s(&x), d, &f32s(&gamma), &stats, &f32s(&dy));
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, &dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, &[d]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, &[d]));
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The packed projections, the attention weights and the head count.
    type State = (FlexTensor, Arc<Vec<f32>>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (qkv, p, heads) = ops.state;
        if let Some(node) = node {
            let shape = nsd(&qkv);
            let dqkv = cpu::attention_backward(&f32s(&qkv), &p, &f32s(&dy), shape, heads);
            grads.register::<Flex>(node.id, tensor(dqkv, &qkv.shape().to_vec()));
        }
    }
}

#[derive(Debug)]
struct PointwiseBackward;

impl Backward<Flex, 1> for PointwiseBackward {
    /// The input and the activation.
    type State = (FlexTensor, u8);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, kind) = ops.state;
        if let Some(node) = node_x {
            let dx = cpu::pointwise_backward(&f32s(&x), &f32s(&dy), pointwise_kind(kind));
            grads.register::<Flex>(node.id, tensor(dx, &x.shape().to_vec()));
        }
    }
}

type Ad<C> = Autodiff<Flex, C>;

#[derive(Debug)]
struct BatchNormActBackward;

impl Backward<Flex, 3> for BatchNormActBackward {
    /// x, y (only with ReLU, for its mask: without it, keeping y would hold a tensor nothing
    /// else needs, and stop the next op from reusing its buffer), γ, stats, epsilon, relu.
    type State = (FlexTensor, Option<FlexTensor>, FlexTensor, FlexTensor, f64, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, y, gamma, stats, epsilon, relu) = ops.state;
        let (n, c, l) = ncl(&x);
        let (mean, invstd) = mean_invstd(&stats, epsilon);
        let dy = f32s(&dy);
        // Without ReLU the backward does not read y; `dy` stands in (same length).
        let y = y.as_ref().map(f32s);
        let (dx, dgamma, dbeta) = cpu::batch_norm_act_backward(
            &f32s(&x),
            y.as_deref().unwrap_or(&dy),
            &dy,
            n,
            c,
            l,
            &f32s(&gamma),
            &mean,
            &invstd,
            relu,
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, &x.shape().to_vec()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, &[c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, &[c]));
        }
    }
}

#[derive(Debug)]
struct ScaleActBackward;

impl Backward<Flex, 1> for ScaleActBackward {
    /// y, scale, relu.
    type State = (FlexTensor, FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (y, scale, relu) = ops.state;
        if let Some(node) = node_x {
            let (_, c, l) = ncl(&y);
            let dx = cpu::scale_act_backward(&f32s(&y), &f32s(&dy), c, l, &f32s(&scale), relu);
            grads.register::<Flex>(node.id, tensor(dx, &y.shape().to_vec()));
        }
    }
}

#[derive(Debug)]
struct BatchNormReluPoolBackward;

impl Backward<Flex, 3> for BatchNormReluPoolBackward {
    /// x, the pooled output y, its winners, γ, stats, epsilon.
    type State = (FlexTensor, FlexTensor, Arc<Vec<u8>>, FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, y, arg, gamma, stats, epsilon) = ops.state;
        let dims = nchw(&x);
        let (mean, invstd) = mean_invstd(&stats, epsilon);
        let (dx, dgamma, dbeta) = cpu::batch_norm_relu_pool_backward(
            &f32s(&x),
            &f32s(&y),
            &arg,
            &f32s(&dy),
            dims,
            &f32s(&gamma),
            &mean,
            &invstd,
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, &dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, &[dims[1]]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, &[dims[1]]));
        }
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl Backward<Flex, 2> for AddReluBackward {
    /// The output.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let y = ops.state;
        let shape = y.shape().to_vec();
        let dx = tensor(cpu::relu_backward(&f32s(&y), &f32s(&dy)), &shape);
        match (node_a, node_b) {
            (Some(a), Some(b)) => {
                grads.register::<Flex>(a.id, dx.clone());
                grads.register::<Flex>(b.id, dx);
            }
            (Some(node), None) | (None, Some(node)) => grads.register::<Flex>(node.id, dx),
            (None, None) => {}
        }
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// Input shape `[N, C, H, W]` and the winning window positions.
    type State = ([usize; 4], Arc<Vec<u8>>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let ([n, c, h, w], arg) = ops.state;
        if let Some(node) = node_x {
            let dx = cpu::max_pool2x2_backward(&f32s(&dy), &arg, n * c, h, w);
            grads.register::<Flex>(node.id, tensor(dx, &[n, c, h, w]));
        }
    }
}

impl<C: CheckpointStrategy> KilnKernels for Ad<C> {
    fn kiln_channel_stats(x: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        // Two rows of C values, outside the graph: a fresh leaf that requires no gradient.
        // (Flex has a single, unit device.)
        Self::float_from_data(stats(x.primitive()).into_data(), &Default::default())
    }

    fn kiln_batch_norm_act(
        x: FloatTensor<Ad<C>>,
        gamma: FloatTensor<Ad<C>>,
        beta: FloatTensor<Ad<C>>,
        stats: FloatTensor<Ad<C>>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Ad<C>> {
        let stats = stats.into_primitive();
        match BatchNormActBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let y = batch_norm_act(&x, &gamma, &beta, &stats, epsilon, relu);
                prep.finish((x, relu.then(|| y.clone()), gamma, stats, epsilon, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(batch_norm_act(
                x.primitive(),
                gamma.primitive(),
                beta.primitive(),
                &stats,
                epsilon,
                relu,
            )),
        }
    }

    fn kiln_scale_shift_act(
        x: FloatTensor<Ad<C>>,
        scale: FloatTensor<Ad<C>>,
        shift: FloatTensor<Ad<C>>,
        relu: bool,
    ) -> FloatTensor<Ad<C>> {
        let (scale, shift) = (scale.into_primitive(), shift.into_primitive());
        match ScaleActBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = scale_shift_act(x.primitive(), &scale, &shift, relu);
                prep.finish((y.clone(), scale, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(scale_shift_act(x.primitive(), &scale, &shift, relu)),
        }
    }

    fn kiln_conv2d(
        x: FloatTensor<Ad<C>>,
        weight: FloatTensor<Ad<C>>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Ad<C>> {
        conv_tracked::<C>(x, weight, stride, padding, false)
    }

    fn kiln_depthwise_conv2d(
        x: FloatTensor<Ad<C>>,
        weight: FloatTensor<Ad<C>>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> FloatTensor<Ad<C>> {
        conv_tracked::<C>(x, weight, stride, padding, true)
    }

    fn kiln_max_pool2x2(x: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        let dims = x.primitive().shape().to_vec();
        let (y, arg) = max_pool(x.primitive());
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(([dims[0], dims[1], dims[2], dims[3]], Arc::new(arg)), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn kiln_layer_norm(
        x: FloatTensor<Ad<C>>,
        gamma: FloatTensor<Ad<C>>,
        beta: FloatTensor<Ad<C>>,
        epsilon: f64,
    ) -> FloatTensor<Ad<C>> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let (y, stats) = layer_norm(&x, &gamma, &beta, epsilon);
                prep.finish((x, gamma, Arc::new(stats)), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(layer_norm(x.primitive(), gamma.primitive(), beta.primitive(), epsilon).0)
            }
        }
    }

    fn kiln_attention(qkv: FloatTensor<Ad<C>>, heads: usize) -> FloatTensor<Ad<C>> {
        match AttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let qkv = qkv.into_primitive();
                let (y, p) = attention(&qkv, heads);
                prep.finish((qkv, Arc::new(p), heads), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(attention(qkv.primitive(), heads).0),
        }
    }

    fn kiln_pointwise(x: FloatTensor<Ad<C>>, kind: u8) -> FloatTensor<Ad<C>> {
        match PointwiseBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let y = pointwise(&x, kind);
                prep.finish((x, kind), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(pointwise(x.primitive(), kind)),
        }
    }

    fn kiln_add_relu(a: FloatTensor<Ad<C>>, b: FloatTensor<Ad<C>>) -> FloatTensor<Ad<C>> {
        let y = add_relu(a.primitive(), b.primitive());
        match AddReluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn kiln_batch_norm_relu_pool(
        x: FloatTensor<Ad<C>>,
        gamma: FloatTensor<Ad<C>>,
        beta: FloatTensor<Ad<C>>,
        stats: FloatTensor<Ad<C>>,
        epsilon: f64,
    ) -> FloatTensor<Ad<C>> {
        let stats = stats.into_primitive();
        match BatchNormReluPoolBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let (y, arg) = batch_norm_relu_pool(&x, &gamma, &beta, &stats, epsilon);
                prep.finish((x, y.clone(), Arc::new(arg), gamma, stats, epsilon), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                batch_norm_relu_pool(
                    x.primitive(),
                    gamma.primitive(),
                    beta.primitive(),
                    &stats,
                    epsilon,
                )
                .0,
            ),
        }
    }
}

/// A convolution (depthwise or not) on the autodiff device, with [`ConvBackward`] when tracked.
fn conv_tracked<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    weight: FloatTensor<Ad<C>>,
    stride: [usize; 2],
    padding: [usize; 4],
    depthwise_filters: bool,
) -> FloatTensor<Ad<C>> {
    let g = geometry(x.primitive(), weight.primitive(), stride, padding);
    let run = if depthwise_filters { depthwise } else { conv };
    match (ConvBackward {
        depthwise: depthwise_filters,
    })
    .prepare::<C>([x.node(), weight.node()])
    .compute_bound()
    .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (x, weight) = (x.into_primitive(), weight.into_primitive());
            let y = run(&x, &weight, &g);
            prep.finish((x, weight, g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(run(x.primitive(), weight.primitive(), &g)),
    }
}
