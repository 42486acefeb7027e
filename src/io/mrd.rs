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
    pub const LAST_IN_SLICE: u32 = 8;
    pub const LAST_IN_MEASUREMENT: u32 = 25;
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

/// Size of an ISMRMRD `AcquisitionHeader` as files and the streaming protocol store it (packed,
/// little-endian).
pub const ACQ_HEADER_BYTES: usize = 340;

/// The acquisition header members inferd uses (ISMRMRD `AcquisitionHeader`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AcqHead {
    pub flags: u64,
    pub measurement_uid: u32,
    pub acquisition_time_stamp: u32,
    pub physiology_time_stamp: [u32; 3],
    pub samples: usize,
    pub channels: usize,
    pub discard_pre: usize,
    pub discard_post: usize,
    pub center_sample: usize,
    pub encoding_space_ref: u32,
    pub trajectory_dimensions: usize,
    pub position: [f64; 3],
    pub read_dir: [f64; 3],
    pub phase_dir: [f64; 3],
    pub slice_dir: [f64; 3],
    pub patient_table_position: [f64; 3],
    pub e1: u32,
    pub e2: u32,
    pub average: u32,
    pub slice: u32,
    pub contrast: u32,
    pub phase: u32,
    pub repetition: u32,
    pub set: u32,
}

impl AcqHead {
    /// Decodes the packed little-endian header of the streaming protocol (offsets of ISMRMRD's
    /// `AcquisitionHeader`: flags at 2, sample counts at 34, directions from 182, counters at 242).
    pub fn parse(b: &[u8; ACQ_HEADER_BYTES]) -> AcqHead {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let f32x3 = |o: usize| {
            let f = |k: usize| f32::from_le_bytes(b[o + 4 * k..o + 4 * k + 4].try_into().unwrap());
            [f(0) as f64, f(1) as f64, f(2) as f64]
        };
        let idx = |k: usize| u16_at(242 + 2 * k) as u32;
        AcqHead {
            flags: u64::from_le_bytes(b[2..10].try_into().unwrap()),
            measurement_uid: u32_at(10),
            acquisition_time_stamp: u32_at(18),
            physiology_time_stamp: [u32_at(22), u32_at(26), u32_at(30)],
            samples: u16_at(34) as usize,
            channels: u16_at(38) as usize,
            discard_pre: u16_at(168) as usize,
            discard_post: u16_at(170) as usize,
            center_sample: u16_at(172) as usize,
            encoding_space_ref: u16_at(174) as u32,
            trajectory_dimensions: u16_at(176) as usize,
            position: f32x3(182),
            read_dir: f32x3(194),
            phase_dir: f32x3(206),
            slice_dir: f32x3(218),
            patient_table_position: f32x3(230),
            e1: idx(0),
            e2: idx(1),
            average: idx(2),
            slice: idx(3),
            contrast: idx(4),
            phase: idx(5),
            repetition: idx(6),
            set: idx(7),
        }
    }

    fn from_records(r: &Records, i: usize) -> Result<AcqHead> {
        let v = |name: &str| r.value(i, &format!("head.{name}"));
        let v3 = |name: &str| -> Result<[f64; 3]> {
            let a = r.values(i, &format!("head.{name}"))?;
            Ok([a[0], a[1], a[2]])
        };
        // members the file reader does not need may be absent from other writers' layouts
        let opt = |name: &str| v(name).unwrap_or(0.0);
        Ok(AcqHead {
            flags: v("flags")? as u64,
            measurement_uid: opt("measurement_uid") as u32,
            acquisition_time_stamp: opt("acquisition_time_stamp") as u32,
            physiology_time_stamp: [0; 3],
            samples: v("number_of_samples")? as usize,
            channels: v("active_channels")? as usize,
            discard_pre: v("discard_pre")? as usize,
            discard_post: v("discard_post")? as usize,
            center_sample: v("center_sample")? as usize,
            encoding_space_ref: v("encoding_space_ref")? as u32,
            trajectory_dimensions: opt("trajectory_dimensions") as usize,
            position: v3("position")?,
            read_dir: v3("read_dir")?,
            phase_dir: v3("phase_dir")?,
            slice_dir: v3("slice_dir").unwrap_or_default(),
            patient_table_position: v3("patient_table_position").unwrap_or_default(),
            e1: v("idx.kspace_encode_step_1")? as u32,
            e2: v("idx.kspace_encode_step_2")? as u32,
            average: opt("idx.average") as u32,
            slice: v("idx.slice")? as u32,
            contrast: v("idx.contrast")? as u32,
            phase: v("idx.phase")? as u32,
            repetition: v("idx.repetition")? as u32,
            set: v("idx.set")? as u32,
        })
    }

