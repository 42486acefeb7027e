//! DICOM MR Image Storage objects (PS3.3 A.4) for reconstructed slices, one series per
//! reconstruction.
//!
//! Each slice becomes one classic MR Image (SOP class 1.2.840.10008.5.1.4.1.1.4), Explicit VR Little
//! Endian, with the Patient, General Study, General Series, Frame of Reference, General Equipment,
//! General Image, Image Plane, Image Pixel, MR Image, VOI LUT and SOP Common modules. Pixels are
//! 16-bit unsigned: the float magnitude is divided by a per-image slope so its maximum becomes 65535,
//! and the mapping back to the reconstruction's intensity scale is recorded in the Real World Value
//! Mapping Sequence (value = stored × slope). The MR IOD has no Modality LUT, so the window
//! (2nd–99.8th percentile of the stored values) is given in stored units and viewers display it as
//! is. Image Type is DERIVED\SECONDARY\OTHER\RECONSTRUCTION; the Derivation Description and the
//! Series Description name the model, the undersampling and the data consistency.
//!
//! Geometry comes from the acquisition (MRD header positions and field of view). Without it the
//! slices are recorded as axial, stacked along the patient's z axis by the slice thickness
//! (default 1 mm) and centred at the origin, with 1 mm pixels unless a field of view is known.

use crate::io::acquisition::{AcquisitionInfo, SlicePlacement};
use crate::pacs::uid::{check_uid, UidRoot};
use anyhow::{ensure, Context};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = uids::MR_IMAGE_STORAGE;
const IMPLEMENTATION_VERSION: &str = concat!("INFERD_", env!("CARGO_PKG_VERSION"));
/// Largest stored value.
const STORED_MAX: f64 = 65535.0;

/// One reconstruction's series: UIDs, patient and study, geometry and descriptions, fixed when the
/// reconstruction starts; [`Series::encode`] turns each slice into a Part-10 file.
#[derive(Clone, Debug)]
pub struct Series {
    pub info: AcquisitionInfo,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub series_number: u32,
    pub series_description: String,
    pub derivation: String,
    pub slices_total: usize,
    created_date: String,
    created_time: String,
    uid_root: UidRoot,
}

/// One encoded slice.
#[derive(Clone, Debug)]
pub struct EncodedImage {
    pub sop_instance_uid: String,
    /// Part-10 file: preamble, `DICM`, file meta group, data set.
    pub file: Vec<u8>,
}

/// What the descriptions say about how an image was made.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// Model name, e.g. `recon-unrolled`.
    pub model: String,
    /// Acceleration (1 / sampled fraction of k-space), when known.
    pub acceleration: Option<f32>,
    /// `cartesian` or `radial` (or another trajectory name).
    pub sampling: String,
    /// Data consistency rule, e.g. `hard`.
    pub data_consistency: String,
}

/// `(YYYYMMDD, HHMMSS)` in UTC.
fn now_dicom() -> (String, String) {
    let s = crate::load::report::utc(std::time::SystemTime::now());
    (s[0..10].replace('-', ""), s[11..19].replace(':', ""))
}

/// A decimal string (VR DS) of at most 16 characters.
fn ds(v: f64) -> String {
    for precision in (0..=10).rev() {
        let s = format!("{v:.precision$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    format!("{v:.6e}")
}

fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|&x| ds(x)).collect::<Vec<_>>().join("\\")
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Keeps what a DICOM string of this VR may hold: printable characters (PN/LO/SH/CS have no
/// backslash inside one value), cut to the VR's length.
fn clean(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '\\')
        .take(max_chars)
        .collect::<String>()
        .trim()
        .to_string()
}

fn is_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_time(s: &str) -> bool {
    (2..=13).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().take(6).all(|b| b.is_ascii_digit())
}

/// Checks the pass-through attributes a client or a file supplied, so that a bad value is refused
/// with a message instead of producing an invalid object.
pub fn check_info(info: &AcquisitionInfo) -> Result<(), String> {
    for (name, v) in [
        ("patient birth date", &info.patient_birth_date),
        ("study date", &info.study_date),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            if !is_date(v) {
                return Err(format!("{name} {v:?} is not a date YYYYMMDD"));
            }
        }
    }
    if let Some(t) = info.study_time.as_deref().filter(|v| !v.is_empty()) {
        if !is_time(t) {
            return Err(format!("study time {t:?} is not a time HHMMSS[.FFFFFF]"));
        }
    }
    if let Some(s) = info.patient_sex.as_deref().filter(|v| !v.is_empty()) {
        if !matches!(s, "M" | "F" | "O") {
            return Err(format!("patient sex {s:?}: expected M, F or O"));
        }
    }
    for (name, v) in [
        ("study instance UID", &info.study_instance_uid),
        ("frame of reference UID", &info.frame_of_reference_uid),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            check_uid(v).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    let positive = |name: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(format!("{name} {x} must be a positive finite number"))
        }
        _ => Ok(()),
    };
    positive("slice thickness (mm)", info.slice_thickness_mm)?;
    if let Some([r, c]) = info.fov_mm {
        positive("field of view rows (mm)", Some(r))?;
        positive("field of view columns (mm)", Some(c))?;
    }
    for p in &info.slices {
        let all = p.position.iter().chain(&p.row_dir).chain(&p.col_dir);
        if all.clone().any(|v| !v.is_finite()) {
            return Err("slice placement has a non-finite coordinate".into());
        }
        let (nr, nc) = (
            dot(p.row_dir, p.row_dir).sqrt(),
            dot(p.col_dir, p.col_dir).sqrt(),
        );
        if (nr - 1.0).abs() > 1e-3
            || (nc - 1.0).abs() > 1e-3
            || dot(p.row_dir, p.col_dir).abs() > 1e-3
        {
            return Err(
                "slice placement directions must be orthogonal unit vectors (row and column)"
                    .into(),
            );
        }
    }
    Ok(())
}

