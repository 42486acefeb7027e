//! Micro-benchmarks of the MR physics around the network: centred FFTs, the pre-network and
//! post-network halves of the Cartesian pipeline (8-coil 256² slice), SSIM.
//!
//! cargo bench --bench mri

use criterion::{criterion_group, criterion_main, Criterion};
use inferd::mri::{dc::DcMode, fft, masks, metrics, phantom, recon};
use num_complex::Complex32;
use std::hint::black_box;

fn slice(coils: usize, n: usize) -> recon::CartesianSlice {
    let img = phantom::SyntheticMr::new(1).sample(n, n).complex;
    let mut k: Vec<Complex32> = (0..coils)
        .flat_map(|c| {
            img.iter()
                .enumerate()
                .map(move |(i, v)| v * (1.0 + 0.1 * c as f32 + (i % n) as f32 / n as f32))
        })
        .collect();
    fft::fft2c(&mut k, n, n);
    let mask = masks::MaskSpec::new(masks::Pattern::VariableDensity1d, 4.0, 0)
        .generate(n, n)
        .unwrap();
    recon::CartesianSlice {
        kspace: k,
        mask,
        coils,
        ny: n,
        nx: n,
    }
}

fn benches(c: &mut Criterion) {
    let n = 256;
    // Side by side: the coils on one thread, and on rayon's whole pool (all cores unless
    // RAYON_NUM_THREADS says otherwise).
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let pools: [(&str, Option<&rayon::ThreadPool>); 2] =
        [("1 thread", Some(&one)), ("all cores", None)];
    for (threads, pool) in pools {
        let run = |f: &mut (dyn FnMut() + Send)| match pool {
            Some(p) => p.install(f),
            None => f(),
        };
        let mut data = slice(8, n).kspace;
        c.bench_function(&format!("fft2c 8 coils 256², {threads}"), |b| {
            b.iter(|| run(&mut || fft::fft2c(black_box(&mut data), n, n)))
        });
        let s = slice(8, n);
        c.bench_function(
            &format!("prepare 8 coils 256² (zero-filled, sensitivities, combine), {threads}"),
            |b| b.iter(|| run(&mut || drop(recon::prepare(black_box(s.clone())).unwrap()))),
        );
        let p = recon::prepare(s.clone()).unwrap();
        let out = p.net_input.clone();
        c.bench_function(
            &format!("finish 8 coils 256² (expand, FFT, hard DC, IFFT, RSS), {threads}"),
            |b| {
                b.iter(|| {
                    run(&mut || {
                        drop(recon::finish(black_box(p.clone()), &out, DcMode::Hard).unwrap())
                    })
                })
            },
        );
    }
    let gt = phantom::shepp_logan(n, n);
    let out = recon::prepare(slice(1, n)).unwrap().net_input;
    c.bench_function("ssim 256²", |b| {
        b.iter(|| metrics::ssim(black_box(&gt), &out, n, n))
    });
}

criterion_group! {
    name = mri;
    config = Criterion::default().sample_size(10);
    targets = benches
}
criterion_main!(mri);