    /// The image this acquisition belongs to.
    pub fn key(&self) -> SliceKey {
        SliceKey {
            slice: self.slice,
            contrast: self.contrast,
            phase: self.phase,
            repetition: self.repetition,
            set: self.set,
        }
    }

    fn has(&self, flag: u32) -> bool {
        flags::has(self.flags, flag)
    }

    /// Not image data of the first encoding space: navigators, phase correction, feedback, dummy
    /// scans, surface-coil correction and phase stabilisation scans, other encoding spaces.
    fn is_skipped(&self) -> bool {
        use flags::*;
        const SKIPPED: [u32; 8] = [
            IS_NAVIGATION_DATA,
            IS_PHASECORR_DATA,
            IS_HPFEEDBACK_DATA,
            IS_DUMMYSCAN_DATA,
            IS_RTFEEDBACK_DATA,
            IS_SURFACECOILCORRECTIONSCAN_DATA,
            IS_PHASE_STABILIZATION_REFERENCE,
            IS_PHASE_STABILIZATION,
        ];
        SKIPPED.iter().any(|&b| self.has(b)) || self.encoding_space_ref != 0
    }
}

/// The samples of an acquisition, `[channels][samples]`.
fn samples(r: &Records, i: usize, a: &AcqHead) -> Result<Vec<Complex32>> {
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

/// One image's counters: acquisitions with the same key (any `average`) make one slice image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SliceKey {
    pub slice: u32,
    pub contrast: u32,
    pub phase: u32,
    pub repetition: u32,
    pub set: u32,
}

/// The k-space of one assembled slice.
#[derive(Clone, Debug)]
pub enum SliceData {
    /// `[coils, ny, nx]` (readout oversampling removed) and which of the `ny` lines were measured.
    Cartesian {
        data: Vec<Complex32>,
        lines: Vec<bool>,
    },
    /// `[coils, samples]` and each sample's `(k0, k1)` in grid units (k0 along the image rows'
    /// axis, the phase-encoding direction; see [`Assembler`]).
    NonCartesian {
        data: Vec<Complex32>,
        trajectory: Vec<[f32; 2]>,
    },
}

/// A slice whose acquisitions are complete.
#[derive(Clone, Debug)]
pub struct AssembledSlice {
    pub key: SliceKey,
    pub coils: usize,
    pub ny: usize,
    pub nx: usize,
    pub data: SliceData,
    /// The first acquisition's header (time stamps, measurement UID, directions).
    pub first: AcqHead,
    /// Where the slice lies in the patient, when the acquisitions say.
    pub placement: Option<SlicePlacement>,
}

/// What [`Assembler::push`] did with an acquisition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pushed {
    /// Not image data (navigator, phase correction, dummy scan, ...) or another encoding space.
    Skipped,
    /// A noise measurement, kept for pre-whitening.
    Noise,
    /// Added to its slice; `true` when it was the slice's last acquisition (`ACQ_LAST_IN_SLICE`).
    Added(SliceKey, bool),
}

/// A slice being filled: Cartesian sums and counts per line, or the non-Cartesian samples so far.
struct Partial {
    sum: Vec<Complex32>,
    count: Vec<u32>,
    trajectory: Vec<[f32; 2]>,
    first: AcqHead,
}

/// At most this many noise samples (all coils together) are kept for the noise covariance.
const MAX_NOISE_VALUES: usize = 1 << 22;
/// Most samples per coil of one non-Cartesian slice.
pub const MAX_NONCARTESIAN_SAMPLES: usize = 4 << 20;

