//! Reconstruction quality and time per slice, side by side in one run: zero-filled (or gridded), BART
//! `pics` l1-wavelet compressed sensing (`-S -R W:3:0:0.01`, all-ones sensitivities; for radial
//! `-e -t traj`: the NUFFT forward model with the step size from the largest eigenvalue, without which
//! BART's FISTA diverges on these data), and inferd (ReconResNet + the server's default data consistency: hard for Cartesian, CG λ = 0.1 with
//! 10 iterations for radial), on single-coil 256² images none of the
//! models was trained on: synthetic head-like images from seeds the training never draws and BART's own
//! phantoms (Shepp–Logan, tubes, geometric objects). Cartesian: 1D variable-density masks at 4× and 8×
//! (`recon-lite`); `--radial`: golden-angle spokes of 2N samples, 30 and 60 spokes (`recon-radial`; BART
//! gets the same trajectory and samples). Metrics in the fastMRI convention.
//!
//! cargo run --example recon_vs_bart -- [--radial] [--weights FILE] [--synthetic 8]

use candle_core::Device;
use inferd::io::cfl;
use inferd::models::{
    Engine, Input, Output, ReconEngine, WeightsSource, EMBEDDED_RADIAL, EMBEDDED_RECON,
};
use inferd::mri::radial::{RadialOperator, RadialSlice};
use inferd::mri::traj::{Radial, SpokeAngles};
use inferd::mri::{dc::DcMode, masks, metrics, phantom, recon};
use num_complex::Complex32;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

struct Scores {
    ssim: Vec<f64>,
    psnr: Vec<f64>,
    nmse: Vec<f64>,
    secs: Vec<f64>,
}

impl Scores {
    fn new() -> Self {
        Scores {
            ssim: vec![],
            psnr: vec![],
            nmse: vec![],
            secs: vec![],
        }
    }
    fn add(&mut self, gt: &[f32], x: &[f32], n: usize, secs: f64) {
        self.ssim.push(metrics::ssim(gt, x, n, n));
        self.psnr.push(metrics::psnr(gt, x));
        self.nmse.push(metrics::nmse(gt, x));
        self.secs.push(secs);
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt(),
    )
}

