//! ISMRMRD / MRD raw data in HDF5: the XML header (`/dataset/xml`) and the acquisitions
//! (`/dataset/data`), sorted into inferd's Cartesian layout `[slices, coils, ky, kx]`.
//!
//! What the reader does with each acquisition:
//! * ISMRMRD flags are numbered from 1; flag `n` is bit `1 << (n - 1)` of `head.flags`.
//! * Noise measurements (flag 19) are not image data; when present they estimate the coils' noise
//!   covariance `Ψ = N Nᴴ / (samples − 1)` and every image sample is pre-whitened across coils:
//!   `x ← σ̄ L⁻¹ x` with `Ψ = L Lᴴ` (Cholesky) and `σ̄² = trace(Ψ) / coils`. Whitening decorrelates
//!   the coils and gives them equal noise; the factor `σ̄` keeps the overall intensity (the mean noise
//!   level is unchanged), so images stay on the scale of the unwhitened data.
//! * Parallel-imaging calibration lines (flags 20 and 21) are measured k-space and are kept.
//!   Navigator, phase-correction, real-time and high-performance feedback, dummy scans,
//!   surface-coil correction scans and phase stabilisation (flags 23, 24, 26–31) are skipped.
//! * Lines acquired in reverse (flag 22) are flipped; `discard_pre` / `discard_post` samples are
//!   dropped; the readout sample `center_sample` lands at `kx = nx/2`.
//! * Line `kspace_encode_step_1 = e1` lands at row `e1 − center + ny/2`, `center` from the header's
//!   encoding limits, so partial-Fourier acquisitions keep their k-space centre at `ny/2`.
//! * Repeated lines (the `average` counter, or a line measured both as calibration and image data)
//!   are averaged. One contrast, repetition, set and cardiac phase is selected (index 0 by default).
//! * Readout oversampling (`encodedSpace x > reconSpace x`, typically 2×) is removed by a crop in
//!   image space along the readout (see [`super::kspace::crop_readout`]).
//! * The sampling mask `[ky, kx]` marks the lines measured in every slice.
//!
//! Geometry: ISMRMRD gives per acquisition the slice centre `position` and the unit vectors
//! `read_dir`, `phase_dir`, `slice_dir` in the patient coordinate system (LPS, mm), the one DICOM
//! uses. An inferd image has rows along phase encoding and columns along the readout, so DICOM's
//! row direction (increasing column index) is `read_dir` and its column direction is `phase_dir`.
//! DICOM's Image Position is the centre of the first pixel. With the centred FFT the slice centre
//! (k-space DC) lands on pixel (rows/2, cols/2) (integer division), so with pixel size
//! `fov / matrix` the first pixel is at `position − (cols/2)·px·read_dir − (rows/2)·py·phase_dir`.

use super::acquisition::{AcquisitionInfo, SlicePlacement};
use super::h5::{H5File, Records};
use super::kspace::{crop_readout, RawKspace};
use anyhow::{anyhow, bail, Context, Result};
use num_complex::Complex32;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// ISMRMRD acquisition flags (1-based bit numbers).
pub mod flags {
    pub const IS_NOISE_MEASUREMENT: u32 = 19;
    pub const IS_PARALLEL_CALIBRATION: u32 = 20;
    pub const IS_PARALLEL_CALIBRATION_AND_IMAGING: u32 = 21;
    pub const IS_REVERSE: u32 = 22;
    pub const IS_NAVIGATION_DATA: u32 = 23;
    pub const IS_PHASECORR_DATA: u32 = 24;
    pub const IS_HPFEEDBACK_DATA: u32 = 26;
    pub const IS_DUMMYSCAN_DATA: u32 = 27;
    pub const IS_RTFEEDBACK_DATA: u32 = 28;
    pub const IS_SURFACECOILCORRECTIONSCAN_DATA: u32 = 29;
    pub const IS_PHASE_STABILIZATION_REFERENCE: u32 = 30;
    pub const IS_PHASE_STABILIZATION: u32 = 31;