/// Sorts acquisitions into slices, the MRD file reader's and the MRD streaming server's shared
/// path (see the module documentation for what happens to each acquisition).
///
/// Non-Cartesian data (the header's trajectory is not `cartesian`) keep every image acquisition's
/// samples with its trajectory. ISMRMRD trajectories are `[samples, dimensions]` with the readout
/// coordinate first, normalised to the encoded field of view (|k| ≤ 0.5 reaches the edge of
/// k-space); inferd's `(k0, k1)` in grid units of the reconstructed `ny × nx` image are
/// `(traj[1] · ny, traj[0] · nx)`: k0 pairs with the image rows (phase encoding), k1 with the readout.
/// Readout oversampling of non-Cartesian data needs no crop (the reconstruction grid is the
/// reconstruction matrix).
pub struct Assembler {
    hdr: MrdHeader,
    cartesian: bool,
    /// Encoded readout samples, reconstructed readout, phase-encoding lines.
    enc_x: usize,
    nx: usize,
    ny: usize,
    center_e1: i64,
    noise: Vec<Vec<Complex32>>,
    noise_values: usize,
    noise_channels: usize,
    /// The whitening matrix, decided when the first image acquisition arrives.
    whiten: Option<Option<Vec<Complex32>>>,
    coils: Option<usize>,
    open: BTreeMap<SliceKey, Partial>,
    max_open: usize,
}

impl Assembler {
    /// `max_open`: how many slices may be incomplete at once (each holds one slice's k-space).
    pub fn new(hdr: MrdHeader, max_open: usize) -> Result<Assembler> {
        let cartesian = hdr.trajectory.eq_ignore_ascii_case("cartesian");
        if hdr.encoded_matrix[2] > 1 {
            bail!(
                "3-D encoding ({} partitions along kspace_encode_step_2) is not supported; \
                 expected 2-D slices",
                hdr.encoded_matrix[2]
            );
        }
        let (enc_x, ny, nx) = if cartesian {
            let (enc_x, ny) = (hdr.encoded_matrix[0], hdr.encoded_matrix[1]);
            let nx = if hdr.recon_matrix[0] > 0 && hdr.recon_matrix[0] < enc_x {
                hdr.recon_matrix[0]
            } else {
                enc_x
            };
            (enc_x, ny, nx)
        } else {
            let [x, y, _] = hdr.recon_matrix;
            (x, y, x)
        };
        if enc_x == 0 || ny == 0 || nx == 0 {
            bail!("the header's matrix is {enc_x} × {ny}; expected a non-empty encoded and reconstruction matrix");
        }
        let center_e1 = hdr.e1.map(|l| l.center).unwrap_or(ny as u32 / 2) as i64;
        Ok(Assembler {
            hdr,
            cartesian,
            enc_x,
            nx,
            ny,
            center_e1,
            noise: Vec::new(),
            noise_values: 0,
            noise_channels: 0,
            whiten: None,
            coils: None,
            open: BTreeMap::new(),
            max_open,
        })
    }

    /// The header the acquisitions belong to.
    pub fn header(&self) -> &MrdHeader {
        &self.hdr
    }

    /// Rows × columns of the reconstructed images (before any reconstruction-matrix crop).
    pub fn image_size(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Whether the acquisitions follow a non-Cartesian trajectory.
    pub fn is_cartesian(&self) -> bool {
        self.cartesian
    }

    /// Most samples per coil a non-Cartesian slice may collect: four times the image's pixels
    /// (a fully sampled radial scan needs π/2 × matrix² samples at Nyquist with a twice
    /// oversampled readout), at most [`MAX_NONCARTESIAN_SAMPLES`].
    fn max_samples(&self) -> usize {
        self.ny
            .saturating_mul(self.nx)
            .saturating_mul(4)
            .min(MAX_NONCARTESIAN_SAMPLES)
    }

    /// Bytes one incomplete slice of `coils` coils may hold (what a caller admits before pushing
    /// the first acquisition of a new slice; see [`Assembler::opens_slice`]).
    pub fn partial_bytes(&self, coils: usize) -> Option<u64> {
        let n = if self.cartesian {
            (coils as u64)
                .checked_mul(self.ny as u64)?
                .checked_mul(self.enc_x as u64)?
        } else {
            (coils as u64).checked_mul(self.max_samples() as u64)?
        };
        // samples, plus the trajectory of non-Cartesian slices
        n.checked_mul(std::mem::size_of::<Complex32>() as u64 + 8)
    }

    /// Whether pushing `a` starts a new incomplete slice.
    pub fn opens_slice(&self, a: &AcqHead) -> bool {
        !a.has(flags::IS_NOISE_MEASUREMENT) && !a.is_skipped() && !self.open.contains_key(&a.key())
    }

    /// How many slices are incomplete.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The slices not yet complete.
    pub fn open_slices(&self) -> impl Iterator<Item = SliceKey> + '_ {
        self.open.keys().copied()
    }

