//! `inferd recon`: streams a k-space volume to a server and writes the reconstructions.
//!
//! Inputs: NPY k-space `[slices, coils, ky, kx]` (or `[slices, ky, kx]`, or `[ky, kx]`) complex, the same
//! as `kspace` in an NPZ archive (with an optional `mask`), a BART `.cfl/.hdr` pair
//! `[READ, PHS1, SLICES, COILS]`, or HDF5 raw data: ISMRMRD / MRD ([`crate::io::mrd`]) or fastMRI
//! ([`crate::io::fastmri`]). Sampling: a `[ky, kx]` mask NPY, a generated pattern, or (by default) the
//! mask the file records (MRD, fastMRI, NPZ), else the non-zero positions of the first slice's k-space. Outputs in `--out`: `recon.npy`
//! `[slices, ky, kx]` float32, `zero_filled.npy`, and a PNG preview per slice (zero-filled | reconstruction).

use crate::api::pb::{self, reconstruction_client::ReconstructionClient};
use crate::api::tensor;
use crate::io::acquisition::AcquisitionInfo;
use crate::io::{cfl, fastmri, h5, kspace, mrd, npy, npz, png};
use anyhow::{bail, Context};
use num_complex::Complex32;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ReconArgs {
    /// Server URL, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "INFERD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// K-space: .npy, .npz, BART .cfl/.hdr, or HDF5 raw data (.h5, .hdf5, .mrd: ISMRMRD / MRD or
    /// fastMRI).
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
    /// Data consistency: hard, soft, cg (least squares by conjugate gradients), sense (multi-coil
    /// least squares through the coil sensitivities), off, or auto: sense for multi-coil data,
    /// hard for single-coil data.
    #[arg(long, default_value = "auto")]
    pub dc: String,
    #[arg(long, default_value_t = 10.0)]
    pub lambda: f32,
    /// Ask the server to schedule this volume before normal-priority work.
    #[arg(long)]
    pub high_priority: bool,
    /// Largest gRPC message, MiB.
    #[arg(long, default_value_t = 64)]
    pub max_message_mb: usize,
    #[command(flatten)]
    pub dicom: super::pacs::DicomArgs,
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

/// What an input file holds: the k-space, the sampling it records (raw-data formats) and its
/// acquisition metadata.
pub struct Input {
    pub volume: Volume,
    /// `[ny, nx]`, 1 = measured, when the file records the acquired samples (MRD, fastMRI `mask`,
    /// NPZ `mask`).
    pub mask: Option<Vec<f32>>,
    pub info: AcquisitionInfo,
}

pub fn read_volume(path: &Path) -> anyhow::Result<Volume> {
    Ok(read_input(path)?.volume)
}

/// Reads k-space from `.npy`, `.npz` (`kspace`, optional `mask`), BART `.cfl/.hdr`, or HDF5
/// (`.h5`, `.hdf5`, `.mrd`): ISMRMRD / MRD when `/dataset/data` exists, fastMRI when `kspace` does.
pub fn read_input(path: &Path) -> anyhow::Result<Input> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    // Plain arrays carry no acquisition metadata.
    let plain = |(slices, coils, ny, nx, data): Slices, mask| kspace::RawKspace {
        slices,
        coils,
        ny,
        nx,
        data,
        mask,
        info: AcquisitionInfo::default(),
    };
    let raw = match ext.as_deref() {
        Some("h5" | "hdf5" | "mrd") => {
            let f = h5::H5File::open(path)?;
            let name = path.display().to_string();
            if f.has_dataset("/dataset/data") {
                mrd::read_file(&f, &name, mrd::Selection::default())?
            } else if f.has_dataset("kspace") {
                fastmri::read_file(&f, &name)?
            } else {
                bail!(
                    "{name}: neither MRD (/dataset/data) nor fastMRI (kspace) raw data; top-level \
                     members: {:?}",
                    f.top_level()
                )
            }
        }
        Some("npy") => plain(kspace_array(npy::read(path)?, path)?, None),
        Some("npz") => {
            let mut members = npz::read(path)?;
            let k = members.remove("kspace").with_context(|| {
                format!(
                    "{}: no kspace array; the archive holds {:?}",
                    path.display(),
                    members.keys().collect::<Vec<_>>()
                )
            })?;
            let k = kspace_array(k, path)?;
            let mask = match members.remove("mask") {
                Some(m) => Some(mask_array(m, k.2, k.3, path)?),
                None => None,
            };
            plain(k, mask)
        }
        Some("cfl") | Some("hdr") | None => plain(cfl::to_slices(&cfl::read(path)?)?, None),
        Some(other) => bail!(
            "unsupported input extension .{other}; expected .npy, .npz, .cfl, or .h5 / .mrd (MRD or \
             fastMRI)"
        ),
    };
    Ok(Input {
        volume: Volume {
            slices: raw.slices,
            coils: raw.coils,
            ny: raw.ny,
            nx: raw.nx,
            data: raw.data,
        },
        mask: raw.mask,
        info: raw.info,
    })
}

type Slices = (usize, usize, usize, usize, Vec<Complex32>);

fn kspace_array(a: npy::NpyArray, path: &Path) -> anyhow::Result<Slices> {
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
    Ok((s, c, y, x, data))
}