    /// Whether flag `n` is set.
    pub fn has(flags: u64, n: u32) -> bool {
        flags & (1u64 << (n - 1)) != 0
    }
}

/// `minimum`, `maximum` and `center` of one encoding counter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub minimum: u32,
    pub maximum: u32,
    pub center: u32,
}

/// What inferd uses from the ISMRMRD XML header (first `encoding`).
#[derive(Clone, Debug, Default)]
pub struct MrdHeader {
    /// Matrix (x = readout, y = phase, z) and field of view in mm.
    pub encoded_matrix: [usize; 3],
    pub encoded_fov: [f64; 3],
    pub recon_matrix: [usize; 3],
    pub recon_fov: [f64; 3],
    pub e1: Option<Limit>,
    pub e2: Option<Limit>,
    pub slice: Option<Limit>,
    pub average: Option<Limit>,
    pub contrast: Option<Limit>,
    pub repetition: Option<Limit>,
    pub set: Option<Limit>,
    pub phase: Option<Limit>,
    pub trajectory: String,
    pub receiver_channels: Option<usize>,
    /// Patient, study, system and sequence attributes, and the field of view.
    pub info: AcquisitionInfo,
}

/// Child element by local name (ISMRMRD headers use a default namespace).
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn path<'a, 'i>(n: roxmltree::Node<'a, 'i>, names: &[&str]) -> Option<roxmltree::Node<'a, 'i>> {
    names.iter().try_fold(n, |n, name| child(n, name))
}

fn text(n: roxmltree::Node, names: &[&str]) -> Option<String> {
    path(n, names)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn number(n: roxmltree::Node, names: &[&str]) -> Result<Option<f64>> {
    text(n, names)
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| anyhow!("header {}: {t:?} is not a number", names.join("/")))
        })
        .transpose()
}

/// `2012-03-04` → `20120304`; `12:34:56` (or with fractions) → `123456`.
fn dicom_date_time(s: String) -> String {
    s.chars()
        .take_while(|c| *c != '.')
        .filter(|c| c.is_ascii_digit())
        .collect()
}

