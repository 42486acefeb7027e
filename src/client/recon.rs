//! `inferd recon`: streams a k-space volume to a server and writes the reconstructions.
//!
//! Inputs: NPY k-space `[slices, coils, ky, kx]` (or `[slices, ky, kx]`, or `[ky, kx]`) complex, or a BART
//! `.cfl/.hdr` pair `[READ, PHS1, SLICES, COILS]`. Sampling: a `[ky, kx]` mask NPY, a generated pattern, or
//! (by default) the non-zero positions of the first slice's k-space. Outputs in `--out`: `recon.npy`
//! `[slices, ky, kx]` float32, `zero_filled.npy`, and a PNG preview per slice (zero-filled | reconstruction).

use crate::api::pb::{self, reconstruction_client::ReconstructionClient};
use crate::api::tensor;
use crate::io::{cfl, npy, png};
use anyhow::{bail, Context};
use num_complex::Complex32;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ReconArgs {
    /// Server URL, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "INFERD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// K-space: .npy or BART .cfl/.hdr.
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// [ky, kx] mask NPY (1 = sampled).
    #[arg(long, conflicts_with = "pattern")]
    pub mask: Option<PathBuf>,
    /// Let the server undersample with a generated mask: vd1d, eq1d or vd2d.
    #[arg(long)]
    pub pattern: Option<crate::mri::masks::Pattern>,
    #[arg(long, default_value_t = 4.0)]
    pub acceleration: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model name (default: the server's default).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Data consistency: hard, soft, cg (least squares by conjugate gradients) or off.
    #[arg(long, default_value = "hard")]
    pub dc: String,
    #[arg(long, default_value_t = 10.0)]
    pub lambda: f32,
    /// Ask the server to schedule this volume before normal-priority work.
    #[arg(long)]
    pub high_priority: bool,
    /// Largest gRPC message, MiB.
    #[arg(long, default_value_t = 64)]
    pub max_message_mb: usize,
}

/// A k-space volume in inferd's layout.
pub struct Volume {
    pub slices: usize,
    pub coils: usize,
    pub ny: usize,
    pub nx: usize,
    pub data: Vec<Complex32>,
}

impl Volume {
    pub fn slice(&self, s: usize) -> &[Complex32] {
        let n = self.coils * self.ny * self.nx;
        &self.data[s * n..(s + 1) * n]
    }
}

pub fn read_volume(path: &Path) -> anyhow::Result<Volume> {
    let (slices, coils, ny, nx, data) = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let a = npy::read(path)?;
            let npy::NpyData::C64(data) = a.data else {
                bail!(
                    "{}: k-space must be complex (complex64 or complex128)",
                    path.display()
                )
            };
            let (s, c, y, x) = match a.shape[..] {
                [s, c, y, x] => (s, c, y, x),
                [s, y, x] => (s, 1, y, x),
                [y, x] => (1, 1, y, x),
                _ => bail!(
                    "{}: k-space shape {:?}, expected [slices, coils, ky, kx]",
                    path.display(),
                    a.shape
                ),
            };
            (s, c, y, x, data)
        }
        Some("cfl") | Some("hdr") | None => cfl::to_slices(&cfl::read(path)?)?,
        Some(other) => bail!("unsupported input extension .{other}; expected .npy or .cfl"),
    };
    Ok(Volume {
        slices,
        coils,
        ny,
        nx,
        data,
    })
}

fn read_mask(path: &Path, ny: usize, nx: usize) -> anyhow::Result<Vec<f32>> {
    let a = npy::read(path)?;
    let npy::NpyData::F32(m) = a.data else {
        bail!("{}: mask must be real", path.display())
    };
    anyhow::ensure!(
        a.shape == [ny, nx],
        "{}: mask shape {:?}, expected [{ny}, {nx}]",
        path.display(),
        a.shape
    );
    Ok(m.iter()
        .map(|&v| if v != 0.0 { 1.0 } else { 0.0 })
        .collect())
}