impl Series {
    /// A new series (new series and, unless the acquisition names them, study and frame of
    /// reference UIDs under `root`).
    pub fn new(
        info: AcquisitionInfo,
        root: &UidRoot,
        series_number: u32,
        provenance: &Provenance,
        slices_total: usize,
    ) -> anyhow::Result<Series> {
        check_info(&info).map_err(anyhow::Error::msg)?;
        if !info.slices.is_empty() {
            ensure!(
                info.slices.len() == slices_total,
                "{} slice placements for {slices_total} slices",
                info.slices.len()
            );
        }
        let given = |u: &Option<String>| u.clone().filter(|u| !u.is_empty());
        let study_uid = given(&info.study_instance_uid).unwrap_or_else(|| root.generate());
        let frame_of_reference_uid =
            given(&info.frame_of_reference_uid).unwrap_or_else(|| root.generate());
        let accel = provenance
            .acceleration
            .map(|r| format!(" R={r:.1}"))
            .unwrap_or_default();
        let sampling = if provenance.sampling.is_empty() {
            String::new()
        } else {
            format!(" {}", provenance.sampling)
        };
        let series_description = match info.series_description.as_deref() {
            Some(d) if !d.is_empty() => clean(&format!("{d} {}{accel}", provenance.model), 64),
            _ => clean(&format!("inferd {}{sampling}{accel}", provenance.model), 64),
        };
        let derivation = clean(
            &format!(
                "Deep-learning reconstruction by inferd {} (model {}) of{sampling} k-space undersampled{accel}, {} data consistency",
                env!("CARGO_PKG_VERSION"),
                provenance.model,
                if provenance.data_consistency.is_empty() { "hard" } else { &provenance.data_consistency },
            ),
            1024,
        );
        let (created_date, created_time) = now_dicom();
        Ok(Series {
            info,
            study_uid,
            series_uid: root.generate(),
            frame_of_reference_uid,
            series_number,
            series_description,
            derivation,
            slices_total,
            created_date,
            created_time,
            uid_root: root.clone(),
        })
    }

    /// Pixel spacing (between rows, between columns) in mm.
    fn pixel_spacing(&self, rows: usize, cols: usize) -> [f64; 2] {
        match self.info.fov_mm {
            Some([fr, fc]) => [fr / rows as f64, fc / cols as f64],
            None => [1.0, 1.0],
        }
    }

    fn thickness(&self) -> f64 {
        self.info.slice_thickness_mm.unwrap_or(1.0)
    }

    /// Placement of slice `index`: from the acquisition, or axial slices whose centre pixel
    /// (rows/2, cols/2) — where the centred FFT puts the field of view's centre — is the origin.
    fn placement(&self, index: usize, rows: usize, cols: usize) -> SlicePlacement {
        if let Some(p) = self.info.slices.get(index) {
            return p.clone();
        }
        let [sr, sc] = self.pixel_spacing(rows, cols);
        let z = (index as f64 - (self.slices_total as f64 - 1.0) / 2.0) * self.thickness();
        SlicePlacement {
            position: [-((cols / 2) as f64) * sc, -((rows / 2) as f64) * sr, z],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
        }
    }

