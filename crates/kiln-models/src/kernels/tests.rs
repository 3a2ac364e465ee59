//! Each kernel against Burn's own operation (the reference), forward and backward, on random
//! inputs over many shapes: strides 1 and 2, padding 0/1/2 (and asymmetric), odd sizes, batch 1,
//! channel counts that are not multiples of 8 or 16. Gradients are compared with Burn's autodiff
//! through its reference operations. Bound: max |kiln − Burn| ≤ 1e-4 · max(1, max |Burn|).

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::*;

/// Values in [-1, 1) from a xorshift generator (no global device seed: tests run in parallel).
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let len = shape.iter().product();
    Tensor::<1>::from_floats(random_values(len, seed).as_slice(), device).reshape(shape)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .unwrap_or_else(|e| panic!("not f32 data: {e:?}"))
}

#[track_caller]
fn assert_close(what: &str, kiln: Vec<f32>, burn: Vec<f32>) {
    assert_eq!(kiln.len(), burn.len(), "{what}: lengths");
    let scale = burn.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = kiln
        .iter()
        .zip(&burn)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |kiln − burn| = {worst:e} (scale {scale})"
    );
}

fn ad() -> Device {
    Device::flex().autodiff()
}

#[test]
fn kernels_apply_only_to_f32_on_flex() {
    let x = Tensor::<2>::zeros([2, 2], &Device::flex());
    assert!(applies_to(&x));
    assert!(applies_to(&Tensor::<2>::zeros([2, 2], &ad())));
}