    /// Sorts one acquisition in. `data` is `[channels][samples]`, `trajectory` `[samples,
    /// dimensions]` (empty for Cartesian data).
    pub fn push(
        &mut self,
        a: &AcqHead,
        mut data: Vec<Complex32>,
        trajectory: &[f32],
    ) -> Result<Pushed> {
        use flags::*;
        let values = a.channels.checked_mul(a.samples);
        if values != Some(data.len()) {
            bail!(
                "the acquisition holds {} samples, expected {} channels × {} samples \
                 (mismatched sample counts)",
                data.len(),
                a.channels,
                a.samples
            );
        }
        if a.has(IS_NOISE_MEASUREMENT) {
            if self.whiten.is_none() && self.noise_values + data.len() <= MAX_NOISE_VALUES {
                self.noise_channels = a.channels;
                self.noise_values += data.len();
                self.noise.push(data);
            }
            return Ok(Pushed::Noise);
        }
        if a.is_skipped() {
            return Ok(Pushed::Skipped);
        }
        let coils = *self.coils.get_or_insert(a.channels);
        if a.channels != coils || coils == 0 {
            bail!(
                "the acquisition has {} channels, expected {coils}",
                a.channels
            );
        }
        if a.e2 != 0 {
            bail!(
                "the acquisition has kspace_encode_step_2 = {} (3-D encoding is not supported)",
                a.e2
            );
        }
        if self.whiten.is_none() {
            let w = if self.noise.is_empty() {
                None
            } else if self.noise_channels != coils {
                bail!(
                    "the noise measurement has {} channels, the image data {coils}",
                    self.noise_channels
                );
            } else {
                whitening_matrix(&self.noise, coils)
            };
            self.whiten = Some(w);
            self.noise = Vec::new();
        }
        if a.has(IS_REVERSE) {
            for ch in data.chunks_exact_mut(a.samples.max(1)) {
                ch.reverse();
            }
        }
        if let Some(Some(w)) = &self.whiten {
            apply_whitening(w, &mut data, coils, a.samples);
        }
        let keep = a.discard_pre..a.samples.saturating_sub(a.discard_post);
        if keep.is_empty() {
            bail!(
                "the acquisition's {} samples are all discarded ({} + {})",
                a.samples,
                a.discard_pre,
                a.discard_post
            );
        }
        let key = a.key();
        if !self.open.contains_key(&key) && self.open.len() >= self.max_open {
            bail!(
                "more than {} slices are incomplete at once; send each slice's acquisitions \
                 together (ACQ_LAST_IN_SLICE ends a slice)",
                self.max_open
            );
        }
        let (cartesian, plane) = (self.cartesian, self.ny * self.enc_x);
        let max_samples = self.max_samples();
        let p = self.open.entry(key).or_insert_with(|| Partial {
            sum: if cartesian {
                vec![Complex32::default(); coils * plane]
            } else {
                Vec::new()
            },
            count: Vec::new(),
            trajectory: Vec::new(),
            first: a.clone(),
        });
        if cartesian {
            let (enc_x, ny) = (self.enc_x, self.ny);
            let row = a.e1 as i64 - self.center_e1 + ny as i64 / 2;
            if row < 0 || row >= ny as i64 {
                bail!(
                    "line {} (centre {}) falls outside the {ny} phase-encoding lines of the \
                     encoded matrix",
                    a.e1,
                    self.center_e1
                );
            }
            let centre = if a.center_sample == 0 && a.samples == enc_x {
                enc_x / 2
            } else {
                a.center_sample
            };
            let first = enc_x as i64 / 2 - centre as i64 + keep.start as i64;
            let last = first + keep.len() as i64;
            if first < 0 || last > enc_x as i64 {
                bail!(
                    "{} samples (discard {}+{}, centre {}) do not fit the encoded readout of \
                     {enc_x} samples (mismatched sample counts)",
                    a.samples,
                    a.discard_pre,
                    a.discard_post,
                    a.center_sample
                );
            }
            if p.count.is_empty() {
                p.count = vec![0; ny];
            }
            for c in 0..coils {
                let dst = &mut p.sum[(c * ny + row as usize) * enc_x..][..enc_x];
                let src = &data[c * a.samples..(c + 1) * a.samples][keep.clone()];
                for (o, v) in dst[first as usize..last as usize].iter_mut().zip(src) {
                    *o += v;
                }
            }
            p.count[row as usize] += 1;
        } else {
            let dims = a.trajectory_dimensions;
            if dims < 2 || Some(trajectory.len()) != a.samples.checked_mul(dims) {
                bail!(
                    "non-Cartesian acquisitions need a trajectory of at least 2 dimensions per \
                     sample; got {dims} dimensions and {} values for {} samples",
                    trajectory.len(),
                    a.samples
                );
            }
            let total: usize = p.count.iter().map(|&n| n as usize).sum();
            if total + keep.len() > max_samples {
                bail!(
                    "the slice has more than {} samples per coil; a non-Cartesian slice may have \
                     at most four times its {} × {} pixels",
                    max_samples,
                    self.ny,
                    self.nx
                );
            }
            let (ny, nx) = (self.ny as f32, self.nx as f32);
            for s in keep.clone() {
                let (kx, ky) = (trajectory[s * dims], trajectory[s * dims + 1]);
                if !(kx.is_finite() && ky.is_finite() && kx.abs() <= 0.5 && ky.abs() <= 0.5) {
                    bail!(
                        "trajectory sample ({kx}, {ky}) is outside [-0.5, 0.5]; ISMRMRD \
                         trajectories are normalised to the encoded field of view"
                    );
                }
                p.trajectory.push([ky * ny, kx * nx]);
            }
            // [coils][samples] appended coil by coil: kept in `sum` as [acquisitions][coils][kept]
            for c in 0..coils {
                p.sum
                    .extend_from_slice(&data[c * a.samples..(c + 1) * a.samples][keep.clone()]);
            }
            p.count.push(keep.len() as u32);
        }
        Ok(Pushed::Added(key, a.has(LAST_IN_SLICE)))
    }

