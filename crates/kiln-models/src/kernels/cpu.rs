//! The kernels themselves, on plain `f32` slices in NCHW order (no Burn types), so each can be read
//! and tested on its own. Parallel over channels (BatchNorm) or over samples (pooling,
//! convolution) with rayon; every task writes a disjoint part of its output.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

/// A raw pointer that tasks writing disjoint ranges may share.
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}
// SAFETY: every user writes only ranges no other task touches, and the buffer outlives the tasks.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer `offset` elements on (a method, so that closures capture the `SyncPtr`).
    ///
    /// # Safety
    ///
    /// `offset` must stay inside the buffer.
    pub(crate) unsafe fn at(self, offset: usize) -> SyncPtr<T> {
        // SAFETY: the caller's contract.
        SyncPtr(unsafe { self.0.add(offset) })
    }

    /// The `len` elements from `offset` as a slice.
    ///
    /// # Safety
    ///
    /// The range must be in bounds and touched by no other live reference.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// A vector of `len` elements that `fill` writes, every one of them, without zeroing it first
/// (a freshly zeroed multi-megabyte buffer costs a pass over memory).
fn written_by(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    fill(spare);
    // SAFETY: every caller's `fill` writes each of the `len` elements (it covers the slice with
    // disjoint chunks whose loops write every element), so they are initialised.
    unsafe { v.set_len(len) };
    v
}

/// `s` seen as possibly-uninitialised memory, for kernels that only write floats into it.
fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the callee writes only initialised `f32`s, so `s` stays initialised.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Sum of a slice in f64 (through f32 lanes of 8, flushed per row: accurate and vectorisable).
fn sum_f64(row: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + rest.iter().map(|&v| f64::from(v)).sum::<f64>()
}

/// Per-channel mean and biased variance of `x` `[N, C, L]` (two passes, as Burn's
/// `batch_norm_train` computes them). Returns `(mean, var)`, each of length C.
pub fn channel_stats(x: &[f32], n: usize, c: usize, l: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * l) as f64;
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let rows = (0..n).map(|i| &x[(i * c + ch) * l..(i * c + ch + 1) * l]);
            let mean = rows.clone().map(sum_f64).sum::<f64>() / m;
            let mean32 = mean as f32;
            let mut var = 0f64;
            for row in rows {
                let mut acc = [0f32; 8];
                let chunks = row.chunks_exact(8);
                let rest = chunks.remainder();
                for v in chunks {
                    for i in 0..8 {
                        let d = v[i] - mean32;
                        acc[i] += d * d;
                    }
                }
                var += acc.iter().map(|&v| f64::from(v)).sum::<f64>();
                var += rest
                    .iter()
                    .map(|&v| f64::from((v - mean32) * (v - mean32)))
                    .sum::<f64>();
            }
            (mean32, (var / m) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// `y = act(x · scale[c] + shift[c])` over `[N, C, L]`, act = ReLU when `relu`.
pub fn scale_shift_act(
    x: &[f32],
    n: usize,
    c: usize,
    l: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) -> Vec<f32> {
    let y = written_by(x.len(), |y| {
        y.par_chunks_mut(l.max(1))
            .zip(x.par_chunks(l.max(1)))
            .enumerate()
            .with_min_len((4096 / l.max(1)).max(1))
            .for_each(|(row, (yr, xr))| {
                let ch = row % c;
                let (s, b) = (scale[ch], shift[ch]);
                if relu {
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        o.write((v * s + b).max(0.0));
                    }
                } else {
                    for (o, &v) in yr.iter_mut().zip(xr) {
                        o.write(v * s + b);
                    }
                }
            });
    });
    debug_assert_eq!(y.len(), n * c * l);
    y
}

/// Gradients of `y = act(γ·(x − mean)·invstd + β)` with batch statistics, given `dy`.
/// `y` is the forward output (its sign is ReLU's mask), read only when `relu` (any slice of the
/// same length will do otherwise). Returns `(dx, dγ, dβ)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_act_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    l: usize,
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if relu {
        bn_backward::<true>(x, y, dy, [n, c, l], gamma, mean, invstd)
    } else {
        bn_backward::<false>(x, y, dy, [n, c, l], gamma, mean, invstd)
    }
}

/// [`batch_norm_act_backward`] with the activation fixed at compile time, so the inner loops are
/// branch-free and vectorise (8 lanes).
fn bn_backward<const RELU: bool>(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    [n, c, l]: [usize; 3],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = Vec::with_capacity(x.len());
    let out = SyncPtr(dx.spare_capacity_mut().as_mut_ptr());
    let m = (n * l) as f32;
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mu = mean[ch];
            let (mut sum_dz, mut sum_dz_xc) = (0f64, 0f64);
            for i in 0..n {
                let o = (i * c + ch) * l;
                let (xr, yr, gr) = (&x[o..o + l], &y[o..o + l], &dy[o..o + l]);
                let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
                let ((xc, xt), (yc, yt), (gc, gt)) =
                    (xr.as_chunks::<8>(), yr.as_chunks::<8>(), gr.as_chunks::<8>());
                for ((xv, yv), gv) in xc.iter().zip(yc).zip(gc) {
                    for k in 0..8 {
                        let g = relu_mask::<RELU>(yv[k], gv[k]);
                        a[k] += g;
                        b[k] += g * (xv[k] - mu);
                    }
                }
                for ((&xv, &yv), &gv) in xt.iter().zip(yt).zip(gt) {
                    let g = relu_mask::<RELU>(yv, gv);
                    a[0] += g;
                    b[0] += g * (xv - mu);
                }
                sum_dz += a.iter().map(|&v| f64::from(v)).sum::<f64>();
                sum_dz_xc += b.iter().map(|&v| f64::from(v)).sum::<f64>();
            }
            let is = invstd[ch];
            let dbeta = sum_dz as f32;
            let dgamma = (sum_dz_xc as f32) * is;
            // dx = γ·invstd·(dz − dβ/M − x̂·dγ/M), x̂ = (x − μ)·invstd.
            let k = gamma[ch] * is;
            let mean_dz = dbeta / m;
            let coef = dgamma * is / m;
            for i in 0..n {
                let o = (i * c + ch) * l;
                let (xr, yr, gr) = (&x[o..o + l], &y[o..o + l], &dy[o..o + l]);
                // SAFETY: row (i, ch) belongs to this channel's task alone.
                let dr = unsafe { out.slice(o, l) };
                for (((d, &xv), &yv), &gv) in dr.iter_mut().zip(xr).zip(yr).zip(gr) {
                    d.write(k * (relu_mask::<RELU>(yv, gv) - mean_dz - (xv - mu) * coef));
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    // SAFETY: the channel tasks wrote every row (i, ch) of dx in full.
    unsafe { dx.set_len(x.len()) };
    let (dgamma, dbeta) = sums.into_iter().unzip();
    (dx, dgamma, dbeta)
}

/// `g`, or 0 where ReLU's output `y` is ≤ 0 (Burn's and PyTorch's `relu` backward).
#[inline(always)]
fn relu_mask<const RELU: bool>(y: f32, g: f32) -> f32 {
    if RELU && y <= 0.0 { 0.0 } else { g }
}

/// Elements per parallel task of the element-wise kernels.
const ELEMENTS_PER_TASK: usize = 1 << 15;

/// `f(a[i], b[i])` for every `i`, in parallel.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "operands of different lengths");
    written_by(a.len(), |out| {
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(
                a.par_chunks(ELEMENTS_PER_TASK)
                    .zip(b.par_chunks(ELEMENTS_PER_TASK)),
            )
            .for_each(|(out, (a, b))| {
                for ((o, &u), &v) in out.iter_mut().zip(a).zip(b) {
                    o.write(f(u, v));
                }
            });
    })
}

/// `e^x` for f32 in a form that vectorises (no libm call): `2^n · p(r)` with `x = n·ln 2 + r`,
/// `|r| ≤ ln2/2`, and p the degree-7 Taylor polynomial (relative error below 2e-7 where the
/// result is a normal float; inputs are clamped to [-87, 88]).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2^23 trick (exact for |n| < 2^22).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), with [`exp_f32`]: no
/// libm call, so loops over it vectorise.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly =
        t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

/// An element-wise activation whose backward needs only its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointwise {
    /// `x·σ(x)`.
    Silu,
    /// `x·relu6(x + 3)/6`.
    HardSwish,
    /// The exact GELU, `x·Φ(x) = ½x·(1 + erf(x/√2))`.
    Gelu,
}

