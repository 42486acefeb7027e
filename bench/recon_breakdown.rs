//! Where the time of one served Cartesian reconstruction goes, stage by stage, with the server's own
//! functions in the server's order: decode (protobuf message → validated slice), FFT + zero-fill +
//! coil combination (`recon::prepare`), the network, data consistency (`recon::finish`), encode (the
//! image message). Single-coil and 8-coil 256² slices, the shipped recon-lite and the full-size
//! network (random weights), on the CPU kernels; medians of `ITERS` runs in milliseconds.
//!
//! cargo run --release --example recon_breakdown [ITERS]

use inferd::api::{pb, tensor, validate};
use inferd::models::{ReconEngine, WeightsSource};
use inferd::mri::{dc::DcMode, fft, phantom, recon};
use num_complex::Complex32;
use prost::Message;
use std::time::Instant;

fn kspace(coils: usize, n: usize) -> Vec<Complex32> {
    let img = phantom::SyntheticMr::new(3).sample(n, n).complex;
    let mut k: Vec<Complex32> = (0..coils)
        .flat_map(|c| {
            img.iter().enumerate().map(move |(i, v)| {
                let (y, x) = ((i / n) as f32 / n as f32, (i % n) as f32 / n as f32);
                v * (1.0 + 0.5 * ((c as f32 + x) * 1.3).sin() * (y + 0.2 * c as f32).cos())
            })
        })
        .collect();
    for plane in k.chunks_exact_mut(n * n) {
        fft::fft2c(plane, n, n);
    }
    k
}

fn header(coils: usize, n: usize, dc: pb::data_consistency::Mode) -> pb::ReconHeader {
    pb::ReconHeader {
        height: n as u32,
        width: n as u32,
        coils: coils as u32,
        slices: 1,
        sampling: Some(pb::Sampling::variable_density(4.0, 1)),
        data_consistency: Some(pb::DataConsistency {
            mode: dc as i32,
            // the CLI's default weight of the measured samples
            lambda: 10.0,
            iterations: 0,
        }),
        return_zero_filled: false,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let device = candle_core::Device::Cpu;
    let full = std::env::temp_dir().join("inferd-breakdown-full.safetensors");
    candle_core::safetensors::save(
        &inferd::models::recon_resnet::ReconResNetConfig::FULL.random_weights(&device)?,
        &full,
    )?;
    let n = 256;
    println!("| model | coils | DC | decode | FFT + zero-fill + coils | network | data consistency | encode | total ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (model, weights) in [
        (
            "recon-lite",
            WeightsSource::File("models/recon-lite.safetensors".into()),
        ),
        ("full-size", WeightsSource::File(full.clone())),
    ] {
        let engine = ReconEngine::load(&weights, &device)?;
        for (coils, dc) in [
            (1, pb::data_consistency::Mode::Hard),
            (8, pb::data_consistency::Mode::Hard),
            (8, pb::data_consistency::Mode::Sense),
        ] {
            let h = header(coils, n, dc);
            let plan = validate::plan(
                &h,
                validate::DEFAULT_NETWORK_WIDTH,
                &validate::Limits::default(),
            )?;
            let bytes = pb::KSpaceSlice {
                index: 0,
                kspace: Some(tensor::encode_c64(&[coils, n, n], &kspace(coils, n))),
                mask: None,
            }
            .encode_to_vec();
            let mut t = [(); 5].map(|_| Vec::new());
            for _ in 0..iters + 1 {
                let s0 = Instant::now();
                let msg = pb::KSpaceSlice::decode(bytes.as_slice())?;
                let slice = validate::slice(&plan, &msg, 0)?;
                let s1 = Instant::now();
                let prepared = recon::prepare(slice)?;
                let s2 = Instant::now();
                let out = engine.run_network(&[&prepared.net_input], n, n)?;
                let s3 = Instant::now();
                let done = recon::finish(prepared, &out[0], plan.dc)?;
                let s4 = Instant::now();
                let image = pb::SliceImage {
                    magnitude: Some(tensor::encode_f32(&[n, n], &done.magnitude)),
                    ..Default::default()
                }
                .encode_to_vec();
                let s5 = Instant::now();
                std::hint::black_box(image);
                for (k, (a, b)) in [(s0, s1), (s1, s2), (s2, s3), (s3, s4), (s4, s5)]
                    .into_iter()
                    .enumerate()
                {
                    t[k].push((b - a).as_secs_f64());
                }
            }
            let ms: Vec<f64> = t.into_iter().map(|v| median(v[1..].to_vec())).collect();
            let dc_name = match plan.dc {
                DcMode::Sense { .. } => "SENSE",
                _ => "hard",
            };
            println!(
                "| {model} | {coils} | {dc_name} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} |",
                ms[0],
                ms[1],
                ms[2],
                ms[3],
                ms[4],
                ms.iter().sum::<f64>()
            );
        }
    }
    Ok(())
}