    /// Takes a slice out of the assembler (complete or not): averages repeated lines, removes
    /// readout oversampling, and places it.
    pub fn take(&mut self, key: SliceKey) -> Option<AssembledSlice> {
        let p = self.open.remove(&key)?;
        let coils = self.coils.unwrap_or(1);
        let (ny, nx, enc_x) = (self.ny, self.nx, self.enc_x);
        let data = if self.cartesian {
            let mut sum = p.sum;
            for c in 0..coils {
                for (row, &n) in p.count.iter().enumerate() {
                    if n > 1 {
                        for v in &mut sum[(c * ny + row) * enc_x..][..enc_x] {
                            *v /= n as f32;
                        }
                    }
                }
            }
            SliceData::Cartesian {
                data: crop_readout(&sum, enc_x, nx),
                lines: p.count.iter().map(|&n| n > 0).collect(),
            }
        } else {
            // [acquisitions][coils][kept] → [coils][all samples]
            let total: usize = p.count.iter().map(|&n| n as usize).sum();
            let mut data = vec![Complex32::default(); coils * total];
            let (mut src, mut offset) = (0usize, 0usize);
            for &n in &p.count {
                let n = n as usize;
                for c in 0..coils {
                    data[c * total + offset..][..n].copy_from_slice(&p.sum[src..src + n]);
                    src += n;
                }
                offset += n;
            }
            SliceData::NonCartesian {
                data,
                trajectory: p.trajectory,
            }
        };
        let placement = place(&p.first, &self.hdr, nx);
        Some(AssembledSlice {
            key,
            coils,
            ny,
            nx,
            data,
            first: p.first,
            placement,
        })
    }
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
    let limits = [hdr.contrast, hdr.repetition, hdr.set, hdr.phase];
    let mut asm = Assembler::new(hdr, usize::MAX).with_context(|| name.to_string())?;
    let recs = f.dataset("/dataset/data")?.read_records()?;