impl Pointwise {
    #[inline(always)]
    fn forward(self, x: f32) -> f32 {
        match self {
            Pointwise::Silu => x / (1.0 + exp_f32(-x)),
            Pointwise::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0),
            Pointwise::Gelu => 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    /// `dy · f'(x)`; hard swish's derivative as PyTorch's (`x/3 + 1/2` on [-3, 3]).
    #[inline(always)]
    fn backward(self, x: f32, dy: f32) -> f32 {
        match self {
            Pointwise::Silu => {
                let s = 1.0 / (1.0 + exp_f32(-x));
                dy * s * (1.0 + x * (1.0 - s))
            }
            Pointwise::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    dy * (x * (1.0 / 3.0) + 0.5)
                } else {
                    dy
                }
            }
            Pointwise::Gelu => {
                // Φ(x) + x·φ(x).
                const INV_SQRT_2PI: f32 = 0.398_942_3;
                let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
                dy * (cdf + x * INV_SQRT_2PI * exp_f32(-0.5 * x * x))
            }
        }
    }
}

/// `f(x)` element-wise, in parallel.
pub fn pointwise(x: &[f32], f: Pointwise) -> Vec<f32> {
    written_by(x.len(), |out| {
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(x.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|(out, x)| match f {
                // One loop per activation, so that each vectorises.
                Pointwise::Silu => out.iter_mut().zip(x).for_each(|(o, &v)| {
                    o.write(Pointwise::Silu.forward(v));
                }),
                Pointwise::HardSwish => out.iter_mut().zip(x).for_each(|(o, &v)| {
                    o.write(Pointwise::HardSwish.forward(v));
                }),
                Pointwise::Gelu => out.iter_mut().zip(x).for_each(|(o, &v)| {
                    o.write(Pointwise::Gelu.forward(v));
                }),
            });
    })
}

/// The backward of [`pointwise`]: `dy · f'(x)`.
pub fn pointwise_backward(x: &[f32], dy: &[f32], f: Pointwise) -> Vec<f32> {
    match f {
        Pointwise::Silu => zip_map(x, dy, |v, g| Pointwise::Silu.backward(v, g)),
        Pointwise::HardSwish => zip_map(x, dy, |v, g| Pointwise::HardSwish.backward(v, g)),
        Pointwise::Gelu => zip_map(x, dy, |v, g| Pointwise::Gelu.backward(v, g)),
    }
}

/// `relu(a + b)` element-wise (a residual join).
pub fn add_relu(a: &[f32], b: &[f32]) -> Vec<f32> {
    zip_map(a, b, |u, v| (u + v).max(0.0))
}

/// ReLU's backward from its output: `dy` where `y > 0`, else 0 (Burn's and PyTorch's `relu`
/// backward, which is 0 at 0).
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    zip_map(y, dy, relu_mask::<true>)
}

/// `dx = dy · scale[c]`, zeroed where `y ≤ 0` when `relu` (the backward of [`scale_shift_act`]
/// with respect to its input).
pub fn scale_act_backward(y: &[f32], dy: &[f32], c: usize, l: usize, scale: &[f32], relu: bool) -> Vec<f32> {
    let mut dx = vec![0f32; dy.len()];
    dx.par_chunks_mut(l.max(1))
        .enumerate()
        .with_min_len((4096 / l.max(1)).max(1))
        .for_each(|(row, d)| {
            let s = scale[row % c];
            let o = row * l;
            let (yr, gr) = (&y[o..o + d.len()], &dy[o..o + d.len()]);
            for ((v, &yv), &gv) in d.iter_mut().zip(yr).zip(gr) {
                *v = if relu && yv <= 0.0 { 0.0 } else { gv * s };
            }
        });
    dx
}

/// 2×2 max-pooling with stride 2 (floor mode, no padding) over `[P, H, W]` planes. Returns the
/// output `[P, H/2, W/2]` and, per output, which of the four window positions won (0..4,
/// row-major; the first maximum wins and NaN propagates, as PyTorch and Burn).
pub fn max_pool2x2(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    pool2x2_of(x, planes, h, w, |_| |v| v)
}