#[test]
fn conv2d_matches_burn_forward_and_backward() {
    // (n, ci, h, w, co, k, stride, [top, bottom, left, right])
    type Case = (usize, usize, usize, usize, usize, usize, usize, [usize; 4]);
    let cases: &[Case] = &[
        (1, 1, 5, 5, 3, 3, 1, [1, 1, 1, 1]),
        (2, 3, 7, 6, 5, 3, 2, [1, 1, 1, 1]),
        (3, 4, 8, 8, 6, 1, 1, [0, 0, 0, 0]),
        (2, 5, 9, 9, 7, 1, 2, [0, 0, 0, 0]),
        (2, 2, 6, 7, 3, 5, 1, [2, 2, 2, 2]),
        (1, 17, 5, 5, 18, 3, 1, [0, 0, 0, 0]),
        (2, 3, 11, 9, 4, 3, 2, [2, 2, 2, 2]),
        (2, 2, 6, 6, 3, 3, 1, [0, 1, 1, 0]),
        (4, 32, 14, 14, 64, 3, 1, [1, 1, 1, 1]),
        (1, 3, 4, 4, 2, 3, 2, [0, 0, 0, 0]),
        // Wide rows, cut into bands of output rows (the column matrix of one band is at most 1M
        // floats): one row per band (stride 1 and 2, and a pointwise conv), and 2 + 2 + 1 rows.
        (1, 8, 3, 15000, 2, 3, 1, [1, 1, 1, 1]),
        (2, 8, 5, 30000, 2, 3, 2, [1, 1, 1, 1]),
        (1, 1100, 2, 1000, 2, 1, 1, [0, 0, 0, 0]),
        (1, 8, 5, 6000, 2, 3, 1, [1, 1, 1, 1]),
        // Small samples grouped for the weight gradient, with a partial last group.
        (8, 3, 10, 10, 4, 3, 1, [1, 1, 1, 1]),
        (9, 5, 4, 4, 6, 1, 1, [0, 0, 0, 0]),
    ];
    for (i, &(n, ci, h, w, co, k, s, [t, b, l, r])) in cases.iter().enumerate() {
        let case = format!("case {i}: x [{n},{ci},{h},{w}] k{k} s{s} pad {t},{b},{l},{r} co {co}");
        let device = ad();
        let mut conv = Conv2dConfig::new([ci, co], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .with_bias(false)
            .init(&device);
        conv.weight = Param::from_tensor(random([co, ci, k, k], 7 + i as u64, &device));
        let x = random([n, ci, h, w], 100 + i as u64, &device).require_grad();

        let y_burn = conv.forward(x.clone());
        let y_kiln = conv2d(&conv, x.clone());
        assert_eq!(y_kiln.dims(), y_burn.dims(), "{case}: output shape");
        let weights = random(y_burn.dims(), 1000 + i as u64, &device);
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        assert_close(&format!("{case}: y"), values(y_kiln), values(y_burn));
        let grad = |g: &burn::tensor::Gradients, t: &Tensor<4>| {
            values(t.grad(g).unwrap_or_else(|| panic!("{case}: no gradient")))
        };
        assert_close(&format!("{case}: dx"), grad(&g_kiln, &x), grad(&g_burn, &x));
        let w = conv.weight.val();
        assert_close(&format!("{case}: dw"), grad(&g_kiln, &w), grad(&g_burn, &w));
    }
}

#[test]
fn depthwise_conv2d_matches_burn_forward_and_backward() {
    // (n, c, h, w, k, stride, [top, bottom, left, right])
    type Case = (usize, usize, usize, usize, usize, usize, [usize; 4]);
    let cases: &[Case] = &[
        (1, 1, 5, 5, 3, 1, [1, 1, 1, 1]),
        (2, 3, 7, 6, 3, 2, [1, 1, 1, 1]),
        (2, 5, 9, 9, 5, 1, [2, 2, 2, 2]),
        (3, 17, 11, 8, 5, 2, [2, 2, 2, 2]),
        (2, 4, 6, 7, 3, 1, [0, 1, 1, 0]),
        (1, 6, 4, 4, 3, 2, [0, 0, 0, 0]),
        (2, 8, 1, 1, 3, 2, [1, 1, 1, 1]),
        (4, 72, 14, 14, 3, 1, [1, 1, 1, 1]),
        (2, 16, 28, 28, 3, 2, [1, 1, 1, 1]),
        (1, 2, 3, 13, 7, 1, [3, 3, 3, 3]),
        (2, 3, 8, 8, 1, 1, [0, 0, 0, 0]),
    ];
    for (i, &(n, c, h, w, k, s, [t, b, l, r])) in cases.iter().enumerate() {
        let case = format!("case {i}: x [{n},{c},{h},{w}] depthwise k{k} s{s} pad {t},{b},{l},{r}");
        let device = ad();
        let mut conv = Conv2dConfig::new([c, c], [k, k])
            .with_stride([s, s])
            .with_groups(c)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .with_bias(false)
            .init(&device);
        conv.weight = Param::from_tensor(random([c, 1, k, k], 7 + i as u64, &device));
        let x = random([n, c, h, w], 100 + i as u64, &device).require_grad();

        let y_burn = conv.forward(x.clone());
        let y_kiln = conv2d(&conv, x.clone());
        assert_eq!(y_kiln.dims(), y_burn.dims(), "{case}: output shape");
        let weights = random(y_burn.dims(), 1000 + i as u64, &device);
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        // The kernel itself, called directly (the wrapper falls back to Burn where it does not
        // apply, which would pass the comparisons above on its own).
        let g = cpu::ConvGeometry::new([n, c, h, w], [c, k, k], [s, s], [t, b, l, r]).unwrap();
        let direct = cpu::depthwise_conv2d(&values(x.clone()), &values(conv.weight.val()), &g);
        assert_close(&format!("{case}: direct y"), direct, values(y_burn.clone()));
        let out_dims = y_burn.dims();
        assert_close(&format!("{case}: y"), values(y_kiln), values(y_burn));
        let grad = |g: &burn::tensor::Gradients, t: &Tensor<4>| {
            values(t.grad(g).unwrap_or_else(|| panic!("{case}: no gradient")))
        };
        assert_close(&format!("{case}: dx"), grad(&g_kiln, &x), grad(&g_burn, &x));
        let w = conv.weight.val();
        assert_close(&format!("{case}: dw"), grad(&g_kiln, &w), grad(&g_burn, &w));
        let (dx, dw) = cpu::depthwise_conv2d_backward(
            &values(x.clone()),
            &values(w.clone()),
            &values(random(out_dims, 1000 + i as u64, &device)),
            &g,
            true,
            true,
        );
        assert_close(&format!("{case}: direct dx"), dx.unwrap(), grad(&g_burn, &x));
        assert_close(&format!("{case}: direct dw"), dw.unwrap(), grad(&g_burn, &w));
    }
    // A grouped convolution that is not depthwise (two channels per group) stays with Burn and
    // gives its result.
    let device = Device::flex();
    let mut grouped = Conv2dConfig::new([4, 4], [3, 3]).with_groups(2).init(&device);
    grouped.weight = Param::from_tensor(random([4, 2, 3, 3], 5, &device));
    let x = random([1, 4, 5, 5], 6, &device);
    assert_close(
        "grouped",
        values(conv2d(&grouped, x.clone())),
        values(grouped.forward(x)),
    );
}

#[test]
fn exp_f32_is_within_a_few_ulps_of_libm() {
    let mut worst = 0f64;
    for i in -87_000..=88_000 {
        let x = i as f32 / 1000.0;
        let (got, want) = (f64::from(cpu::exp_f32(x)), f64::from(x.exp()));
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 5e-7, "max relative error {worst:e}");
    assert_eq!(cpu::exp_f32(-1000.0), (-87f32).exp(), "clamped below");
    assert!(cpu::exp_f32(1000.0).is_finite(), "clamped above");
}

#[test]
fn silu_hard_swish_and_gelu_match_burn_forward_and_backward() {
    use burn::tensor::activation::{gelu as burn_gelu, hard_swish as burn_hard_swish, silu as burn_silu};
    type Act = fn(Tensor<3>) -> Tensor<3>;
    let cases: [(&str, Act, Act); 3] = [
        ("silu", silu::<3>, burn_silu::<3>),
        ("hard swish", hard_swish::<3>, burn_hard_swish::<3>),
        ("gelu", gelu::<3>, burn_gelu::<3>),
    ];
    for (name, kiln, burn) in cases {
        // Values over [-12, 12) (both saturations of hard swish, SiLU's tails), and a tensor
        // larger than one parallel task.
        for (i, shape) in [[2, 3, 5], [3, 70, 400]].into_iter().enumerate() {
            let device = ad();
            let x = random(shape, 40 + i as u64, &device)
                .mul_scalar(12.0)
                .require_grad();
            let weights = random(shape, 50 + i as u64, &device);
            let (y_kiln, y_burn) = (kiln(x.clone()), burn(x.clone()));
            let g_kiln = (y_kiln.clone() * weights.clone()).sum().backward();
            let g_burn = (y_burn.clone() * weights).sum().backward();
            assert_close(&format!("{name} {shape:?}: y"), values(y_kiln), values(y_burn));
            let (dk, db) = (x.grad(&g_kiln).unwrap(), x.grad(&g_burn).unwrap());
            assert_close(&format!("{name} {shape:?}: dx"), values(dk), values(db));
        }
    }
    // The kernel itself (the wrappers fall back to Burn where it does not apply).
    let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
    let want: Vec<f32> = x.iter().map(|&v| v / (1.0 + (-v).exp())).collect();
    assert_close("direct silu", cpu::pointwise(&x, cpu::Pointwise::Silu), want);
    let want: Vec<f32> = x.iter().map(|&v| v * (v + 3.0).clamp(0.0, 6.0) / 6.0).collect();
    assert_close(
        "direct hard swish",
        cpu::pointwise(&x, cpu::Pointwise::HardSwish),
        want,
    );
}

#[test]
fn conv2d_with_bias_and_on_plain_tensors_matches_burn() {
    let device = Device::flex();
    let mut conv = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    conv.weight = Param::from_tensor(random([4, 3, 3, 3], 1, &device));
    conv.bias = Some(Param::from_tensor(random([4], 2, &device)));
    let x = random([2, 3, 6, 5], 3, &device);
    assert_close("bias", values(conv2d(&conv, x.clone())), values(conv.forward(x)));
}

fn batch_norm(c: usize, seed: u64, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(c).init(device);
    bn.gamma = Param::from_tensor(random([c], seed, device).add_scalar(1.5));
    bn.beta = Param::from_tensor(random([c], seed + 1, device));
    bn
}

/// dγ, dβ and the running statistics of a BatchNorm trained through kiln's kernel and of one
/// trained through Burn's layer, compared.
#[track_caller]
fn assert_same_batch_norm_training(
    case: &str,
    (kiln, g_kiln): (&BatchNorm, &burn::tensor::Gradients),
    (burn, g_burn): (&BatchNorm, &burn::tensor::Gradients),
) {
    for (name, k, b) in [
        ("dgamma", kiln.gamma.val(), burn.gamma.val()),
        ("dbeta", kiln.beta.val(), burn.beta.val()),
    ] {
        let k = k.grad(g_kiln).unwrap_or_else(|| panic!("{case}: no {name}"));
        let b = b.grad(g_burn).unwrap_or_else(|| panic!("{case}: no {name}"));
        assert_close(&format!("{case}: {name}"), values(k), values(b));
    }
    for (name, k, b) in [
        (
            "running mean",
            kiln.running_mean.value(),
            burn.running_mean.value(),
        ),
        ("running var", kiln.running_var.value(), burn.running_var.value()),
    ] {
        assert_close(&format!("{case}: {name}"), values(k), values(b));
    }
}

#[test]
fn batch_norm_act_matches_burn_in_training_with_running_statistics() {
    let shapes: &[[usize; 4]] = &[
        [1, 3, 5, 5],
        [4, 7, 3, 9],
        [8, 32, 14, 14],
        [2, 5, 1, 1],
        [3, 17, 2, 13],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        for act in [true, false] {
            let case = format!("x {shape:?} relu {act}");
            let device = ad();
            let c = shape[1];
            let (bn_burn, bn_kiln) = (
                batch_norm(c, 10 + i as u64, &device),
                batch_norm(c, 10 + i as u64, &device),
            );
            // Shift and scale the input so the statistics are far from 0 and 1.
            let x = random(shape, 20 + i as u64, &device)
                .mul_scalar(3.0)
                .add_scalar(2.0)
                .require_grad();
            let y_burn = bn_burn.forward(x.clone());
            let y_burn = if act { relu(y_burn) } else { y_burn };
            let y_kiln = batch_norm_act(&bn_kiln, x.clone(), act);
            let weights = random(shape, 30 + i as u64, &device);
            let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
            let g_kiln = (y_kiln.clone() * weights).sum().backward();
            assert_close(&format!("{case}: y"), values(y_kiln), values(y_burn));
            let dx =
                |g: &burn::tensor::Gradients| values(x.grad(g).unwrap_or_else(|| panic!("{case}: no dx")));
            assert_close(&format!("{case}: dx"), dx(&g_kiln), dx(&g_burn));
            assert_same_batch_norm_training(&case, (&bn_kiln, &g_kiln), (&bn_burn, &g_burn));
            // Inference afterwards (plain tensors): running statistics, fused affine + ReLU.
            let plain = x.clone().detach().without_autodiff();
            let (ek, eb) = (bn_kiln.valid(), bn_burn.valid());
            let y_burn = eb.forward(plain.clone());
            let y_burn = if act { relu(y_burn) } else { y_burn };
            assert_close(
                &format!("{case}: inference y"),
                values(batch_norm_act(&ek, plain, act)),
                values(y_burn),
            );
        }
    }
}

#[test]
fn batch_norm_act_on_two_dimensional_input_is_batch_norm_1d() {
    let device = ad();
    let (bn_burn, bn_kiln) = (batch_norm(6, 3, &device), batch_norm(6, 3, &device));
    let x = random([5, 6], 4, &device).require_grad();
    let y_burn = relu(bn_burn.forward(x.clone()));
    let y_kiln = batch_norm_act(&bn_kiln, x.clone(), true);
    let g_burn = y_burn.clone().sum().backward();
    let g_kiln = y_kiln.clone().sum().backward();
    assert_close("y", values(y_kiln), values(y_burn));
    assert_close(
        "dx",
        values(x.grad(&g_kiln).unwrap_or_else(|| panic!("no dx"))),
        values(x.grad(&g_burn).unwrap_or_else(|| panic!("no dx"))),
    );
}

#[test]
fn max_pool2d_matches_burn_including_ties_and_odd_sizes() {
    let pool = MaxPool2dConfig::new([2, 2]).init();
    for (i, shape) in [[2, 3, 6, 6], [1, 5, 7, 7], [3, 2, 5, 8], [1, 1, 2, 3]]
        .into_iter()
        .enumerate()
    {
        let device = ad();
        // ReLU first: many windows then hold several equal zeros (the first one must win).
        let x = random(shape, 50 + i as u64, &device).require_grad();
        let y_burn = pool.forward(relu(x.clone()));
        let y_kiln = max_pool2d(&pool, relu(x.clone()));
        assert_eq!(y_kiln.dims(), y_burn.dims());
        let weights = random(y_burn.dims(), 60 + i as u64, &device);
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        assert_eq!(values(y_kiln), values(y_burn), "{shape:?}: y");
        assert_eq!(
            values(x.grad(&g_kiln).unwrap_or_else(|| panic!("no dx"))),
            values(x.grad(&g_burn).unwrap_or_else(|| panic!("no dx"))),
            "{shape:?}: dx"
        );
    }
}

#[test]
fn max_pool2d_propagates_nan_like_burn() {
    let device = Device::flex();
    let x = Tensor::<1>::from_floats([1.0, f32::NAN, 3.0, 2.0], &device).reshape([1, 1, 2, 2]);
    let y = values(max_pool2d(&MaxPool2dConfig::new([2, 2]).init(), x));
    assert!(y[0].is_nan(), "{y:?}");
}

#[test]
fn max_pool2d_other_than_2x2_stride_2_is_burns_layer() {
    let device = Device::flex();
    let pool = MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init();
    let x = random([2, 3, 8, 8], 70, &device);
    let y = max_pool2d(&pool, x.clone());
    assert_eq!(y.dims(), [2, 3, 4, 4]);
    assert_eq!(values(y), values(pool.forward(x)));
}

#[test]
fn add_relu_matches_burn_including_exact_zeros() {
    let device = ad();
    let shape = [3, 5, 7, 9];
    let a = random(shape, 11, &device);
    // b = −a on every third element: a + b is exactly 0 there, where ReLU's gradient is 0.
    let b_vals: Vec<f32> = random_values(3 * 5 * 7 * 9, 12)
        .into_iter()
        .zip(values(a.clone()))
        .enumerate()
        .map(|(i, (r, av))| if i % 3 == 0 { -av } else { r })
        .collect();
    let b = Tensor::<1>::from_floats(b_vals.as_slice(), &device).reshape(shape);
    let weights = random(shape, 13, &device);
    for (grad_a, grad_b) in [(true, true), (true, false), (false, true)] {
        let case = format!("a requires grad {grad_a}, b {grad_b}");
        let (a, b) = (a.clone(), b.clone());
        let a = if grad_a { a.require_grad() } else { a };
        let b = if grad_b { b.require_grad() } else { b };
        let y_burn = relu(a.clone() + b.clone());
        let y_kiln = add_relu(a.clone(), b.clone());
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights.clone()).sum().backward();
        assert_eq!(values(y_kiln), values(y_burn), "{case}: y");
        for (t, on) in [(&a, grad_a), (&b, grad_b)] {
            match (t.grad(&g_kiln), t.grad(&g_burn)) {
                (Some(k), Some(r)) => assert_eq!(values(k), values(r), "{case}: gradient"),
                (None, None) => assert!(!on, "{case}: no gradient"),
                _ => panic!("{case}: one side has a gradient, the other not"),
            }
        }
    }
    // Plain tensors, and shapes that only broadcast (Burn's ops).
    let (p, q) = (
        random([2, 3], 1, &Device::flex()),
        random([2, 3], 2, &Device::flex()),
    );
    assert_eq!(
        values(add_relu(p.clone(), q.clone())),
        values(relu(p.clone() + q))
    );
    let row = random([1, 3], 3, &Device::flex());
    assert_eq!(values(add_relu(p.clone(), row.clone())), values(relu(p + row)));
}