pub fn parse_header(xml: &str) -> Result<MrdHeader> {
    let doc = roxmltree::Document::parse(xml).context("the ISMRMRD XML header is not valid XML")?;
    let root = doc.root_element();
    if root.tag_name().name() != "ismrmrdHeader" {
        bail!(
            "XML root element is <{}>, expected <ismrmrdHeader>",
            root.tag_name().name()
        );
    }
    let enc = child(root, "encoding").ok_or_else(|| anyhow!("header has no <encoding>"))?;
    let space = |which: &str| -> Result<([usize; 3], [f64; 3])> {
        let mut m = [1usize; 3];
        let mut f = [0f64; 3];
        for (i, axis) in ["x", "y", "z"].iter().enumerate() {
            if let Some(v) = number(enc, &[which, "matrixSize", axis])? {
                m[i] = v as usize;
            } else if i < 2 {
                bail!("header has no encoding/{which}/matrixSize/{axis}");
            }
            f[i] = number(enc, &[which, "fieldOfView_mm", axis])?.unwrap_or(0.0);
        }
        Ok((m, f))
    };
    let (encoded_matrix, encoded_fov) = space("encodedSpace")?;
    let (recon_matrix, recon_fov) = match space("reconSpace") {
        Ok(r) => r,
        Err(_) if child(enc, "reconSpace").is_none() => (encoded_matrix, encoded_fov),
        Err(e) => return Err(e),
    };
    let limit = |name: &str| -> Result<Option<Limit>> {
        let base = ["encodingLimits", name];
        if path(enc, &base).is_none() {
            return Ok(None);
        }
        let get = |f: &str| -> Result<u32> {
            Ok(number(enc, &[base[0], base[1], f])?.unwrap_or(0.0) as u32)
        };
        Ok(Some(Limit {
            minimum: get("minimum")?,
            maximum: get("maximum")?,
            center: get("center")?,
        }))
    };
    let trajectory = text(enc, &["trajectory"]).unwrap_or_else(|| "cartesian".into());
    let sys = |f: &str| text(root, &["acquisitionSystemInformation", f]);
    let subj = |f: &str| text(root, &["subjectInformation", f]);
    let study = |f: &str| text(root, &["studyInformation", f]);
    let meas = |f: &str| text(root, &["measurementInformation", f]);
    let info = AcquisitionInfo {
        patient_name: subj("patientName"),
        patient_id: subj("patientID"),
        patient_birth_date: subj("patientBirthdate").map(dicom_date_time),
        patient_sex: subj("patientGender"),
        study_instance_uid: study("studyInstanceUID"),
        study_id: study("studyID"),
        accession_number: study("accessionNumber"),
        study_description: study("studyDescription"),
        referring_physician: study("referringPhysicianName"),
        study_date: study("studyDate").map(dicom_date_time),
        study_time: study("studyTime").map(dicom_date_time),
        series_description: meas("seriesDescription"),
        frame_of_reference_uid: meas("frameOfReferenceUID"),
        manufacturer: sys("systemVendor"),
        model_name: sys("systemModel"),
        institution: sys("institutionName"),
        field_strength_t: number(
            root,
            &["acquisitionSystemInformation", "systemFieldStrength_T"],
        )?,
        tr_ms: number(root, &["sequenceParameters", "TR"])?,
        te_ms: number(root, &["sequenceParameters", "TE"])?,
        flip_angle_deg: number(root, &["sequenceParameters", "flipAngle_deg"])?,
        fov_mm: (recon_fov[0] > 0.0 && recon_fov[1] > 0.0).then_some([recon_fov[1], recon_fov[0]]),
        slice_thickness_mm: (recon_fov[2] > 0.0).then_some(recon_fov[2]),
        ..Default::default()
    };
    Ok(MrdHeader {
        encoded_matrix,
        encoded_fov,
        recon_matrix,
        recon_fov,
        e1: limit("kspace_encoding_step_1")?,
        e2: limit("kspace_encoding_step_2")?,
        slice: limit("slice")?,
        average: limit("average")?,
        contrast: limit("contrast")?,
        repetition: limit("repetition")?,
        set: limit("set")?,
        phase: limit("phase")?,
        trajectory,
        receiver_channels: number(root, &["acquisitionSystemInformation", "receiverChannels"])?
            .map(|v| v as usize),
        info,
    })
}

/// Which contrast, repetition, set and cardiac phase to read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Selection {
    pub contrast: u32,
    pub repetition: u32,
    pub set: u32,
    pub phase: u32,
}

/// The acquisition header members the reader uses.
struct Acq {
    flags: u64,
    samples: usize,
    channels: usize,
    discard_pre: usize,
    discard_post: usize,
    center_sample: usize,
    encoding_space_ref: u32,
    position: [f64; 3],
    read_dir: [f64; 3],
    phase_dir: [f64; 3],
    e1: u32,
    e2: u32,
    slice: u32,
    contrast: u32,
    repetition: u32,
    set: u32,
    phase: u32,
}

fn acq(r: &Records, i: usize) -> Result<Acq> {
    let v = |name: &str| r.value(i, &format!("head.{name}"));
    let v3 = |name: &str| -> Result<[f64; 3]> {
        let a = r.values(i, &format!("head.{name}"))?;
        Ok([a[0], a[1], a[2]])
    };
    Ok(Acq {
        flags: v("flags")? as u64,
        samples: v("number_of_samples")? as usize,
        channels: v("active_channels")? as usize,
        discard_pre: v("discard_pre")? as usize,
        discard_post: v("discard_post")? as usize,
        center_sample: v("center_sample")? as usize,
        encoding_space_ref: v("encoding_space_ref")? as u32,
        position: v3("position")?,
        read_dir: v3("read_dir")?,
        phase_dir: v3("phase_dir")?,
        e1: v("idx.kspace_encode_step_1")? as u32,
        e2: v("idx.kspace_encode_step_2")? as u32,
        slice: v("idx.slice")? as u32,
        contrast: v("idx.contrast")? as u32,
        repetition: v("idx.repetition")? as u32,
        set: v("idx.set")? as u32,
        phase: v("idx.phase")? as u32,
    })
}