    /// Encodes slice `index` (0-based) of `rows × cols` magnitudes (finite, ≥ 0) as a Part-10 file.
    pub fn encode(
        &self,
        index: usize,
        image: &[f32],
        rows: usize,
        cols: usize,
    ) -> anyhow::Result<EncodedImage> {
        self.encode_placed(index, image, rows, cols, None)
    }

    /// [`Series::encode`] with the slice's plane given (a series whose slices arrive one by one,
    /// such as a scan streamed over MRD) instead of taken from the series' information.
    pub fn encode_placed(
        &self,
        index: usize,
        image: &[f32],
        rows: usize,
        cols: usize,
        plane: Option<SlicePlacement>,
    ) -> anyhow::Result<EncodedImage> {
        ensure!(
            image.len() == rows * cols && rows > 0 && cols > 0,
            "image has {} pixels, expected {rows} x {cols}",
            image.len()
        );
        ensure!(
            rows <= 65535 && cols <= 65535,
            "a DICOM image has at most 65535 rows and columns"
        );
        let max = image
            .iter()
            .map(|&v| if v.is_finite() { v.max(0.0) } else { 0.0 })
            .fold(0.0f32, f32::max) as f64;
        let slope = if max > 0.0 { max / STORED_MAX } else { 1.0 };
        let pixels: Vec<u16> = image
            .iter()
            .map(|&v| {
                let v = if v.is_finite() {
                    v.max(0.0) as f64
                } else {
                    0.0
                };
                (v / slope).round().clamp(0.0, STORED_MAX) as u16
            })
            .collect();
        let (center, width) = window(&pixels);
        let sop_uid = self.uid_root.generate();
        let info = &self.info;
        let text = |v: &Option<String>, n: usize| clean(v.as_deref().unwrap_or(""), n);
        let placement = plane.unwrap_or_else(|| self.placement(index, rows, cols));
        let spacing = self.pixel_spacing(rows, cols);
        let normal = cross(placement.row_dir, placement.col_dir);
        let (content_date, content_time) = now_dicom();

        let mut o = InMemDicomObject::new_empty();
        let mut s = |tag: Tag, vr: VR, v: String| {
            o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        // SOP Common
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into());
        s(tags::SOP_CLASS_UID, VR::UI, MR_IMAGE_STORAGE.into());
        s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone());
        s(tags::INSTANCE_CREATION_DATE, VR::DA, content_date.clone());
        s(tags::INSTANCE_CREATION_TIME, VR::TM, content_time.clone());
        s(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000".into());
        // Patient
        s(tags::PATIENT_NAME, VR::PN, text(&info.patient_name, 64));
        s(tags::PATIENT_ID, VR::LO, text(&info.patient_id, 64));
        s(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            text(&info.patient_birth_date, 8),
        );
        s(tags::PATIENT_SEX, VR::CS, text(&info.patient_sex, 1));
        // General Study
        s(tags::STUDY_INSTANCE_UID, VR::UI, self.study_uid.clone());
        let study_date = info
            .study_date
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.created_date.clone());
        let study_time = info
            .study_time
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.created_time.clone());
        s(tags::STUDY_DATE, VR::DA, study_date);
        s(tags::STUDY_TIME, VR::TM, study_time);
        s(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            text(&info.referring_physician, 64),
        );
        s(tags::STUDY_ID, VR::SH, text(&info.study_id, 16));
        s(
            tags::ACCESSION_NUMBER,
            VR::SH,
            text(&info.accession_number, 16),
        );
        if let Some(d) = info.study_description.as_deref().filter(|d| !d.is_empty()) {
            s(tags::STUDY_DESCRIPTION, VR::LO, clean(d, 64));
        }
        // General Series
        s(tags::MODALITY, VR::CS, "MR".into());
        s(tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid.clone());
        s(tags::SERIES_NUMBER, VR::IS, self.series_number.to_string());
        s(tags::SERIES_DATE, VR::DA, self.created_date.clone());
        s(tags::SERIES_TIME, VR::TM, self.created_time.clone());
        s(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            self.series_description.clone(),
        );
        s(tags::PATIENT_POSITION, VR::CS, String::new());
        // Type 2C (paired body parts); unknown here, so present and empty.
        s(tags::LATERALITY, VR::CS, String::new());
        // Frame of Reference
        s(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            self.frame_of_reference_uid.clone(),
        );
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, String::new());
        // General Equipment (the scanner's, when the acquisition names it) and the software
        s(tags::MANUFACTURER, VR::LO, text(&info.manufacturer, 64));
        if let Some(m) = info.model_name.as_deref().filter(|m| !m.is_empty()) {
            s(tags::MANUFACTURER_MODEL_NAME, VR::LO, clean(m, 64));
        }
        if let Some(m) = info.institution.as_deref().filter(|m| !m.is_empty()) {
            s(tags::INSTITUTION_NAME, VR::LO, clean(m, 64));
        }
        s(
            tags::SOFTWARE_VERSIONS,
            VR::LO,
            format!("inferd {}", env!("CARGO_PKG_VERSION")),
        );
        // General Image
        s(tags::INSTANCE_NUMBER, VR::IS, (index + 1).to_string());
        s(tags::CONTENT_DATE, VR::DA, content_date);
        s(tags::CONTENT_TIME, VR::TM, content_time);
        s(
            tags::IMAGE_TYPE,
            VR::CS,
            "DERIVED\\SECONDARY\\OTHER\\RECONSTRUCTION".into(),
        );
        s(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            self.derivation.clone(),
        );
        s(tags::BURNED_IN_ANNOTATION, VR::CS, "NO".into());
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00".into());
        // Image Plane
        s(tags::PIXEL_SPACING, VR::DS, ds_multi(&spacing));
        let orientation = [placement.row_dir, placement.col_dir].concat();
        s(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds_multi(&orientation),
        );
        s(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            ds_multi(&placement.position),
        );
        s(tags::SLICE_THICKNESS, VR::DS, ds(self.thickness()));
        s(
            tags::SLICE_LOCATION,
            VR::DS,
            ds(dot(placement.position, normal)),
        );
        // MR Image
        s(tags::SCANNING_SEQUENCE, VR::CS, "RM".into());
        s(tags::SEQUENCE_VARIANT, VR::CS, "NONE".into());
        s(tags::SCAN_OPTIONS, VR::CS, String::new());
        s(tags::MR_ACQUISITION_TYPE, VR::CS, "2D".into());
        let opt = |v: Option<f64>| v.filter(|x| x.is_finite()).map(ds).unwrap_or_default();
        s(tags::REPETITION_TIME, VR::DS, opt(info.tr_ms));
        s(tags::ECHO_TIME, VR::DS, opt(info.te_ms));
        s(tags::ECHO_TRAIN_LENGTH, VR::IS, String::new());
        if let Some(f) = info.field_strength_t.filter(|f| f.is_finite() && *f > 0.0) {
            s(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, ds(f));
        }
        if let Some(f) = info.flip_angle_deg.filter(|f| f.is_finite()) {
            s(tags::FLIP_ANGLE, VR::DS, ds(f));
        }
        // Image Pixel
        s(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        // VOI LUT
        s(tags::WINDOW_CENTER, VR::DS, ds(center));
        s(tags::WINDOW_WIDTH, VR::DS, ds(width));
        s(
            tags::WINDOW_CENTER_WIDTH_EXPLANATION,
            VR::LO,
            "2nd to 99.8th percentile".into(),
        );
        let us = |v: u16| PrimitiveValue::from(v);
        o.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)));
        o.put(DataElement::new(tags::ROWS, VR::US, us(rows as u16)));
        o.put(DataElement::new(tags::COLUMNS, VR::US, us(cols as u16)));
        o.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(16)));
        o.put(DataElement::new(tags::BITS_STORED, VR::US, us(16)));
        o.put(DataElement::new(tags::HIGH_BIT, VR::US, us(15)));
        o.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)));
        // Real World Value Mapping: stored value × slope = reconstruction intensity.
        let mut rwv = InMemDicomObject::new_empty();
        rwv.put(DataElement::new(
            tags::REAL_WORLD_VALUE_FIRST_VALUE_MAPPED,
            VR::US,
            us(0),
        ));
        rwv.put(DataElement::new(
            tags::REAL_WORLD_VALUE_LAST_VALUE_MAPPED,
            VR::US,
            us(STORED_MAX as u16),
        ));
        rwv.put(DataElement::new(
            tags::REAL_WORLD_VALUE_INTERCEPT,
            VR::FD,
            PrimitiveValue::from(0.0f64),
        ));
        rwv.put(DataElement::new(
            tags::REAL_WORLD_VALUE_SLOPE,
            VR::FD,
            PrimitiveValue::from(slope),
        ));
        rwv.put_str(tags::LUT_EXPLANATION, VR::LO, "reconstructed magnitude");
        rwv.put_str(tags::LUT_LABEL, VR::SH, "MAGNITUDE");
        let mut unit = InMemDicomObject::new_empty();
        unit.put_str(tags::CODE_VALUE, VR::SH, "1");
        unit.put_str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "UCUM");
        unit.put_str(tags::CODE_MEANING, VR::LO, "no units");
        rwv.put(DataElement::new(
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![unit]),
        ));
        o.put(DataElement::new(
            tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![rwv]),
        ));
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));

        let file = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .implementation_class_uid(format!("{}.1", IMPLEMENTATION_ROOT))
                    .implementation_version_name(IMPLEMENTATION_VERSION),
            )
            .context("building the DICOM file meta group")?;
        let mut bytes = Vec::with_capacity(rows * cols * 2 + 4096);
        file.write_all(&mut bytes)
            .context("encoding the DICOM object")?;
        Ok(EncodedImage {
            sop_instance_uid: sop_uid,
            file: bytes,
        })
    }
}