    // First pass: noise (whitening uses all of it), the counters present, the selected acquisitions.
    let mut image = Vec::new();
    let mut seen = [(); 4].map(|_| BTreeSet::new());
    for i in 0..recs.len() {
        let a = AcqHead::from_records(&recs, i)?;
        if a.has(flags::IS_NOISE_MEASUREMENT) {
            asm.push(&a, samples(&recs, i, &a)?, &[])
                .with_context(|| format!("{name}: acquisition {i}"))?;
            continue;
        }
        if a.is_skipped() {
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
    .zip(seen.iter().zip(limits))
    {
        if !s.contains(&want) {
            let max = lim
                .map(|l| l.maximum)
                .unwrap_or(*s.iter().next_back().unwrap());
            bail!("{name}: {what} {want} is out of range (the file has {what} 0..={max})");
        }
    }
    let mut added = false;
    for (i, a) in &image {
        if [a.contrast, a.repetition, a.set, a.phase]
            != [sel.contrast, sel.repetition, sel.set, sel.phase]
        {
            continue;
        }
        let d = samples(&recs, *i, a)?;
        added |= matches!(
            asm.push(a, d, &[])
                .with_context(|| format!("{name}: acquisition {i}"))?,
            Pushed::Added(..)
        );
    }
    if !added {
        bail!("{name}: /dataset/data holds no image acquisitions");
    }
    let keys: Vec<SliceKey> = asm.open_slices().collect();
    let (ny, nx) = asm.image_size();
    let recon_y = asm.header().recon_matrix[1];
    let mut info = asm.header().info.clone();
    let slices = keys.len();
    let mut data = Vec::new();
    let mut measured = vec![true; ny];
    let mut placement = Vec::with_capacity(slices);
    let mut coils = 0;
    for key in keys {
        let s = asm.take(key).expect("an open slice");
        coils = s.coils;
        let SliceData::Cartesian { data: d, lines } = s.data else {
            unreachable!("the file reader takes Cartesian data only")
        };
        data.extend_from_slice(&d);
        for (m, l) in measured.iter_mut().zip(lines) {
            *m &= l;
        }
        placement.push(s.placement);
    }
    let mut mask = vec![0f32; ny * nx];
    for (row, _) in measured.iter().enumerate().filter(|(_, &m)| m) {
        mask[row * nx..(row + 1) * nx].fill(1.0);
    }
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
fn place(a: &AcqHead, hdr: &MrdHeader, nx: usize) -> Option<SlicePlacement> {
    let rows = if hdr.recon_matrix[1] > 0 {
        hdr.recon_matrix[1]
    } else {
        hdr.encoded_matrix[1]
    };
    let fov = [hdr.recon_fov[0], hdr.recon_fov[1]];
    plane(a.position, a.read_dir, a.phase_dir, fov, rows, nx)
}

/// The DICOM image plane of an MRD slice or image: `centre` is the slice centre (an acquisition's or
/// an MRD image's `position`), `fov` the (readout, phase) field of view in mm of the `rows × cols`
/// image; the first pixel lies `cols/2` pixels against `read_dir` and `rows/2` against `phase_dir`
/// from the centre. `None` when a direction is missing or the field of view is empty.
pub fn plane(
    centre: [f64; 3],
    read_dir: [f64; 3],
    phase_dir: [f64; 3],
    fov: [f64; 2],
    rows: usize,
    cols: usize,
) -> Option<SlicePlacement> {
    let norm = |v: &[f64; 3]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm(&read_dir) < 0.5 || norm(&phase_dir) < 0.5 || fov[0] <= 0.0 || fov[1] <= 0.0 {
        return None;
    }
    let (px, py) = (fov[0] / cols as f64, fov[1] / rows as f64);
    let mut position = centre;
    for (k, p) in position.iter_mut().enumerate() {
        *p -= (cols / 2) as f64 * px * read_dir[k] + (rows / 2) as f64 * py * phase_dir[k];
    }
    Some(SlicePlacement {
        position,
        row_dir: read_dir,
        col_dir: phase_dir,
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
        let a = AcqHead {
            samples: 128,
            channels: 1,
            center_sample: 64,
            position: [10.0, 20.0, 30.0],
            read_dir: [0.0, 1.0, 0.0],
            phase_dir: [1.0, 0.0, 0.0],
            ..Default::default()
        };
        let h = parse_header(HEADER).unwrap(); // reconSpace 320 × 320 over 140 × 140 mm
        let p = place(&a, &h, 320).unwrap();
        let half = 160.0 * 140.0 / 320.0; // pixel 160 of 320 is the centre
        assert_eq!(p.position, [10.0 - half, 20.0 - half, 30.0]);
        assert_eq!((p.row_dir, p.col_dir), (a.read_dir, a.phase_dir));
        let flat = AcqHead {
            read_dir: [0.0; 3],
            ..a.clone()
        };
        assert!(place(&flat, &h, 320).is_none());
    }

    #[test]
    fn assembler_bounds_what_an_open_slice_holds() {
        let radial = HEADER
            .replace(
                "<trajectory>cartesian</trajectory>",
                "<trajectory>radial</trajectory>",
            )
            .replace(
                "<reconSpace><matrixSize><x>320</x><y>320</y>",
                "<reconSpace><matrixSize><x>8</x><y>8</y>",
            );
        let mut asm = Assembler::new(parse_header(&radial).unwrap(), 2).unwrap();
        assert_eq!(asm.image_size(), (8, 8));
        let spoke = |slice: u32| AcqHead {
            samples: 64,
            channels: 1,
            trajectory_dimensions: 2,
            slice,
            ..Default::default()
        };
        let traj = vec![0.1f32; 128];
        assert!(asm.opens_slice(&spoke(0)));
        // 4 × 8 × 8 = 256 samples per coil: four spokes fit, the fifth does not
        for _ in 0..4 {
            asm.push(&spoke(0), vec![Complex32::default(); 64], &traj)
                .unwrap();
        }
        assert!(!asm.opens_slice(&spoke(0)));
        let e = asm
            .push(&spoke(0), vec![Complex32::default(); 64], &traj)
            .unwrap_err();
        assert!(e.to_string().contains("more than 256 samples"), "{e}");
        // at most two slices open at once
        asm.push(&spoke(1), vec![Complex32::default(); 64], &traj)
            .unwrap();
        assert_eq!(asm.open_count(), 2);
        let e = asm
            .push(&spoke(2), vec![Complex32::default(); 64], &traj)
            .unwrap_err();
        assert!(e.to_string().contains("more than 2 slices"), "{e}");
        // trajectories outside the normalised range, and data that do not match the header
        let e = asm
            .push(
                &spoke(1),
                vec![Complex32::default(); 64],
                &vec![0.7f32; 128],
            )
            .unwrap_err();
        assert!(e.to_string().contains("outside [-0.5, 0.5]"), "{e}");
        let e = asm
            .push(&spoke(1), vec![Complex32::default(); 63], &traj)
            .unwrap_err();
        assert!(e.to_string().contains("mismatched sample counts"), "{e}");
        let s = asm.take(SliceKey::default()).unwrap();
        let SliceData::NonCartesian { data, trajectory } = s.data else {
            panic!("radial data")
        };
        assert_eq!((data.len(), trajectory.len()), (256, 256));
        assert_eq!(
            trajectory[0],
            [0.8, 0.8],
            "(k0, k1) = (traj[1], traj[0]) × 8"
        );
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