/// 2×2 stride-2 max-pooling of `act_of(plane)` applied to each element of that plane: the pooled
/// values and each window's winner (0..4, row-major in the window).
fn pool2x2_of<A: Fn(f32) -> f32>(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    act_of: impl Fn(usize) -> A + Sync,
) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0f32; planes * oh * ow];
    let mut arg = vec![0u8; planes * oh * ow];
    out.par_chunks_mut((oh * ow).max(1))
        .zip(arg.par_chunks_mut((oh * ow).max(1)))
        .enumerate()
        .with_min_len(4)
        .for_each(|(p, (o, a))| {
            let act = act_of(p);
            let src = &x[p * h * w..(p + 1) * h * w];
            for i in 0..oh {
                let r0 = &src[2 * i * w..2 * i * w + 2 * ow];
                let r1 = &src[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
                let (o, a) = (&mut o[i * ow..(i + 1) * ow], &mut a[i * ow..(i + 1) * ow]);
                for (((o, a), top), bottom) in o
                    .iter_mut()
                    .zip(a)
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    // Branch-free (selects, not jumps: the winner of random data is unpredictable).
                    let (m01, i01) = pick(act(top[0]), 0, act(top[1]), 1);
                    let (m23, i23) = pick(act(bottom[0]), 2, act(bottom[1]), 3);
                    let (m, k) = pick(m01, i01, m23, i23);
                    *o = m;
                    *a = k;
                }
            }
        });
    (out, arg)
}

/// The max of two window entries, `a` (the earlier) winning ties, a NaN winning over a number
/// and the earlier NaN over a later one: `(value, index)`.
#[inline(always)]
fn pick(a: f32, ia: u8, b: f32, ib: u8) -> (f32, u8) {
    let take_b = b > a || (b.is_nan() & !a.is_nan());
    (if take_b { b } else { a }, if take_b { ib } else { ia })
}

/// The backward of [`max_pool2x2`]: each output's gradient goes to the input that won.
pub fn max_pool2x2_backward(dy: &[f32], arg: &[u8], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0f32; planes * h * w];
    dx.par_chunks_mut(h * w)
        .enumerate()
        .with_min_len(4)
        .for_each(|(p, d)| {
            let (g, a) = (&dy[p * oh * ow..], &arg[p * oh * ow..]);
            for i in 0..oh {
                for j in 0..ow {
                    let k = a[i * ow + j] as usize;
                    d[(2 * i + k / 2) * w + 2 * j + k % 2] = g[i * ow + j];
                }
            }
        });
    dx
}

/// The input position (row-major in an `h×w` plane of width `w`) of window `(i, j)`'s entry `k`.
#[inline(always)]
fn window_entry(i: usize, j: usize, k: u8, w: usize) -> usize {
    (2 * i + usize::from(k / 2)) * w + 2 * j + usize::from(k % 2)
}

/// Training-mode BatchNorm, ReLU and 2×2 stride-2 max-pooling in one pass: `x` `[n, c, h, w]`,
/// per-channel `scale = γ·invstd` and `shift = β − mean·scale` → the pooled `[n, c, h/2, w/2]` and
/// each window's winner (as [`max_pool2x2`] of [`scale_shift_act`]'s output, bit for bit). The
/// full-size activation is never written.
pub fn scale_shift_relu_pool(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    scale: &[f32],
    shift: &[f32],
) -> (Vec<f32>, Vec<u8>) {
    pool2x2_of(x, n * c, h, w, |p| {
        let (s, b) = (scale[p % c], shift[p % c]);
        move |v: f32| (v * s + b).max(0.0)
    })
}

/// The backward of [`scale_shift_relu_pool`] with batch statistics: gradients of `x`, `γ`, `β`
/// given the pooled output `y`, its winners `arg` and its gradient `dy` (`[n, c, h/2, w/2]`).
/// Only a window's winner with `y > 0` passes a gradient back through the pool and the ReLU;
/// BatchNorm's backward then reaches every input (through the batch statistics), including the
/// rows and columns an odd size leaves out of the windows.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_pool_backward(
    x: &[f32],
    y: &[f32],
    arg: &[u8],
    dy: &[f32],
    [n, c, h, w]: [usize; 4],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (oh, ow, hw) = (h / 2, w / 2, h * w);
    let ohw = oh * ow;
    let mut dx = Vec::with_capacity(x.len());
    let out = SyncPtr(dx.spare_capacity_mut().as_mut_ptr());
    let m = (n * hw) as f32;
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mu = mean[ch];
            // Σ dz and Σ dz·(x − μ) over the passing winners (dz is 0 everywhere else).
            let (mut sum_dz, mut sum_dz_xc) = (0f64, 0f64);
            for i in 0..n {
                let (plane, po) = (&x[(i * c + ch) * hw..(i * c + ch + 1) * hw], (i * c + ch) * ohw);
                let (yp, ap, gp) = (&y[po..po + ohw], &arg[po..po + ohw], &dy[po..po + ohw]);
                let (mut a, mut b) = (0f32, 0f32);
                for oi in 0..oh {
                    for oj in 0..ow {
                        let q = oi * ow + oj;
                        let g = relu_mask::<true>(yp[q], gp[q]);
                        a += g;
                        b += g * (plane[window_entry(oi, oj, ap[q], w)] - mu);
                    }
                }
                sum_dz += f64::from(a);
                sum_dz_xc += f64::from(b);
            }
            let is = invstd[ch];
            let dbeta = sum_dz as f32;
            let dgamma = (sum_dz_xc as f32) * is;
            // dx = γ·invstd·(dz − dβ/M − x̂·dγ/M): the dz-free part everywhere, then dz added
            // at the passing winners.
            let k = gamma[ch] * is;
            let mean_dz = dbeta / m;
            let coef = dgamma * is / m;
            for i in 0..n {
                let o = (i * c + ch) * hw;
                let po = (i * c + ch) * ohw;
                // SAFETY: plane (i, ch) belongs to this channel's task alone.
                let dr = unsafe { out.slice(o, hw) };
                for (d, &xv) in dr.iter_mut().zip(&x[o..o + hw]) {
                    d.write(k * (-mean_dz - (xv - mu) * coef));
                }
                // SAFETY: every element was written just above.
                let dr = unsafe { &mut *(dr as *mut [MaybeUninit<f32>] as *mut [f32]) };
                for oi in 0..oh {
                    for oj in 0..ow {
                        let q = po + oi * ow + oj;
                        let g = relu_mask::<true>(y[q], dy[q]);
                        dr[window_entry(oi, oj, arg[q], w)] += k * g;
                    }
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    // SAFETY: the channel tasks wrote every plane (i, ch) of dx in full.
    unsafe { dx.set_len(x.len()) };
    let (dgamma, dbeta) = sums.into_iter().unzip();
    (dx, dgamma, dbeta)
}

/// The shape of one 2-D convolution (dilation 1, one group), NCHW input, OIHW weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub ci: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Strides (rows, columns).
    pub stride: [usize; 2],
    /// Padding: top, left (bottom and right follow from the output size).
    pub pad: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// The geometry for an input `[n, ci, h, w]`, a weight `[co, ci, kh, kw]`, strides and
    /// padding `[top, bottom, left, right]`; `None` when the window does not fit the padded input.
    pub fn new(
        [n, ci, h, w]: [usize; 4],
        [co, kh, kw]: [usize; 3],
        stride: [usize; 2],
        [top, bottom, left, right]: [usize; 4],
    ) -> Option<Self> {
        let (ph, pw) = (h + top + bottom, w + left + right);
        if kh == 0 || kw == 0 || stride[0] == 0 || stride[1] == 0 || ph < kh || pw < kw {
            return None;
        }
        Some(ConvGeometry {
            n,
            ci,
            h,
            w,
            co,
            kh,
            kw,
            stride,
            pad: [top, left],
            oh: (ph - kh) / stride[0] + 1,
            ow: (pw - kw) / stride[1] + 1,
        })
    }

    fn ckk(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1×1 kernel with stride 1 and no padding reads the input as its own column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }

    /// Output rows `oy` whose input row `oy·s + ki − pad` lies inside `0..h`.
    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        let (s, p) = (self.stride[0], self.pad[0]);
        let lo = p.saturating_sub(ki).div_ceil(s);
        let hi = (self.h + p).saturating_sub(ki).div_ceil(s).min(self.oh);
        (lo.min(hi), hi)
    }

    /// Output columns `ox` whose input column `ox·s + kj − pad` lies inside `0..w`.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let (s, p) = (self.stride[1], self.pad[1]);
        let lo = p.saturating_sub(kj).div_ceil(s);
        let hi = (self.w + p).saturating_sub(kj).div_ceil(s).min(self.ow);
        (lo.min(hi), hi)
    }
}