/// The samples of an acquisition, `[channels][samples]`.
fn samples(r: &Records, i: usize, a: &Acq) -> Result<Vec<Complex32>> {
    let d = r.vlen_f32(i, "data")?;
    if d.len() != 2 * a.channels * a.samples {
        bail!(
            "acquisition {i}: data holds {} floats, expected 2 × {} channels × {} samples \
             (mismatched sample counts)",
            d.len(),
            a.channels,
            a.samples
        );
    }
    Ok(d.chunks_exact(2)
        .map(|c| Complex32::new(c[0], c[1]))
        .collect())
}

/// Reads an MRD file written by the ISMRMRD library (or any writer of the same layout).
pub fn read(path: &Path, sel: Selection) -> Result<RawKspace> {
    let f = H5File::open(path)?;
    read_file(&f, &path.display().to_string(), sel)
}

pub fn read_file(f: &H5File, name: &str, sel: Selection) -> Result<RawKspace> {
    if !f.has_dataset("/dataset/xml") {
        bail!("{name}: MRD file without the XML header /dataset/xml");
    }
    let xml = f.dataset("/dataset/xml")?.read_string()?;
    let hdr = parse_header(&xml).with_context(|| format!("{name}: /dataset/xml"))?;
    if !hdr.trajectory.eq_ignore_ascii_case("cartesian") {
        bail!(
            "{name}: {} trajectory is not supported; inferd reads Cartesian MRD data only",
            hdr.trajectory
        );
    }
    if hdr.encoded_matrix[2] > 1 {
        bail!(
            "{name}: 3-D encoding ({} partitions along kspace_encode_step_2) is not supported; \
             expected 2-D slices",
            hdr.encoded_matrix[2]
        );
    }
    let recs = f.dataset("/dataset/data")?.read_records()?;
    let (enc_x, ny) = (hdr.encoded_matrix[0], hdr.encoded_matrix[1]);
    let nx = if hdr.recon_matrix[0] > 0 && hdr.recon_matrix[0] < enc_x {
        hdr.recon_matrix[0]
    } else {
        enc_x
    };
    let center_e1 = hdr.e1.map(|l| l.center).unwrap_or(ny as u32 / 2) as i64;

    use flags::*;
    let skipped = [
        IS_NAVIGATION_DATA,
        IS_PHASECORR_DATA,
        IS_HPFEEDBACK_DATA,
        IS_DUMMYSCAN_DATA,
        IS_RTFEEDBACK_DATA,
        IS_SURFACECOILCORRECTIONSCAN_DATA,
        IS_PHASE_STABILIZATION_REFERENCE,
        IS_PHASE_STABILIZATION,
    ];
    // First pass: headers, noise, the counters present.
    let mut noise: Vec<Vec<Complex32>> = Vec::new(); // per acquisition, [channels][samples]
    let mut noise_channels = 0;
    let mut image = Vec::new();
    let mut seen = [
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    ];
    for i in 0..recs.len() {
        let a = acq(&recs, i)?;
        if has(a.flags, IS_NOISE_MEASUREMENT) {
            noise_channels = a.channels;
            noise.push(samples(&recs, i, &a)?);
            continue;
        }
        if skipped.iter().any(|&b| has(a.flags, b)) || a.encoding_space_ref != 0 {
            continue;
        }
        for (s, v) in seen
            .iter_mut()
            .zip([a.contrast, a.repetition, a.set, a.phase])
        {
            s.insert(v);
        }
        image.push((i, a));
    }
    if image.is_empty() {
        bail!("{name}: /dataset/data holds no image acquisitions");
    }
    for ((what, want), (s, lim)) in [
        ("contrast", sel.contrast),
        ("repetition", sel.repetition),
        ("set", sel.set),
        ("phase", sel.phase),
    ]
    .into_iter()
    .zip(
        seen.iter()
            .zip([hdr.contrast, hdr.repetition, hdr.set, hdr.phase]),
    ) {
        if !s.contains(&want) {
            let max = lim
                .map(|l| l.maximum)
                .unwrap_or(*s.iter().next_back().unwrap());
            bail!("{name}: {what} {want} is out of range (the file has {what} 0..={max})");
        }
    }
    image.retain(|(_, a)| {
        [a.contrast, a.repetition, a.set, a.phase]
            == [sel.contrast, sel.repetition, sel.set, sel.phase]
    });
    let coils = image[0].1.channels;
    let slice_ids: Vec<u32> = image
        .iter()
        .map(|(_, a)| a.slice)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let slice_of: BTreeMap<u32, usize> =
        slice_ids.iter().enumerate().map(|(k, &s)| (s, k)).collect();
    let slices = slice_ids.len();

    let whiten = if noise.is_empty() {
        None
    } else {
        if noise_channels != coils {
            bail!("{name}: noise measurement has {noise_channels} channels, image data {coils}");
        }
        whitening_matrix(&noise, coils)
    };

    let plane = ny * enc_x;
    let mut sum = vec![Complex32::default(); slices * coils * plane];
    let mut count = vec![0u32; slices * ny];
    let mut placement: Vec<Option<SlicePlacement>> = vec![None; slices];
    for (i, a) in &image {
        let (i, a) = (*i, a);
        if a.channels != coils {
            bail!(
                "{name}: acquisition {i} has {} channels, expected {coils}",
                a.channels
            );
        }
        if a.e2 != 0 {
            bail!(
                "{name}: acquisition {i} has kspace_encode_step_2 = {}",
                a.e2
            );
        }
        let row = a.e1 as i64 - center_e1 + ny as i64 / 2;
        if row < 0 || row >= ny as i64 {
            bail!(
                "{name}: acquisition {i}: line {} (centre {center_e1}) falls outside the {ny} \
                 phase-encoding lines of the encoded matrix",
                a.e1
            );
        }
        let mut d = samples(&recs, i, a)?;
        if has(a.flags, IS_REVERSE) {
            for ch in d.chunks_exact_mut(a.samples) {
                ch.reverse();
            }
        }
        if let Some(w) = &whiten {
            apply_whitening(w, &mut d, coils, a.samples);
        }
        let keep = a.discard_pre..a.samples.saturating_sub(a.discard_post);
        let centre = if a.center_sample == 0 && a.samples == enc_x {
            enc_x / 2
        } else {
            a.center_sample
        };
        let first = enc_x as i64 / 2 - centre as i64 + keep.start as i64;
        let last = first + keep.len() as i64;
        if keep.is_empty() || first < 0 || last > enc_x as i64 {
            bail!(
                "{name}: acquisition {i}: {} samples (discard {}+{}, centre {}) do not fit the \
                 encoded readout of {enc_x} samples (mismatched sample counts)",
                a.samples,
                a.discard_pre,
                a.discard_post,
                a.center_sample
            );
        }
        let s = slice_of[&a.slice];
        for c in 0..coils {
            let dst = &mut sum[((s * coils + c) * ny + row as usize) * enc_x..][..enc_x];
            let src = &d[c * a.samples..(c + 1) * a.samples][keep.clone()];
            for (o, v) in dst[first as usize..last as usize].iter_mut().zip(src) {
                *o += v;
            }
        }
        count[s * ny + row as usize] += 1;
        if placement[s].is_none() {
            placement[s] = place(a, &hdr, nx);
        }
    }
    for s in 0..slices {
        for row in 0..ny {
            let n = count[s * ny + row];
            if n > 1 {
                for c in 0..coils {
                    for v in &mut sum[((s * coils + c) * ny + row) * enc_x..][..enc_x] {
                        *v /= n as f32;
                    }
                }
            }
        }
    }
    let data = crop_readout(&sum, enc_x, nx);
    let mut mask = vec![0f32; ny * nx];
    for row in 0..ny {
        if (0..slices).all(|s| count[s * ny + row] > 0) {
            mask[row * nx..(row + 1) * nx].fill(1.0);
        }
    }
    let mut info = hdr.info.clone();
    let recon_y = hdr.recon_matrix[1];
    if recon_y > 0 && recon_y < ny {
        info.recon_matrix = Some([recon_y, nx]);
    }
    if placement.iter().all(|p| p.is_some()) {
        info.slices = placement.into_iter().flatten().collect();
    }
    Ok(RawKspace {
        slices,
        coils,
        ny,
        nx,
        data,
        mask: Some(mask),
        info,
    })
}

