//! What the checks on the normal path cost per request: for one Cartesian slice (size × size, coils),
//! the time of everything the server does before the slice reaches the model — header validation with
//! its checked sizes and memory estimate, decoding the k-space bytes with the finiteness scan and mask
//! checks, the memory-budget reservation and the per-client queue ticket — against the time of the
//! reconstruction itself (the shipped default model on this machine, same process).
//! Prints CSV: size,coils,admission_us,reconstruction_ms,overhead_percent (medians).
//!
//! cargo run --release --example admission_cost [-- --size 256 --coils 4 --reps 30]

use inferd::api::{pb, tensor, validate};
use inferd::load::payload::synthetic_kspace;
use inferd::models::{Engine, Input, ReconEngine, WeightsSource, EMBEDDED_RECON};
use inferd::sched::clients::ClientQuotas;
use inferd::serve::budget::MemoryBudget;
use std::time::Instant;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let (n, coils, reps) = (arg("--size", 256), arg("--coils", 4), arg("--reps", 30));
    let k = synthetic_kspace(n, coils, 4.0, 1);
    let header = pb::ReconHeader {
        height: n as u32,
        width: n as u32,
        coils: coils as u32,
        slices: 1,
        sampling: Some(pb::Sampling {
            kind: Some(pb::sampling::Kind::Mask(tensor::encode_f32(
                &[n, n],
                &k.mask,
            ))),
        }),
        ..Default::default()
    };
    let slice = pb::KSpaceSlice {
        index: 0,
        kspace: Some(tensor::encode_c64(&[coils, n, n], &k.data)),
        mask: None,
    };
    let limits = validate::Limits::default();
    let budget = MemoryBudget::new(4 << 30, 2 << 30);
    let quotas = ClientQuotas::new(32);
    let admit = || -> anyhow::Result<Input> {
        let plan = validate::plan(&header, validate::DEFAULT_NETWORK_WIDTH, &limits)?;
        let _reservation = budget.reserve("a slice", plan.slice_bytes)?;
        let _slots = quotas.ticket("ip:127.0.0.1").acquire(1)?;
        let s = validate::slice(&plan, &slice, 0)?;
        Ok(Input::Recon {
            slice: s.into(),
            dc: plan.dc,
        })
    };
    let mut admission = Vec::new();
    for _ in 0..reps.max(3) {
        let t = Instant::now();
        let input = admit()?;
        admission.push(t.elapsed().as_secs_f64());
        drop(input);
    }
    let weights = EMBEDDED_RECON.map_or_else(
        || WeightsSource::File("models/recon-unrolled.safetensors".into()),
        WeightsSource::Embedded,
    );
    let model = ReconEngine::load(&weights, &candle_core::Device::Cpu)?;
    model.run(vec![admit()?])?; // warm-up
    let mut recon = Vec::new();
    for _ in 0..(reps / 3).max(3) {
        let input = admit()?;
        let t = Instant::now();
        model.run(vec![input])?;
        recon.push(t.elapsed().as_secs_f64());
    }
    let (a, r) = (median(admission), median(recon));
    println!("size,coils,admission_us,reconstruction_ms,overhead_percent");
    println!(
        "{n},{coils},{:.1},{:.1},{:.3}",
        a * 1e6,
        r * 1e3,
        100.0 * a / r
    );
    Ok(())
}