/// Unfolds output rows `rows` of one sample `[ci, h, w]` into the column matrix
/// `[ci·kh·kw, rows.len()·ow]`, whose row `r` starts at `col[r·ld]` (`ld` ≥ `rows.len()·ow`:
/// several samples may sit side by side).
fn im2col(x: &[f32], g: &ConvGeometry, rows: Range<usize>, col: &mut [f32], ld: usize) {
    let ([sh, sw], [ph, pw]) = (g.stride, g.pad);
    let width = rows.len() * g.ow;
    for c in 0..g.ci {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * ld..row * ld + width];
                let (lo, hi) = g.valid_cols(kj);
                for (d, oy) in dst.chunks_exact_mut(g.ow).zip(rows.clone()) {
                    let iy = (oy * sh + ki).wrapping_sub(ph);
                    if iy >= g.h {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    let start = lo * sw + kj - pw;
                    if sw == 1 {
                        d[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (k, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = src[start + k * sw];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds the columns of output rows `rows` (row `r` of the column
/// matrix at `col[r·ld]`) back into one sample's `dx` `[ci, h, w]`.
fn col2im(col: &[f32], g: &ConvGeometry, rows: Range<usize>, dx: &mut [f32], ld: usize) {
    let ([sh, sw], [ph, pw]) = (g.stride, g.pad);
    let width = rows.len() * g.ow;
    for c in 0..g.ci {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &col[row * ld..row * ld + width];
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                for (s, oy) in src.chunks_exact(g.ow).zip(rows.clone()) {
                    let iy = (oy * sh + ki).wrapping_sub(ph);
                    if iy >= g.h {
                        continue;
                    }
                    let s = &s[lo..hi];
                    let start = lo * sw + kj - pw;
                    let d = &mut plane[iy * g.w..(iy + 1) * g.w];
                    if sw == 1 {
                        for (o, &v) in d[start..start + (hi - lo)].iter_mut().zip(s) {
                            *o += v;
                        }
                    } else {
                        for (k, &v) in s.iter().enumerate() {
                            d[start + k * sw] += v;
                        }
                    }
                }
            }
        }
    }
}

/// How the columns of a convolution are cut into `gemm` calls.
///
/// The weight gradient's inner dimension is the number of columns, and the deeper layers of a
/// network have few per sample (16 at 4×4): a `gemm` that shallow spends its time reading and
/// writing the gradient, so several small samples go side by side into one call. A large sample
/// (a 224×224 image's column matrix is 29 MB at 64 channels) is cut into bands of output rows,
/// which bounds the column buffers; bands smaller than needed cost speed (CIFAR-sized samples,
/// at most 2.3 MB, are never cut: 256 KiB bands made ResNet-18 training 5–20% slower).
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Output rows per band (all `oh` when a sample fits).
    band: usize,
    /// Samples per weight-gradient `gemm` (1 when a sample has enough columns).
    group: usize,
}

/// Floats of column matrix per band: 1M floats (4 MiB).
const BAND_FLOATS: usize = 1 << 20;

/// Columns below which the weight gradient groups samples (ResNet-18 training on CIFAR: 18–19
/// img/s without grouping, 22–24 with 256; 512 gives the same as 256).
const GROUP_COLS: usize = 256;

impl Tiling {
    fn new(g: &ConvGeometry, per: usize) -> Self {
        let band = (BAND_FLOATS / (g.ckk() * g.ow).max(1)).clamp(1, g.oh.max(1));
        let group = GROUP_COLS.div_ceil(g.ohw().max(1)).clamp(1, per.max(1));
        Tiling { band, group }
    }

    /// The bands of output rows of one sample.
    fn bands(&self, oh: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let band = self.band;
        (0..oh).step_by(band).map(move |r| r..(r + band).min(oh))
    }
}

/// Samples `0..n` split into one contiguous run per task: `(tasks, samples per task)`.
fn split_samples(n: usize) -> (usize, usize) {
    let tasks = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(tasks).max(1);
    (n.div_ceil(per), per)
}

/// The transpose `[cols, rows]` of a row-major `[rows, cols]` matrix, in cache-sized tiles.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    written_by(rows * cols, |out| {
        for r0 in (0..rows).step_by(T) {
            for c0 in (0..cols).step_by(T) {
                for r in r0..(r0 + T).min(rows) {
                    for c in c0..(c0 + T).min(cols) {
                        out[c * rows + r].write(a[r * cols + c]);
                    }
                }
            }
        }
    })
}

/// `[nb, rows, ohw]` → `[rows, nb·ohw]`: each sample's `ohw` columns side by side.
fn gather(batch: &[f32], mat: &mut [f32], rows: usize, ohw: usize, nb: usize) {
    let ld = nb * ohw;
    for j in 0..nb {
        for r in 0..rows {
            mat[r * ld + j * ohw..r * ld + (j + 1) * ohw]
                .copy_from_slice(&batch[(j * rows + r) * ohw..(j * rows + r + 1) * ohw]);
        }
    }
}

/// `c[m×n] = a·b` (or `c += a·b` when `accumulate`), single-threaded, with explicit strides
/// (`*_rs` row stride, `*_cs` column stride, in elements).
#[allow(clippy::too_many_arguments)]
fn sgemm(
    [m, n, k]: [usize; 3],
    c: &mut [MaybeUninit<f32>],
    c_rs: usize,
    accumulate: bool,
    a: &[f32],
    [a_rs, a_cs]: [usize; 2],
    b: &[f32],
    [b_rs, b_cs]: [usize; 2],
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        c.len() >= last(m, n, c_rs, 1)
            && a.len() >= last(m, k, a_rs, a_cs)
            && b.len() >= last(k, n, b_rs, b_cs),
        "sgemm operands out of bounds"
    );
    // SAFETY: the bounds are checked above; `c` is exclusively borrowed, and only read when
    // `accumulate` (callers pass initialised memory then).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr().cast::<f32>(),
            1,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// 2-D convolution forward: `x` `[n, ci, h, w]`, `weight` `[co, ci, kh, kw]` → `[n, co, oh, ow]`
/// (no bias). im2col + gemm per band of output rows ([`Tiling`]); one contiguous run of samples
/// per task, each task with its own column buffer.
pub fn conv2d(x: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (ckk, ohw, chw) = (g.ckk(), g.ohw(), g.ci * g.h * g.w);
    if g.n * g.co * ohw == 0 || chw == 0 {
        // Nothing to compute, or an empty input (whose padded windows are all zeros).
        return vec![0.0; g.n * g.co * ohw];
    }
    let (_, per) = split_samples(g.n);
    let tiling = Tiling::new(g, per);
    // Every output element is written by the gemm of its band (which does not read it).
    written_by(g.n * g.co * ohw, |y| {
        y.par_chunks_mut(per * g.co * ohw)
            .zip(x.par_chunks(per * chw))
            .for_each(|(ys, xs)| {
                let mut col = vec![
                    0f32;
                    if g.is_pointwise() {
                        0
                    } else {
                        ckk * tiling.band * g.ow
                    }
                ];
                for (yn, xn) in ys.chunks_mut(g.co * ohw).zip(xs.chunks(chw)) {
                    for rows in tiling.bands(g.oh) {
                        let (p0, width) = (rows.start * g.ow, rows.len() * g.ow);
                        let (b, b_rs): (&[f32], usize) = if g.is_pointwise() {
                            (&xn[p0..], ohw)
                        } else {
                            im2col(xn, g, rows, &mut col, width);
                            (&col, width)
                        };
                        sgemm(
                            [g.co, width, ckk],
                            &mut yn[p0..],
                            ohw,
                            false,
                            weight,
                            [ckk, 1],
                            b,
                            [b_rs, 1],
                        );
                    }
                }
            })
    })
}

/// Gradients of [`conv2d`] given `dy` `[n, co, oh, ow]`: `dx` (when `need_dx`) and `dweight`
/// (when `need_dw`). Bands of output rows as in [`conv2d`], several small samples per
/// weight-gradient gemm ([`Tiling`]); one contiguous run of samples per task, one weight-gradient
/// accumulator per task, summed at the end.
pub fn conv2d_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (ckk, ohw, chw) = (g.ckk(), g.ohw(), g.ci * g.h * g.w);
    let mut dx = need_dx.then(|| vec![0f32; g.n * chw]);
    if g.n * g.co * ohw == 0 || chw == 0 {
        return (dx, need_dw.then(|| vec![0.0; g.co * ckk]));
    }
    let dx_ptr = dx.as_mut().map(|d| SyncPtr(d.as_mut_ptr()));
    let (tasks, per) = split_samples(g.n);
    let tiling = Tiling::new(g, per);
    let pointwise = g.is_pointwise();
    // Wᵀ `[ckk, co]` stored contiguously, so that the data-gradient gemm reads the weights along
    // its inner dimension (reading `weight` transposed in place strides by `ckk` per step).
    let wt = if need_dx {
        transpose(weight, g.co, ckk)
    } else {
        Vec::new()
    };
    let partial: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let band_cols = tiling.band * g.ow;
            let group_cols = tiling.group * ohw;
            let mut dw = vec![0f32; if need_dw { g.co * ckk } else { 0 }];
            let dw_col_len = if tiling.group > 1 {
                ckk * group_cols
            } else if pointwise {
                0
            } else {
                ckk * band_cols
            };
            let mut col = vec![0f32; if need_dw { dw_col_len } else { 0 }];
            let mut dcol = vec![0f32; if need_dx && !pointwise { ckk * band_cols } else { 0 }];
            let mut dybuf = vec![
                0f32;
                if need_dw && tiling.group > 1 {
                    g.co * group_cols
                } else {
                    0
                }
            ];
            let end = ((t + 1) * per).min(g.n);
            for i in t * per..end {
                let xn = &x[i * chw..(i + 1) * chw];
                let dyn_ = &dy[i * g.co * ohw..(i + 1) * g.co * ohw];
                if let Some(ptr) = dx_ptr {
                    // SAFETY: sample i of dx belongs to this task alone.
                    let dxn = unsafe { ptr.slice(i * chw, chw) };
                    for rows in tiling.bands(g.oh) {
                        let (p0, width) = (rows.start * g.ow, rows.len() * g.ow);
                        // dcol[ckk, width] = Wᵀ[ckk, co] · dy_n[co, width]; a pointwise conv's
                        // column gradient is dx itself.
                        let (dst, ld): (&mut [f32], usize) = if pointwise {
                            (&mut dxn[p0..], ohw)
                        } else {
                            (&mut dcol, width)
                        };
                        sgemm(
                            [ckk, width, g.co],
                            as_uninit(dst),
                            ld,
                            false,
                            &wt,
                            [g.co, 1],
                            &dyn_[p0..],
                            [ohw, 1],
                        );
                        if !pointwise {
                            col2im(&dcol, g, rows, dxn, width);
                        }
                    }
                }
                if need_dw && tiling.group == 1 {
                    for rows in tiling.bands(g.oh) {
                        let (p0, width) = (rows.start * g.ow, rows.len() * g.ow);
                        let (b, b_rs): (&[f32], usize) = if pointwise {
                            (&xn[p0..], ohw)
                        } else {
                            im2col(xn, g, rows, &mut col, width);
                            (&col, width)
                        };
                        // dW[co, ckk] += dy_n[co, width] · colᵀ[width, ckk]
                        sgemm(
                            [g.co, ckk, width],
                            as_uninit(&mut dw),
                            ckk,
                            true,
                            &dyn_[p0..],
                            [ohw, 1],
                            b,
                            [1, b_rs],
                        );
                    }
                }
            }
            if need_dw && tiling.group > 1 {
                for i0 in (t * per..end).step_by(tiling.group) {
                    let nb = tiling.group.min(end - i0);
                    let ld = nb * ohw;
                    gather(
                        &dy[i0 * g.co * ohw..(i0 + nb) * g.co * ohw],
                        &mut dybuf,
                        g.co,
                        ohw,
                        nb,
                    );
                    for j in 0..nb {
                        let xj = &x[(i0 + j) * chw..(i0 + j + 1) * chw];
                        im2col(xj, g, 0..g.oh, &mut col[j * ohw..], ld);
                    }
                    // dW[co, ckk] += dy[co, ld] · colᵀ[ld, ckk], nb samples at once.
                    sgemm(
                        [g.co, ckk, ld],
                        as_uninit(&mut dw),
                        ckk,
                        true,
                        &dybuf,
                        [ld, 1],
                        &col,
                        [1, ld],
                    );
                }
            }
            dw
        })
        .collect();
    let dw = need_dw.then(|| {
        let mut it = partial.into_iter();
        let mut acc = it.next().unwrap_or_else(|| vec![0f32; g.co * ckk]);
        for p in it {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += v;
            }
        }
        acc
    });
    (dx, dw)
}