/// Image plane of the slice an acquisition belongs to (see the module docs), or `None` when the
/// file gives no orientation (zero direction vectors) or no field of view.
fn place(a: &Acq, hdr: &MrdHeader, nx: usize) -> Option<SlicePlacement> {
    let norm = |v: &[f64; 3]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm(&a.read_dir) < 0.5 || norm(&a.phase_dir) < 0.5 {
        return None;
    }
    let (fov_x, fov_y) = (hdr.recon_fov[0], hdr.recon_fov[1]);
    if fov_x <= 0.0 || fov_y <= 0.0 {
        return None;
    }
    let rows = if hdr.recon_matrix[1] > 0 {
        hdr.recon_matrix[1]
    } else {
        hdr.encoded_matrix[1]
    };
    let (px, py) = (fov_x / nx as f64, fov_y / rows as f64);
    let mut position = a.position;
    for (k, p) in position.iter_mut().enumerate() {
        *p -= (nx / 2) as f64 * px * a.read_dir[k] + (rows / 2) as f64 * py * a.phase_dir[k];
    }
    Some(SlicePlacement {
        position,
        row_dir: a.read_dir,
        col_dir: a.phase_dir,
    })
}

/// `σ̄ L⁻¹` from the noise samples (see the module docs), `[coils, coils]` row-major; `None` when the
/// covariance is not positive definite (e.g. a coil without noise), in which case the data are left
/// as they are.
fn whitening_matrix(noise: &[Vec<Complex32>], coils: usize) -> Option<Vec<Complex32>> {
    let mut cov = vec![Complex32::default(); coils * coils];
    let mut n = 0usize;
    for acq in noise {
        let samples = acq.len() / coils;
        for s in 0..samples {
            for i in 0..coils {
                let xi = acq[i * samples + s];
                for j in 0..coils {
                    cov[i * coils + j] += xi * acq[j * samples + s].conj();
                }
            }
        }
        n += samples;
    }
    if n < 2 {
        return None;
    }
    let cov: Vec<num_complex::Complex64> = cov
        .iter()
        .map(|c| num_complex::Complex64::new(c.re as f64, c.im as f64) / (n - 1) as f64)
        .collect();
    let l = cholesky(&cov, coils)?;
    let linv = lower_inverse(&l, coils);
    let mean_var = (0..coils).map(|i| cov[i * coils + i].re).sum::<f64>() / coils as f64;
    let scale = mean_var.sqrt();
    Some(
        linv.iter()
            .map(|v| Complex32::new((v.re * scale) as f32, (v.im * scale) as f32))
            .collect(),
    )
}