fn mask_array(a: npy::NpyArray, ny: usize, nx: usize, path: &Path) -> anyhow::Result<Vec<f32>> {
    let m: Vec<f32> = match a.data {
        npy::NpyData::F32(m) => m,
        npy::NpyData::I64(m) => m.iter().map(|&v| v as f32).collect(),
        npy::NpyData::C64(_) => bail!("{}: mask must be real", path.display()),
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

fn read_mask(path: &Path, ny: usize, nx: usize) -> anyhow::Result<Vec<f32>> {
    mask_array(npy::read(path)?, ny, nx, path)
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

/// The request header; without `--mask` or `--pattern` the sampling is `file_mask` (what a raw-data
/// file records as acquired) or else the non-zero positions of the first slice's k-space.
pub fn header_for(
    args: &ReconArgs,
    v: &Volume,
    file_mask: Option<&[f32]>,
) -> anyhow::Result<pb::ReconHeader> {
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
            None => match file_mask {
                Some(m) => m.to_vec(),
                None => mask_from_kspace(v),
            },
        };
        pb::sampling::Kind::Mask(tensor::encode_f32(&[v.ny, v.nx], &mask))
    };
    let dc = match args.dc.as_str() {
        "auto" if v.coils > 1 => "sense",
        "auto" => "hard",
        other => other,
    };
    let mode = match dc {
        "hard" => pb::data_consistency::Mode::Hard,
        "soft" => pb::data_consistency::Mode::Soft,
        "off" => pb::data_consistency::Mode::Off,
        "cg" => pb::data_consistency::Mode::Cg,
        "sense" => pb::data_consistency::Mode::Sense,
        other => bail!("--dc {other:?}: expected auto, hard, soft, cg, sense or off"),
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
        dicom: None,
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
    let input = read_input(&args.input)?;
    let mut header = header_for(&args, &input.volume, input.mask.as_deref())?;
    let v = &input.volume;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let delivery = match args.dicom.pacs.target()? {
        Some(t) => Some(super::pacs::ClientDelivery::start(
            t,
            &args.out.join("outbox"),
        )?),
        None => None,
    };
    let write_dicom = args.dicom.format == super::pacs::OutputFormat::Dicom;
    if args.dicom.wanted() {
        header.dicom = Some(crate::api::dicom::request(
            &args.dicom.info(input.info.clone()),
            write_dicom || delivery.is_some(),
            args.dicom.store,
        ));
    }
    let limit = args.max_message_mb * 1024 * 1024;
    let mut client = ReconstructionClient::connect(args.server.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let (ny, nx, slices) = (v.ny, v.nx, v.slices);
    let info = &input.info;
    let reqs = requests(header, v);
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
    let (mut got, mut queued) = (0, 0);
    while let Some(msg) = stream.message().await? {
        match msg.msg {
            Some(pb::recon_response::Msg::Image(img)) => {
                let s = img.index as usize;
                anyhow::ensure!(s < slices, "server answered slice {s} of {slices}");
                let (_, mag) =
                    tensor::to_f32(img.magnitude.as_ref().context("image without magnitude")?)?;
                recon[s * ny * nx..(s + 1) * ny * nx].copy_from_slice(&mag);
                if !img.dicom.is_empty() {
                    if write_dicom {
                        let path = args.out.join(format!("IM_{:04}.dcm", s + 1));
                        std::fs::write(&path, &img.dicom)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    if let Some(d) = &delivery {
                        d.put(&img.sop_instance_uid, &img.dicom)?;
                    }
                }
                queued += usize::from(img.queued_for_pacs);
                if let Some(z) = &img.zero_filled {
                    zero_filled[s * ny * nx..(s + 1) * ny * nx]
                        .copy_from_slice(&tensor::to_f32(z)?.1);
                }
                let (z, _, _) =
                    info.to_file_orientation(&zero_filled[s * ny * nx..(s + 1) * ny * nx], ny, nx);
                let (m, ry, rx) = info.to_file_orientation(&mag, ny, nx);
                write_preview(&args.out.join(format!("slice_{s:03}.png")), &z, &m, ry, rx)?;
                bar.set_message(format!("{:.2} s/slice on the server", img.compute_seconds));
                got += 1;
            }
            Some(pb::recon_response::Msg::Progress(p)) => bar.set_position(p.slices_done as u64),
            None => {}
        }
    }
    bar.finish();
    anyhow::ensure!(got == slices, "server returned {got} of {slices} slices");
    // NPY outputs in the file's own orientation and reconstruction matrix (fastMRI: readout rows,
    // cropped to e.g. 320 x 320); the DICOM objects describe their orientation themselves.
    for (name, vol) in [("recon.npy", &recon), ("zero_filled.npy", &zero_filled)] {
        let mut out = Vec::with_capacity(vol.len());
        let mut dims = (ny, nx);
        for s in 0..slices {
            let (img, ry, rx) =
                info.to_file_orientation(&vol[s * ny * nx..(s + 1) * ny * nx], ny, nx);
            out.extend(img);
            dims = (ry, rx);
        }
        npy::write_f32(&args.out.join(name), &[slices, dims.0, dims.1], &out)?;
    }
    println!("wrote {slices} slices to {}", args.out.display());
    if args.dicom.store {
        println!("the server queued {queued} image(s) for its PACS");
    }
    if let Some(d) = delivery {
        let target = d.target.clone();
        d.finish(std::time::Duration::from_secs(args.dicom.pacs_wait_s))?;
        println!("{target} confirmed every image");
    }
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
