//! Every schedule equals `torch.optim.lr_scheduler`'s rate at every step, within 1e-9.
//!
//! Fixture `tests/fixtures/schedule/lrs.json`, made by `scripts/make_schedule_fixture.py`
//! (torch 2.15): 16 cases — constant, step, multi-step, exponential, cosine (with and without
//! min_lr), one-cycle (cos, linear, three-phase), polynomial (power 1 and 2), per step and per
//! epoch, and linear warmup in steps and in epochs (PyTorch's `SequentialLR(LinearLR, main)`).

use kiln_train::schedule::Schedule;
use serde_json::Value;

#[test]
fn every_schedule_matches_pytorch_step_by_step() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/schedule/lrs.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut worst_overall = 0f64;
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let schedule: Schedule = serde_json::from_value(serde_json::json!({
            "schedule": case["schedule"],
            "per": case["per"],
            "warmup": case["warmup"],
        }))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let base = case["base"].as_f64().unwrap();
        let spe = case["steps_per_epoch"].as_u64().unwrap() as usize;
        let total = case["total_steps"].as_u64().unwrap() as usize;
        schedule.validate(base, spe, total).unwrap();
        for (step, want) in case["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = schedule.lr_at(base, step, spe, total);
            let err = (got - want).abs();
            worst_overall = worst_overall.max(err);
            assert!(err < 1e-9, "{schedule} step {step}: kiln {got} vs PyTorch {want}");
        }
    }
    println!(
        "max |kiln - PyTorch| over {} schedules: {worst_overall:e}",
        cases.len()
    );
}