type C64 = num_complex::Complex64;

/// Lower-triangular `L` with `A = L Lᴴ` for Hermitian positive-definite `A` (`n × n`, row-major).
pub fn cholesky(a: &[C64], n: usize) -> Option<Vec<C64>> {
    let mut l = vec![C64::default(); n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k].conj();
            }
            if i == j {
                if s.re.is_nan() || s.re <= 1e-30 {
                    return None;
                }
                l[i * n + i] = C64::new(s.re.sqrt(), 0.0);
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix by forward substitution.
fn lower_inverse(l: &[C64], n: usize) -> Vec<C64> {
    let mut inv = vec![C64::default(); n * n];
    for col in 0..n {
        for i in col..n {
            let mut s = if i == col {
                C64::new(1.0, 0.0)
            } else {
                C64::default()
            };
            for k in col..i {
                s -= l[i * n + k] * inv[k * n + col];
            }
            inv[i * n + col] = s / l[i * n + i];
        }
    }
    inv
}

/// `d ← W d` across channels for every sample; `d` is `[coils][samples]`.
fn apply_whitening(w: &[Complex32], d: &mut [Complex32], coils: usize, samples: usize) {
    let mut x = vec![Complex32::default(); coils];
    for s in 0..samples {
        for c in 0..coils {
            x[c] = d[c * samples + s];
        }
        for i in 0..coils {
            d[i * samples + s] = (0..=i).map(|k| w[i * coils + k] * x[k]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <subjectInformation><patientName>Doe^Jane</patientName><patientID>P1</patientID>
    <patientBirthdate>1970-01-02</patientBirthdate><patientGender>F</patientGender></subjectInformation>
  <studyInformation><studyDate>2024-05-06</studyDate><studyTime>07:08:09.5</studyTime>
    <studyInstanceUID>1.2.3</studyInstanceUID><accessionNumber>A7</accessionNumber></studyInformation>
  <measurementInformation><frameOfReferenceUID>1.2.4</frameOfReferenceUID>
    <seriesDescription>t1 tse</seriesDescription></measurementInformation>
  <acquisitionSystemInformation><systemVendor>ACME</systemVendor><systemModel>M3</systemModel>
    <systemFieldStrength_T>2.89</systemFieldStrength_T><receiverChannels>8</receiverChannels>
    <institutionName>Lab</institutionName></acquisitionSystemInformation>
  <sequenceParameters><TR>500</TR><TR>600</TR><TE>12.5</TE><flipAngle_deg>90</flipAngle_deg></sequenceParameters>
  <encoding>
    <encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>366</maximum><center>184</center></kspace_encoding_step_1>
      <repetition><minimum>0</minimum><maximum>2</maximum><center>0</center></repetition>
    </encodingLimits>
    <trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>"#;

    #[test]
    fn parses_the_header_fields() {
        let h = parse_header(HEADER).unwrap();
        assert_eq!(h.encoded_matrix, [640, 368, 1]);
        assert_eq!(h.recon_matrix, [320, 320, 1]);
        assert_eq!(h.encoded_fov, [280.0, 140.0, 4.5]);
        assert_eq!(
            h.e1,
            Some(Limit {
                minimum: 0,
                maximum: 366,
                center: 184
            })
        );
        assert_eq!(h.repetition.unwrap().maximum, 2);
        assert!(h.slice.is_none());
        assert_eq!(h.trajectory, "cartesian");
        assert_eq!(h.receiver_channels, Some(8));
        let i = &h.info;
        assert_eq!(i.patient_name.as_deref(), Some("Doe^Jane"));
        assert_eq!(i.patient_birth_date.as_deref(), Some("19700102"));
        assert_eq!(i.patient_sex.as_deref(), Some("F"));
        assert_eq!(i.study_date.as_deref(), Some("20240506"));
        assert_eq!(i.study_time.as_deref(), Some("070809"));
        assert_eq!(i.accession_number.as_deref(), Some("A7"));
        assert_eq!(i.frame_of_reference_uid.as_deref(), Some("1.2.4"));
        assert_eq!(i.series_description.as_deref(), Some("t1 tse"));
        assert_eq!(i.manufacturer.as_deref(), Some("ACME"));
        assert_eq!(i.model_name.as_deref(), Some("M3"));
        assert_eq!(i.institution.as_deref(), Some("Lab"));
        assert_eq!(i.field_strength_t, Some(2.89));
        assert_eq!(
            (i.tr_ms, i.te_ms, i.flip_angle_deg),
            (Some(500.0), Some(12.5), Some(90.0))
        );
        assert_eq!(i.fov_mm, Some([140.0, 140.0]));
        assert_eq!(i.slice_thickness_mm, Some(3.0));
    }

    #[test]
    fn rejects_non_headers() {
        assert!(parse_header("<a>").is_err());
        let e = parse_header("<foo/>").unwrap_err();
        assert!(e.to_string().contains("ismrmrdHeader"), "{e}");
        let e = parse_header(&HEADER.replace("<TE>12.5", "<TE>x")).unwrap_err();
        assert!(e.to_string().contains("TE"), "{e}");
    }

    #[test]
    fn first_pixel_is_half_a_pixel_inside_the_field_of_view() {
        let a = Acq {
            flags: 0,
            samples: 128,
            channels: 1,
            discard_pre: 0,
            discard_post: 0,
            center_sample: 64,
            encoding_space_ref: 0,
            position: [10.0, 20.0, 30.0],
            read_dir: [0.0, 1.0, 0.0],
            phase_dir: [1.0, 0.0, 0.0],
            e1: 0,
            e2: 0,
            slice: 0,
            contrast: 0,
            repetition: 0,
            set: 0,
            phase: 0,
        };
        let h = parse_header(HEADER).unwrap(); // reconSpace 320 × 320 over 140 × 140 mm
        let p = place(&a, &h, 320).unwrap();
        let half = 160.0 * 140.0 / 320.0; // pixel 160 of 320 is the centre
        assert_eq!(p.position, [10.0 - half, 20.0 - half, 30.0]);
        assert_eq!((p.row_dir, p.col_dir), (a.read_dir, a.phase_dir));
        let flat = Acq {
            read_dir: [0.0; 3],
            ..a
        };
        assert!(place(&flat, &h, 320).is_none());
    }

    #[test]
    fn flags_are_one_based() {
        assert!(flags::has(1 << 18, flags::IS_NOISE_MEASUREMENT));
        assert!(!flags::has(1 << 19, flags::IS_NOISE_MEASUREMENT));
        assert!(flags::has(1 << 21, flags::IS_REVERSE));
    }

    #[test]
    fn whitening_gives_identity_noise_covariance_up_to_the_mean_level() {
        // Two correlated coils: x1 = n1, x2 = 0.5 n1 + n2 with a deterministic pseudo-random n.
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let s = 4000;
        let mut acq = vec![Complex32::default(); 2 * s];
        for k in 0..s {
            let n1 = Complex32::new(rnd(), rnd());
            let n2 = Complex32::new(rnd(), rnd());
            acq[k] = n1;
            acq[s + k] = n1 * 0.5 + n2 * 2.0;
        }
        let w = whitening_matrix(std::slice::from_ref(&acq), 2).unwrap();
        let before: f64 = acq.iter().map(|v| v.norm_sqr() as f64).sum::<f64>() / (2 * s) as f64;
        let mut white = acq.clone();
        apply_whitening(&w, &mut white, 2, s);
        let c = |i: usize, j: usize| -> Complex32 {
            (0..s)
                .map(|k| white[i * s + k] * white[j * s + k].conj())
                .sum::<Complex32>()
                / (s - 1) as f32
        };
        let (c00, c11, c01) = (c(0, 0), c(1, 1), c(0, 1));
        assert!((c00.re - c11.re).abs() / c00.re < 1e-3, "{c00} {c11}");
        assert!(c01.norm() / c00.re < 1e-3, "{c01}");
        // σ̄² keeps the mean noise power
        assert!(
            ((c00.re as f64) - before).abs() / before < 1e-2,
            "{c00} vs {before}"
        );
        // a coil without noise: no whitening
        let zero = vec![Complex32::default(); 2 * s];
        assert!(whitening_matrix(&[zero], 2).is_none());
    }
}
