//! kiln's weight average against timm's `ModelEmaV3`: the same sequence of model states gives
//! the same averaged parameters and BatchNorm statistics.
//!
//! Fixture `tests/fixtures/ema/updates.json`, made by `scripts/make_ema_fixture.py` (torch 2.15,
//! timm 1.0.31): random states 0..8 of Linear(6, 5, no bias) → BatchNorm1d(5) → ReLU → Linear(5, 3)
//! (running statistics included); the average starts at state 0 and is updated with step t after
//! the model takes state t. Three configs: warmup with `update_after_step` 1; buffers copied
//! (`exclude_buffers=True`) with an update every 2nd step; warmup with γ 2, power 3/4 and a
//! `min_decay` floor.

use burn::module::{Module, Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_train::ema::{EmaConfig, ModelEma};
use serde_json::Value;

#[derive(Module, Debug)]
struct Tiny {
    fc1: Linear,
    bn: BatchNorm,
    fc2: Linear,
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn tensor<const D: usize>(v: &Value, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(floats(v), shape), device)
}

/// The fixture's state (PyTorch layouts) as the model.
fn model(state: &Value, device: &Device) -> Tiny {
    let mut fc1 = LinearConfig::new(6, 5).with_bias(false).init(device);
    fc1.weight = Param::from_tensor(tensor(&state["fc1.weight"], [5, 6], device).transpose());
    let mut bn = BatchNormConfig::new(5).init(device);
    bn.gamma = Param::from_tensor(tensor(&state["bn.gamma"], [5], device));
    bn.beta = Param::from_tensor(tensor(&state["bn.beta"], [5], device));
    bn.running_mean = RunningState::new(tensor(&state["bn.running_mean"], [5], device));
    bn.running_var = RunningState::new(tensor(&state["bn.running_var"], [5], device));
    let mut fc2 = LinearConfig::new(5, 3).init(device);
    fc2.weight = Param::from_tensor(tensor(&state["fc2.weight"], [3, 5], device).transpose());
    fc2.bias = Some(Param::from_tensor(tensor(&state["fc2.bias"], [3], device)));
    Tiny { fc1, bn, fc2 }
}

/// The model's tensors in PyTorch's layouts and names.
fn snapshot(m: &Tiny) -> Vec<(&'static str, Vec<f32>)> {
    let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    let w = |t: Tensor<2>| t.transpose().into_data().try_to_vec::<f32>().unwrap();
    vec![
        ("fc1.weight", w(m.fc1.weight.val())),
        ("bn.gamma", v(m.bn.gamma.val())),
        ("bn.beta", v(m.bn.beta.val())),
        ("bn.running_mean", v(m.bn.running_mean.value())),
        ("bn.running_var", v(m.bn.running_var.value())),
        ("fc2.weight", w(m.fc2.weight.val())),
        ("fc2.bias", v(m.fc2.bias.as_ref().unwrap().val())),
    ]
}

#[test]
fn the_average_equals_timms_model_ema_v3_update_by_update() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ema/updates.json"
        ))
        .unwrap(),
    )
    .unwrap();
    // The training device (autodiff), as in `fit`: the average lives on the plain one.
    let device = Device::flex().autodiff();
    let states = fixture["states"].as_array().unwrap();
    let mut worst_overall = 0f32;
    for run in fixture["runs"].as_array().unwrap() {
        let config: EmaConfig = serde_json::from_value(run["config"].clone()).unwrap();
        let mut ema = ModelEma::new(config, &model(&states[0], &device).train());
        for t in 1..=8 {
            let m = model(&states[t], &device).train();
            if ema.due(t) {
                ema.update(&m, t);
            }
            let want = &run["after"][t - 1];
            for (name, got) in snapshot(ema.model()) {
                let worst = got
                    .iter()
                    .zip(floats(&want[name]))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                worst_overall = worst_overall.max(worst);
                assert!(
                    worst < 1e-6,
                    "{} step {t} {name}: max |kiln - timm| = {worst}",
                    run["config"]
                );
            }
        }
        // Not a copy of the last state: the average kept its history.
        let last = floats(&states[8]["fc1.weight"]);
        let got = &snapshot(ema.model())[0].1;
        assert!(
            got.iter().zip(&last).any(|(a, b)| (a - b).abs() > 1e-2),
            "{}",
            run["config"]
        );
    }
    println!("max |kiln - timm| over 3 configs x 8 updates: {worst_overall:e}");
}