/// Implementation Class UID root of inferd's file meta groups (a UUID-derived UID, fixed).
const IMPLEMENTATION_ROOT: &str = "2.25.160936415326108741373584113405539731275";

/// Window centre and width covering the 2nd to 99.8th percentile of the stored values (the whole
/// range when that is empty).
fn window(pixels: &[u16]) -> (f64, f64) {
    let mut hist = vec![0usize; 65536];
    for &p in pixels {
        hist[p as usize] += 1;
    }
    let n = pixels.len();
    let at = |q: f64| {
        let target = ((n as f64) * q).ceil().max(1.0) as usize;
        let mut acc = 0;
        for (v, &c) in hist.iter().enumerate() {
            acc += c;
            if acc >= target {
                return v as f64;
            }
        }
        65535.0
    };
    let (lo, hi) = (at(0.02), at(0.998));
    if hi > lo {
        ((lo + hi) / 2.0, hi - lo)
    } else {
        (STORED_MAX / 2.0, STORED_MAX + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1,
            1.0 / 3.0,
            -123456.789012345,
            1e-9,
            2.5e12,
            0.9765625,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{v}: {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= 1e-6 * v.abs().max(1e-3), "{v}: {s}");
        }
        assert_eq!(ds(1.0), "1");
        assert_eq!(ds(-0.0), "0");
    }

    #[test]
    fn pixels_round_trip_through_the_recorded_slope() {
        let info = AcquisitionInfo::default();
        let series = Series::new(info, &UidRoot::default(), 7, &Provenance::default(), 2).unwrap();
        let image: Vec<f32> = (0..64 * 48).map(|i| (i % 97) as f32 * 0.013).collect();
        let enc = series.encode(1, &image, 64, 48).unwrap();
        let obj = dicom_object::from_reader(&enc.file[128..]).unwrap();
        let seq = obj
            .element(tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE)
            .unwrap();
        let item = &seq.items().unwrap()[0];
        let slope = item
            .element(tags::REAL_WORLD_VALUE_SLOPE)
            .unwrap()
            .to_float64()
            .unwrap();
        let stored: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .uint16_slice()
            .unwrap()
            .to_vec();
        let max = image.iter().cloned().fold(0.0f32, f32::max);
        for (a, b) in image.iter().zip(&stored) {
            assert!((*b as f64 * slope - *a as f64).abs() <= slope / 2.0 + 1e-9 * max as f64);
        }
        assert_eq!(
            obj.element(tags::INSTANCE_NUMBER)
                .unwrap()
                .to_str()
                .unwrap(),
            "2"
        );
        assert_eq!(
            obj.element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            enc.sop_instance_uid
        );
    }

    #[test]
    fn bad_pass_through_values_are_refused() {
        let bad = [
            AcquisitionInfo {
                patient_birth_date: Some("1990-01-01".into()),
                ..Default::default()
            },
            AcquisitionInfo {
                patient_sex: Some("male".into()),
                ..Default::default()
            },
            AcquisitionInfo {
                study_instance_uid: Some("1.2.abc".into()),
                ..Default::default()
            },
            AcquisitionInfo {
                slice_thickness_mm: Some(-1.0),
                ..Default::default()
            },
        ];
        for info in bad {
            assert!(check_info(&info).is_err(), "{info:?}");
        }
    }

    #[test]
    fn default_geometry_stacks_axial_slices() {
        let info = AcquisitionInfo {
            fov_mm: Some([200.0, 100.0]),
            slice_thickness_mm: Some(5.0),
            ..Default::default()
        };
        let s = Series::new(info, &UidRoot::default(), 1, &Provenance::default(), 3).unwrap();
        assert_eq!(s.pixel_spacing(100, 50), [2.0, 2.0]);
        let p0 = s.placement(0, 100, 50);
        let p2 = s.placement(2, 100, 50);
        assert_eq!(p0.position[2], -5.0);
        assert_eq!(p2.position[2], 5.0);
        assert_eq!(p0.position[0], -50.0);
        assert_eq!(p0.position[1], -100.0);
    }
}
