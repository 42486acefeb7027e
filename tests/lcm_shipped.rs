//! The shipped second-minimum models (models/lcm*.safetensors, trained on set sizes 2–16):
//! the LCM model's learned identity acts as one, shuffling a set's elements changes few of its
//! answers (⊕ is exactly commutative but only trained towards associativity; the bound is the
//! measured value with headroom, see BENCHMARKS.md), it still answers sets of 64 (4× the largest
//! training set), and the order-free baselines do not depend on element order at all.

use candle_core::Device;
use inferd::models::lcm::{AggKind, SetModel};
use inferd::train::graph::{evaluate, identity_error, order_sensitivity};

fn shipped(file: &str) -> SetModel {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(file);
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    SetModel::from_tensors(tensors, None, &Device::Cpu)
        .unwrap()
        .0
}

#[test]
fn the_learned_identity_leaves_pooled_sets_nearly_unchanged() {
    let model = shipped("lcm.safetensors");
    assert_eq!(model.kind(), AggKind::Lcm);
    let (rel, changed) = identity_error(&model, 32, 1024).unwrap().unwrap();
    println!("max ‖e ⊕ r − r‖ / ‖r‖ over 1024 sets of 32: {rel:.2e}; answers changed: {changed}");
    assert!(changed <= 0.005, "e ⊕ r changes {changed} of the answers");
    assert!(rel < 0.1, "max relative change {rel}");
}

#[test]
fn shuffling_changes_few_lcm_answers_and_no_order_free_answers() {
    let lcm = shipped("lcm.safetensors");
    let (changed, dp) = order_sensitivity(&lcm, 32, 1024).unwrap();
    println!(
        "lcm: {:.1} % of answers changed, mean |Δp| {dp:.2e}",
        100.0 * changed
    );
    assert!(changed <= 0.02, "{changed} of answers changed by shuffling");
    for file in ["lcm-sum.safetensors", "lcm-max.safetensors"] {
        let (changed, dp) = order_sensitivity(&shipped(file), 32, 1024).unwrap();
        assert_eq!(changed, 0.0, "{file}");
        assert!(dp < 1e-5, "{file}: mean |Δp| {dp}");
    }
}

#[test]
fn the_lcm_model_answers_sets_four_times_larger_than_it_was_trained_on() {
    let model = shipped("lcm.safetensors");
    let acc = evaluate(&model, 64, 1024, 1064, &Device::Cpu).unwrap();
    println!("exact-set accuracy at size 64: {acc}");
    assert!(acc >= 0.9, "exact-set accuracy {acc} at size 64");
}