/// Calls `f(oy, iy, ox0, ix0, len, tap)` for every kernel tap `(ki, kj)` (`tap = ki·kw + kj`)
/// and every output row `oy` whose input row `iy` is inside the image: output columns
/// `ox0..ox0 + len` read input columns `ix0, ix0 + s, …` (the padding's zeros are skipped).
fn depthwise_taps(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
    let ([sh, sw], [ph, pw]) = (g.stride, g.pad);
    for ki in 0..g.kh {
        let (r0, r1) = g.valid_rows(ki);
        for kj in 0..g.kw {
            let (c0, c1) = g.valid_cols(kj);
            for oy in r0..r1 {
                f(
                    oy,
                    oy * sh + ki - ph,
                    c0,
                    c0 * sw + kj - pw,
                    c1 - c0,
                    ki * g.kw + kj,
                );
            }
        }
    }
}

/// The padded grid of a stride-1 depthwise convolution: `(hp, wp)` = `(oh + kh − 1, ow + kw −
/// 1)`. On it, output `(oy, ox)` is `Σ w[ki, kj] · xpad[(oy + ki)·wp + ox + kj]`, so each tap is
/// one long `y += w · xpad[ki·wp + kj..]` over `oh·wp` elements (the last `kw − 1` columns of
/// each output row are scratch, dropped at the end).
fn padded_grid(g: &ConvGeometry) -> (usize, usize) {
    (g.oh + g.kh - 1, g.ow + g.kw - 1)
}