#[test]
fn batch_norm_relu_max_pool_matches_burn_in_training() {
    // Odd sizes (a row and a column outside every window), batch 1, many ReLU zeros (ties in
    // the pool: the input is centred, so about half the activations are 0).
    let shapes: &[[usize; 4]] = &[
        [1, 3, 5, 7],
        [4, 7, 6, 6],
        [8, 32, 14, 14],
        [3, 17, 2, 13],
        [2, 4, 3, 2],
    ];
    let pool = MaxPool2dConfig::new([2, 2]).init();
    for (i, &shape) in shapes.iter().enumerate() {
        let case = format!("x {shape:?}");
        let device = ad();
        let c = shape[1];
        let (bn_burn, bn_kiln, bn_unfused) = (
            batch_norm(c, 40 + i as u64, &device),
            batch_norm(c, 40 + i as u64, &device),
            batch_norm(c, 40 + i as u64, &device),
        );
        let x = random(shape, 50 + i as u64, &device)
            .mul_scalar(3.0)
            .add_scalar(0.5)
            .require_grad();
        let y_burn = pool.forward(relu(bn_burn.forward(x.clone())));
        let y_kiln = batch_norm_relu_max_pool(&bn_kiln, &pool, x.clone());
        // The same values as kiln's unfused kernels, bit for bit (same arithmetic, same winners).
        let y_unfused = max_pool2d(&pool, batch_norm_act(&bn_unfused, x.clone(), true));
        assert_eq!(
            values(y_kiln.clone()),
            values(y_unfused),
            "{case}: fused vs unfused y"
        );
        let weights = random(y_burn.dims(), 60 + i as u64, &device);
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        assert_close(&format!("{case}: y"), values(y_kiln), values(y_burn));
        let dx = |g: &burn::tensor::Gradients| values(x.grad(g).unwrap_or_else(|| panic!("{case}: no dx")));
        assert_close(&format!("{case}: dx"), dx(&g_kiln), dx(&g_burn));
        assert_same_batch_norm_training(&case, (&bn_kiln, &g_kiln), (&bn_burn, &g_burn));
    }
    // Inference (plain tensors) and other pools go through the unfused path.
    let device = Device::flex();
    let bn = batch_norm(3, 1, &device);
    let x = random([2, 3, 6, 6], 2, &device);
    let three = MaxPool2dConfig::new([3, 3]).init();
    assert_close(
        "inference, 3×3 pool",
        values(batch_norm_relu_max_pool(&bn, &three, x.clone())),
        values(three.forward(relu(bn.forward(x)))),
    );
}