/// The mask implied by zeros in already undersampled k-space: a position is sampled if any coil has data.
pub fn mask_from_kspace(v: &Volume) -> Vec<f32> {
    let plane = v.ny * v.nx;
    let k = v.slice(0);
    (0..plane)
        .map(|i| {
            if (0..v.coils).any(|c| k[c * plane + i] != Complex32::default()) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

pub fn header_for(args: &ReconArgs, v: &Volume) -> anyhow::Result<pb::ReconHeader> {
    let sampling = if let Some(p) = args.pattern {
        let pattern = match p {
            crate::mri::masks::Pattern::VariableDensity1d => {
                pb::mask_spec::Pattern::VariableDensity1d
            }
            crate::mri::masks::Pattern::Equispaced1d => pb::mask_spec::Pattern::Equispaced1d,
            crate::mri::masks::Pattern::VariableDensity2d => {
                pb::mask_spec::Pattern::VariableDensity2d
            }
        };
        pb::sampling::Kind::Generated(pb::MaskSpec {
            pattern: pattern as i32,
            acceleration: args.acceleration,
            center_fraction: 0.0,
            seed: args.seed,
        })
    } else {
        let mask = match &args.mask {
            Some(p) => read_mask(p, v.ny, v.nx)?,
            None => mask_from_kspace(v),
        };
        pb::sampling::Kind::Mask(tensor::encode_f32(&[v.ny, v.nx], &mask))
    };
    let mode = match args.dc.as_str() {
        "hard" => pb::data_consistency::Mode::Hard,
        "soft" => pb::data_consistency::Mode::Soft,
        "off" => pb::data_consistency::Mode::Off,
        "cg" => pb::data_consistency::Mode::Cg,
        other => bail!("--dc {other:?}: expected hard, soft, cg or off"),
    };
    Ok(pb::ReconHeader {
        model: args.model.clone(),
        height: v.ny as u32,
        width: v.nx as u32,
        coils: v.coils as u32,
        slices: v.slices as u32,
        sampling: Some(pb::Sampling {
            kind: Some(sampling),
        }),
        data_consistency: Some(pb::DataConsistency {
            mode: mode as i32,
            lambda: args.lambda,
            iterations: 0,
        }),
        return_complex: false,
        return_zero_filled: true,
        request_id: String::new(),
        priority: if args.high_priority {
            pb::Priority::High as i32
        } else {
            pb::Priority::Normal as i32
        },
    })
}

/// Builds the request stream: header, then every slice.
pub fn requests(header: pb::ReconHeader, v: &Volume) -> Vec<pb::ReconRequest> {
    let mut reqs = vec![pb::ReconRequest {
        msg: Some(pb::recon_request::Msg::Header(header)),
    }];
    for s in 0..v.slices {
        reqs.push(pb::ReconRequest {
            msg: Some(pb::recon_request::Msg::Slice(pb::KSpaceSlice {
                index: s as u32,
                kspace: Some(tensor::encode_c64(&[v.coils, v.ny, v.nx], v.slice(s))),
                mask: None,
            })),
        });
    }
    reqs
}

pub async fn run(args: ReconArgs) -> anyhow::Result<()> {
    let v = read_volume(&args.input)?;
    let header = header_for(&args, &v)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let limit = args.max_message_mb * 1024 * 1024;
    let mut client = ReconstructionClient::connect(args.server.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let (ny, nx, slices) = (v.ny, v.nx, v.slices);
    let reqs = requests(header, &v);
    let bar = indicatif::ProgressBar::new(slices as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} slices {elapsed} {msg}",
    )?);
    let mut stream = client
        .stream_reconstruct(tokio_stream::iter(reqs))
        .await?
        .into_inner();
    let mut recon = vec![0.0f32; slices * ny * nx];
    let mut zero_filled = vec![0.0f32; slices * ny * nx];
    let mut got = 0;
    while let Some(msg) = stream.message().await? {
        match msg.msg {
            Some(pb::recon_response::Msg::Image(img)) => {
                let s = img.index as usize;
                anyhow::ensure!(s < slices, "server answered slice {s} of {slices}");
                let (_, mag) =
                    tensor::to_f32(img.magnitude.as_ref().context("image without magnitude")?)?;
                recon[s * ny * nx..(s + 1) * ny * nx].copy_from_slice(&mag);
                if let Some(z) = &img.zero_filled {
                    zero_filled[s * ny * nx..(s + 1) * ny * nx]
                        .copy_from_slice(&tensor::to_f32(z)?.1);
                }
                write_preview(
                    &args.out.join(format!("slice_{s:03}.png")),
                    &zero_filled[s * ny * nx..(s + 1) * ny * nx],
                    &mag,
                    ny,
                    nx,
                )?;
                bar.set_message(format!("{:.2} s/slice on the server", img.compute_seconds));
                got += 1;
            }
            Some(pb::recon_response::Msg::Progress(p)) => bar.set_position(p.slices_done as u64),
            None => {}
        }
    }
    bar.finish();
    anyhow::ensure!(got == slices, "server returned {got} of {slices} slices");
    npy::write_f32(&args.out.join("recon.npy"), &[slices, ny, nx], &recon)?;
    npy::write_f32(
        &args.out.join("zero_filled.npy"),
        &[slices, ny, nx],
        &zero_filled,
    )?;
    println!("wrote {slices} slices to {}", args.out.display());
    Ok(())
}

/// Zero-filled | reconstruction, side by side, on the reconstruction's intensity scale.
fn write_preview(
    path: &Path,
    zf: &[f32],
    recon: &[f32],
    ny: usize,
    nx: usize,
) -> anyhow::Result<()> {
    let max = recon.iter().cloned().fold(0.0f32, f32::max);
    let gap = 4;
    let w = 2 * nx + gap;
    let mut img = vec![0.0f32; ny * w];
    for y in 0..ny {
        img[y * w..y * w + nx].copy_from_slice(&zf[y * nx..(y + 1) * nx]);
        img[y * w + nx + gap..(y + 1) * w].copy_from_slice(&recon[y * nx..(y + 1) * nx]);
    }
    png::write_gray(path, &img, ny, w, max)
}