fn bart_image(dir: &std::path::Path, extra: &[&str], n: usize) -> anyhow::Result<Vec<Complex32>> {
    let x = n.to_string();
    let mut args = vec!["phantom", "-x", x.as_str()];
    args.extend(extra);
    args.push("ph");
    let st = Command::new("bart").args(&args).current_dir(dir).status()?;
    anyhow::ensure!(st.success(), "bart phantom failed");
    let c = cfl::read(&dir.join("ph"))?;
    let (_, _, _, _, img) = cfl::to_slices(&c)?;
    let peak = img.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
    Ok(img.iter().map(|v| v / peak).collect())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let radial = args.iter().any(|a| a == "--radial");
    let embedded = if radial {
        EMBEDDED_RADIAL
    } else {
        EMBEDDED_RECON
    };
    let source = match flag("--weights") {
        Some(p) => WeightsSource::File(p.into()),
        None => WeightsSource::Embedded(
            embedded.ok_or_else(|| anyhow::anyhow!("no embedded model; pass --weights"))?,
        ),
    };
    let model = if radial {
        "recon-radial"
    } else {
        "recon-unrolled"
    };
    let n_syn: usize = flag("--synthetic")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(8);
    let engine = ReconEngine::load(&source, &Device::Cpu)?;
    let n = 256;
    let dir = tempfile::tempdir()?;
    let mut images: Vec<(String, Vec<Complex32>)> = Vec::new();
    let mut gen = phantom::SyntheticMr::new(0xE7A1_0000);
    for i in 0..n_syn {
        images.push((format!("synthetic-{i}"), gen.sample(n, n).complex));
    }
    for (name, extra) in [
        ("bart-shepp-logan", vec![]),
        ("bart-tubes", vec!["-T"]),
        ("bart-geometric", vec!["-G"]),
    ] {
        images.push((name.to_string(), bart_image(dir.path(), &extra, n)?));
    }
    let ones = vec![Complex32::new(1.0, 0.0); n * n];
    cfl::write(&dir.path().join("sens"), &[n, n], &ones)?;
    println!("| sampling | method | SSIM | PSNR (dB) | NMSE | s / slice |");
    println!("|---|---|---|---|---|---|");
    let settings: Vec<f32> = if radial {
        vec![30.0, 60.0]
    } else {
        vec![4.0, 8.0]
    };
    for setting in settings {
        let label = if radial {
            format!("{setting} spokes")
        } else {
            format!("{setting}×")
        };
        let op = if radial {
            let traj = Radial::oversampled(n, setting as usize, SpokeAngles::GoldenAngle)?;
            // BART's first coordinate along its first dimension, which inferd's cfl reader puts
            // along the columns (memory order): the NUFFT's order [kx, ky] for these images.
            let coords: Vec<Complex32> = traj
                .nufft_coords()
                .iter()
                .flat_map(|&[kx, ky]| [kx, ky, 0.0].map(|v| Complex32::new(v, 0.0)))
                .collect();
            cfl::write(
                &dir.path().join("traj"),
                &[3, traj.readout, traj.spokes],
                &coords,
            )?;
            Some((Arc::new(RadialOperator::radial(&traj)?), traj))
        } else {
            None
        };
        let (mut zf, mut bart, mut ours) = (Scores::new(), Scores::new(), Scores::new());
        for (i, (name, img)) in images.iter().enumerate() {
            let gt: Vec<f32> = img.iter().map(|v| v.norm()).collect();
            // The measured data, written for BART too, and BART's arguments.
            let (slice, bart_args): (recon::Slice, Vec<&str>) = match &op {
                Some((op, traj)) => {
                    let slice = RadialSlice::single_coil(img, op.clone())?;
                    cfl::write(
                        &dir.path().join("ksp"),
                        &[1, traj.readout, traj.spokes],
                        &slice.samples,
                    )?;
                    (slice.into(), vec!["-e", "-t", "traj"])
                }
                None => {
                    let mask = masks::MaskSpec::new(
                        masks::Pattern::VariableDensity1d,
                        setting,
                        7_000 + i as u64,
                    )
                    .generate(n, n)?;
                    let slice = recon::CartesianSlice::single_coil(img, mask.clone(), n, n);
                    let masked: Vec<Complex32> = slice
                        .kspace
                        .iter()
                        .zip(&mask)
                        .map(|(v, m)| v * *m)
                        .collect();
                    cfl::write(&dir.path().join("ksp"), &[n, n], &masked)?;
                    (slice.into(), vec![])
                }
            };
            let t = Instant::now();
            recon::prepare(slice.clone())?;
            let zf_secs = t.elapsed().as_secs_f64();
            // The whole served pipeline with the model's own data consistency.
            let t = Instant::now();
            let Some(Output::Recon(out)) = engine
                .run(vec![Input::Recon {
                    slice,
                    dc: DcMode::Model,
                }])?
                .pop()
            else {
                anyhow::bail!("no reconstruction")
            };
            let ours_secs = t.elapsed().as_secs_f64();
            zf.add(&gt, &out.zero_filled, n, zf_secs);
            ours.add(&gt, &out.magnitude, n, ours_secs);
            let t = Instant::now();
            let o = Command::new("bart")
                .args(["pics", "-S", "-R", "W:3:0:0.01"])
                .args(&bart_args)
                .args(["ksp", "sens", "rec"])
                .current_dir(dir.path())
                .output()?;
            let bart_secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                o.status.success(),
                "bart pics failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let rec: Vec<f32> = cfl::read(&dir.path().join("rec"))?
                .data
                .iter()
                .map(|v| v.norm())
                .collect();
            bart.add(&gt, &rec, n, bart_secs);
            eprintln!(
                "{label} {name}: SSIM zero-filled/gridded {:.4} bart {:.4} inferd {:.4}",
                zf.ssim.last().unwrap(),
                bart.ssim.last().unwrap(),
                ours.ssim.last().unwrap()
            );
        }
        let first = if radial {
            "gridding (ramp DCF)"
        } else {
            "zero-filled"
        };
        let inferd = format!("inferd {model} + DC");
        for (method, s) in [
            (first, &zf),
            ("BART pics l1-wavelet", &bart),
            (inferd.as_str(), &ours),
        ] {
            let (ss, ssd) = mean_std(&s.ssim);
            let (ps, psd) = mean_std(&s.psnr);
            let (nm, _) = mean_std(&s.nmse);
            let (t, _) = mean_std(&s.secs);
            println!("| {label} | {method} | {ss:.4} ± {ssd:.4} | {ps:.2} ± {psd:.2} | {nm:.4} | {t:.3} |");
        }
    }
    Ok(())
}