/// `buf` ← one `[h, w]` plane inside zeros on the padded grid (plus `kw` zeros of slack for the
/// last tap's overrun).
fn pad_plane(plane: &[f32], g: &ConvGeometry, buf: &mut Vec<f32>) {
    let (hp, wp) = padded_grid(g);
    buf.clear();
    buf.resize(hp * wp + g.kw, 0.0);
    let ([ph, pw], w) = (g.pad, g.w);
    for (y, row) in plane.chunks_exact(w).enumerate() {
        let at = (y + ph) * wp + pw;
        buf[at..at + w].copy_from_slice(row);
    }
}

/// `y[i] += a · x[i]`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// `Σ a[i]·b[i]` with eight independent partial sums (so that it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Depthwise convolution (one k×k filter per channel: `groups = ci = co`), dilation 1: `x`
/// `[n, c, h, w]`, `weight` `[c, 1, kh, kw]` → `[n, c, oh, ow]`. One task per plane; at stride
/// 1 on the padded grid ([`padded_grid`]), otherwise row by row.
pub fn depthwise_conv2d(x: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (hw, ohw, kk) = (g.h * g.w, g.ohw(), g.kh * g.kw);
    let mut y = vec![0f32; g.n * g.ci * ohw];
    if hw == 0 || ohw == 0 {
        return y;
    }
    let sw = g.stride[1];
    let unit = g.stride == [1, 1];
    y.par_chunks_mut(ohw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(xpad, full), (plane, (yp, xp))| {
                let wc = &weight[(plane % g.ci) * kk..][..kk];
                if unit {
                    let (_, wp) = padded_grid(g);
                    pad_plane(xp, g, xpad);
                    full.clear();
                    full.resize(g.oh * wp, 0.0);
                    for ki in 0..g.kh {
                        for kj in 0..g.kw {
                            axpy(full, wc[ki * g.kw + kj], &xpad[ki * wp + kj..]);
                        }
                    }
                    for (out, row) in yp.chunks_exact_mut(g.ow).zip(full.chunks_exact(wp)) {
                        out.copy_from_slice(&row[..g.ow]);
                    }
                    return;
                }
                depthwise_taps(g, |oy, iy, ox0, ix0, len, tap| {
                    let (wv, out) = (wc[tap], &mut yp[oy * g.ow + ox0..][..len]);
                    let row = &xp[iy * g.w..][..g.w];
                    for (i, o) in out.iter_mut().enumerate() {
                        *o += wv * row[ix0 + i * sw];
                    }
                });
            },
        );
    y
}