#[test]
fn layer_norm_matches_burn_forward_and_backward() {
    use burn::nn::LayerNormConfig;
    // Widths that are not multiples of 8 and rows spanning several tasks (64 rows each); an
    // offset mean, as activations have, so a one-pass variance would show.
    let shapes: &[[usize; 2]] = &[[1, 1], [3, 5], [130, 7], [197, 64], [70, 384]];
    for (i, &[rows, d]) in shapes.iter().enumerate() {
        let case = format!("x [{rows}, {d}]");
        let device = ad();
        let mut norm = LayerNormConfig::new(d).with_epsilon(1e-6).init(&device);
        norm.gamma = Param::from_tensor(random([d], 70 + i as u64, &device).add_scalar(1.0));
        norm.beta = Some(Param::from_tensor(random([d], 80 + i as u64, &device)));
        let x = random([rows, d], 90 + i as u64, &device)
            .mul_scalar(2.0)
            .add_scalar(3.0)
            .require_grad();
        let y_burn = norm.forward(x.clone());
        let y_kiln = layer_norm(&norm, 1e-6, x.clone());
        let weights = random([rows, d], 100 + i as u64, &device);
        let g_burn = (y_burn.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        assert_close(&format!("{case}: y"), values(y_kiln), values(y_burn));
        assert_close(
            &format!("{case}: dx"),
            values(x.grad(&g_kiln).unwrap()),
            values(x.grad(&g_burn).unwrap()),
        );
        let beta = norm.beta.as_ref().unwrap();
        assert_close(
            &format!("{case}: dγ"),
            values(norm.gamma.grad(&g_kiln).unwrap()),
            values(norm.gamma.grad(&g_burn).unwrap()),
        );
        assert_close(
            &format!("{case}: dβ"),
            values(beta.grad(&g_kiln).unwrap()),
            values(beta.grad(&g_burn).unwrap()),
        );
    }
    // Plain tensors (inference) and a 3-D input.
    let device = Device::flex();
    let norm = LayerNormConfig::new(6).init(&device);
    let x = random([2, 4, 6], 3, &device);
    assert_close(
        "inference, 3-D",
        values(layer_norm(&norm, 1e-5, x.clone())),
        values(norm.forward(x)),
    );
}

#[test]
fn attention_matches_burn_forward_and_backward() {
    use burn::tensor::activation::softmax;
    // (n, s, d, heads): one token, odd sequence lengths, head widths 1 and not a multiple of 8.
    let shapes: &[[usize; 4]] = &[
        [1, 1, 4, 2],
        [2, 5, 6, 3],
        [3, 17, 12, 1],
        [2, 50, 48, 4],
        [1, 65, 64, 2],
    ];
    for (i, &[n, s, d, heads]) in shapes.iter().enumerate() {
        let case = format!("qkv [{n}, {s}, {}], {heads} heads", 3 * d);
        let device = ad();
        let qkv = random([n, s, 3 * d], 110 + i as u64, &device)
            .mul_scalar(2.0)
            .require_grad();
        let hd = d / heads;
        let reference = {
            let x = qkv.clone().reshape([n, s, 3 * heads, hd]).swap_dims(1, 2);
            let part = |j: usize| x.clone().narrow(1, j * heads, heads);
            let scores = part(0)
                .matmul(part(1).swap_dims(2, 3))
                .mul_scalar(1.0 / (hd as f64).sqrt());
            softmax(scores, 3)
                .matmul(part(2))
                .swap_dims(1, 2)
                .reshape([n, s, d])
        };
        let y_kiln = attention(qkv.clone(), heads);
        let weights = random([n, s, d], 120 + i as u64, &device);
        let g_burn = (reference.clone() * weights.clone()).sum().backward();
        let g_kiln = (y_kiln.clone() * weights).sum().backward();
        assert_close(&format!("{case}: y"), values(y_kiln), values(reference));
        assert_close(
            &format!("{case}: d(qkv)"),
            values(qkv.grad(&g_kiln).unwrap()),
            values(qkv.grad(&g_burn).unwrap()),
        );
    }
    // Plain tensors (inference): the same values as on the autodiff device.
    let qkv = random([2, 9, 24], 5, &ad());
    let plain = Tensor::<3>::from_data(qkv.to_data(), &Device::flex());
    assert_close(
        "plain vs autodiff",
        values(attention(plain, 2)),
        values(attention(qkv, 2)),
    );
}