/// Gradients of [`depthwise_conv2d`] given `dy` `[n, c, oh, ow]`: `dx` (when `need_dx`; one
/// task per plane, the forward's taps in reverse) and `dweight` (when `need_dw`; one task per
/// channel over every sample, summed in f64).
pub fn depthwise_conv2d_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (hw, ohw, kk) = (g.h * g.w, g.ohw(), g.kh * g.kw);
    let sw = g.stride[1];
    let unit = g.stride == [1, 1];
    let (hp, wp) = padded_grid(g);
    // dy's rows on the padded grid's width, zeros in the scratch columns.
    let dy_on_grid = |dyp: &[f32], buf: &mut Vec<f32>| {
        buf.clear();
        buf.resize(g.oh * wp, 0.0);
        for (row, grad) in buf.chunks_exact_mut(wp).zip(dyp.chunks_exact(g.ow)) {
            row[..g.ow].copy_from_slice(grad);
        }
    };
    let empty = hw == 0 || ohw == 0;
    let dx = need_dx.then(|| {
        let mut dx = vec![0f32; g.n * g.ci * hw];
        if empty {
            return dx;
        }
        dx.par_chunks_mut(hw)
            .zip(dy.par_chunks(ohw))
            .enumerate()
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(dxpad, dyg), (plane, (dxp, dyp))| {
                    let wc = &weight[(plane % g.ci) * kk..][..kk];
                    if unit {
                        dy_on_grid(dyp, dyg);
                        dxpad.clear();
                        dxpad.resize(hp * wp + g.kw, 0.0);
                        for ki in 0..g.kh {
                            for kj in 0..g.kw {
                                axpy(&mut dxpad[ki * wp + kj..], wc[ki * g.kw + kj], dyg);
                            }
                        }
                        let [ph, pw] = g.pad;
                        for (y, row) in dxp.chunks_exact_mut(g.w).enumerate() {
                            row.copy_from_slice(&dxpad[(y + ph) * wp + pw..][..g.w]);
                        }
                        return;
                    }
                    depthwise_taps(g, |oy, iy, ox0, ix0, len, tap| {
                        let (wv, grad) = (wc[tap], &dyp[oy * g.ow + ox0..][..len]);
                        let row = &mut dxp[iy * g.w..][..g.w];
                        for (i, &v) in grad.iter().enumerate() {
                            row[ix0 + i * sw] += wv * v;
                        }
                    });
                },
            );
        dx
    });
    let dw = need_dw.then(|| {
        let per_channel: Vec<Vec<f32>> = (0..g.ci)
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(xpad, dyg), c| {
                    let mut acc = vec![0f64; kk];
                    for n in (0..g.n).filter(|_| !empty) {
                        let plane = n * g.ci + c;
                        let (xp, dyp) = (&x[plane * hw..][..hw], &dy[plane * ohw..][..ohw]);
                        if unit {
                            pad_plane(xp, g, xpad);
                            dy_on_grid(dyp, dyg);
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let d = dot(dyg, &xpad[ki * wp + kj..][..dyg.len()]);
                                    acc[ki * g.kw + kj] += f64::from(d);
                                }
                            }
                            continue;
                        }
                        depthwise_taps(g, |oy, iy, ox0, ix0, len, tap| {
                            let (grad, row) = (&dyp[oy * g.ow + ox0..][..len], &xp[iy * g.w..][..g.w]);
                            let d: f32 = grad.iter().enumerate().map(|(i, a)| a * row[ix0 + i * sw]).sum();
                            acc[tap] += f64::from(d);
                        });
                    }
                    acc.into_iter().map(|v| v as f32).collect()
                },
            )
            .collect();
        per_channel.concat()
    });
    (dx, dw)
}

/// Rows per task of the LayerNorm kernels (a row is one token's or one pixel's channels).
const ROWS_PER_TASK: usize = 64;

/// LayerNorm over the last axis of `x` `[rows, d]`: `(x − mean)·rstd·γ + β` per row, with the
/// biased variance (two passes, as Burn's `LayerNorm`). Returns `y` and each row's mean and
/// `rstd = 1/√(var + ε)` (`[mean, rstd]` pairs) for the backward.
pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / d.max(1);
    let mut stats = vec![0f32; 2 * rows];
    let y = written_by(x.len(), |out| {
        out.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(x.par_chunks(ROWS_PER_TASK * d))
            .zip(stats.par_chunks_mut(ROWS_PER_TASK * 2))
            .for_each(|((out, x), stats)| {
                for ((o, x), s) in out.chunks_mut(d).zip(x.chunks(d)).zip(stats.chunks_mut(2)) {
                    let mean = (sum_f64(x) / d as f64) as f32;
                    let mut acc = [0f32; 8];
                    let chunks = x.chunks_exact(8);
                    let rest: f32 = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
                    for c in chunks {
                        for i in 0..8 {
                            acc[i] += (c[i] - mean) * (c[i] - mean);
                        }
                    }
                    let var = (acc.iter().sum::<f32>() + rest) / d as f32;
                    let rstd = 1.0 / (var + eps).sqrt();
                    s[0] = mean;
                    s[1] = rstd;
                    for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                        o.write((v - mean) * rstd * g + b);
                    }
                }
            });
    });
    (y, stats)
}

/// The backward of [`layer_norm`]: `(dx, dγ, dβ)` from the input, γ, the saved `[mean, rstd]`
/// pairs and `dy`. Per row, with `x̂ = (x − mean)·rstd` and `g = dy·γ`:
/// `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`; `dγ = Σ dy·x̂` and `dβ = Σ dy` over the rows.
pub fn layer_norm_backward(
    x: &[f32],
    d: usize,
    gamma: &[f32],
    stats: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    // Per-task partial sums of dγ and dβ, added up after.
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS_PER_TASK * d)
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .zip(dy.par_chunks(ROWS_PER_TASK * d))
        .zip(stats.par_chunks(ROWS_PER_TASK * 2))
        .map(|(((dx, x), dy), stats)| {
            let mut sums = vec![0f32; 2 * d];
            let (dgamma, dbeta) = sums.split_at_mut(d);
            for (((dx, x), dy), s) in dx
                .chunks_mut(d)
                .zip(x.chunks(d))
                .zip(dy.chunks(d))
                .zip(stats.chunks(2))
            {
                let (mean, rstd) = (s[0], s[1]);
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                for i in 0..d {
                    let xh = (x[i] - mean) * rstd;
                    let g = dy[i] * gamma[i];
                    sum_g += g;
                    sum_gx += g * xh;
                    dgamma[i] += dy[i] * xh;
                    dbeta[i] += dy[i];
                }
                let (mg, mgx) = (sum_g / d as f32, sum_gx / d as f32);
                for i in 0..d {
                    let xh = (x[i] - mean) * rstd;
                    dx[i] = rstd * (dy[i] * gamma[i] - mg - xh * mgx);
                }
            }
            sums
        })
        .collect();
    let mut dgamma = vec![0f32; d];
    let mut dbeta = vec![0f32; d];
    for p in &partial {
        for i in 0..d {
            dgamma[i] += p[i];
            dbeta[i] += p[d + i];
        }
    }
    (dx, dgamma, dbeta)
}

/// A strided matrix operand: base pointer, row stride, column stride (elements).
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// `c[m×n] = scale·a·b` (`c += …` when `accumulate`), single-threaded, on raw strided operands:
/// the attention's tasks write disjoint, interleaved columns of one shared buffer.
///
/// # Safety
///
/// Every element the operands address must be in bounds; no other task may touch `c`'s elements.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
    [m, n, k]: [usize; 3],
    c: SyncPtr<f32>,
    c_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    scale: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.0,
            1,
            c_rs as isize,
            accumulate,
            a.ptr,
            a.cs as isize,
            a.rs as isize,
            b.ptr,
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Multi-head self-attention on packed projections, `nn.MultiheadAttention`'s core: `qkv`
/// `[n, s, 3d]` (per token: q, k and v, each `heads` runs of `hd = d/heads`) → the heads'
/// outputs side by side, `[n, s, d]`, and the attention weights `p = softmax(q·kᵀ/√hd)`
/// `[n, heads, s, s]` for the backward. One task per (sample, head): two gemms and a row-wise
/// softmax, reading q, k, v where they lie and writing the output in place (no head transposes).
pub fn attention(qkv: &[f32], [n, s, d]: [usize; 3], heads: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(
        heads > 0 && d % heads == 0 && qkv.len() == n * s * 3 * d,
        "attention: qkv is not [n, s, 3d] with d a multiple of the heads"
    );
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; n * s * d];
    let mut p = vec![0f32; n * heads * s * s];
    let o = SyncPtr(out.as_mut_ptr());
    p.par_chunks_mut(s * s).enumerate().for_each(|(task, p)| {
        let (b, h) = (task / heads, task % heads);
        let base = b * s * 3 * d + h * hd;
        let q = Mat {
            ptr: qkv[base..].as_ptr(),
            rs: 3 * d,
            cs: 1,
        };
        let kt = Mat {
            ptr: qkv[base + d..].as_ptr(),
            rs: 1,
            cs: 3 * d,
        };
        let v = Mat {
            ptr: qkv[base + 2 * d..].as_ptr(),
            rs: 3 * d,
            cs: 1,
        };
        // SAFETY: q, k, v address rows < s of sample b inside `qkv` (length checked above);
        // `p` is this task's own chunk; the output columns h·hd.. of sample b's rows belong to
        // this task alone.
        unsafe {
            sgemm_raw([s, s, hd], SyncPtr(p.as_mut_ptr()), s, false, q, kt, scale);
        }
        for row in p.chunks_mut(s) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for z in row.iter_mut() {
                *z = exp_f32(*z - max);
                sum += *z;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|z| *z *= inv);
        }
        let pm = Mat {
            ptr: p.as_ptr(),
            rs: s,
            cs: 1,
        };
        unsafe {
            let dst = o.at(b * s * d + h * hd);
            sgemm_raw([s, hd, s], dst, d, false, pm, v, 1.0);
        }
    });
    (out, p)
}

/// The backward of [`attention`]: `d(qkv)` `[n, s, 3d]` from `qkv`, the saved weights `p` and
/// `dy` `[n, s, d]`. Per (sample, head), with `dS = p ⊙ (dP − rowsum(dP ⊙ p))` and
/// `dP = dy·vᵀ`: `dv = pᵀ·dy`, `dq = dS·k/√hd`, `dk = dSᵀ·q/√hd`.
pub fn attention_backward(
    qkv: &[f32],
    p: &[f32],
    dy: &[f32],
    [n, s, d]: [usize; 3],
    heads: usize,
) -> Vec<f32> {
    assert!(
        heads > 0
            && d % heads == 0
            && qkv.len() == n * s * 3 * d
            && p.len() == n * heads * s * s
            && dy.len() == n * s * d,
        "attention backward: mismatched shapes"
    );
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dqkv = vec![0f32; n * s * 3 * d];
    let dst = SyncPtr(dqkv.as_mut_ptr());
    p.par_chunks(s * s).enumerate().for_each(|(task, p)| {
        let (b, h) = (task / heads, task % heads);
        let base = b * s * 3 * d + h * hd;
        let at = |off: usize, rs: usize, cs: usize| Mat {
            ptr: qkv[base + off..].as_ptr(),
            rs,
            cs,
        };
        let dyh = Mat {
            ptr: dy[b * s * d + h * hd..].as_ptr(),
            rs: d,
            cs: 1,
        };
        let mut ds = vec![0f32; s * s];
        // SAFETY: operands address sample b's rows inside their buffers (lengths checked); the
        // q, k and v columns of head h in sample b's rows of `dqkv` belong to this task alone.
        unsafe {
            // dv = pᵀ·dy
            let pt = Mat {
                ptr: p.as_ptr(),
                rs: 1,
                cs: s,
            };
            sgemm_raw([s, hd, s], dst.at(base + 2 * d), 3 * d, false, pt, dyh, 1.0);
            // dP = dy·vᵀ
            sgemm_raw(
                [s, s, hd],
                SyncPtr(ds.as_mut_ptr()),
                s,
                false,
                dyh,
                at(2 * d, 1, 3 * d),
                1.0,
            );
        }
        for (dsr, pr) in ds.chunks_mut(s).zip(p.chunks(s)) {
            let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
            for (g, &w) in dsr.iter_mut().zip(pr) {
                *g = w * (*g - dot);
            }
        }
        let dsm = Mat {
            ptr: ds.as_ptr(),
            rs: s,
            cs: 1,
        };
        let dst_t = Mat {
            ptr: ds.as_ptr(),
            rs: 1,
            cs: s,
        };
        unsafe {
            // dq = dS·k·scale, dk = dSᵀ·q·scale
            sgemm_raw(
                [s, hd, s],
                dst.at(base),
                3 * d,
                false,
                dsm,
                at(d, 3 * d, 1),
                scale,
            );
            sgemm_raw(
                [s, hd, s],
                dst.at(base + d),
                3 * d,
                false,
                dst_t,
                at(0, 3 * d, 1),
                scale,
            );
        }
    });
    dqkv
}
