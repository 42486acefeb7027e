//! The DICOM part of a reconstruction request: [`pb::DicomOutput`] to and from the acquisition
//! metadata the DICOM writer uses, with every pass-through value checked.

use crate::api::pb;
use crate::error::Result;
use crate::invalid;
use crate::io::acquisition::{AcquisitionInfo, SlicePlacement};

/// A checked DICOM request.
#[derive(Clone, Debug, Default)]
pub struct DicomPlan {
    pub return_dicom: bool,
    pub store: bool,
    pub info: AcquisitionInfo,
    pub series_number: u32,
    /// Centre crop of the images before encoding; `None` keeps the k-space matrix.
    pub crop: Option<[usize; 2]>,
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn pos(v: f64) -> Option<f64> {
    (v != 0.0).then_some(v)
}

fn vec3(v: &[f64], what: &str, slice: usize) -> Result<[f64; 3]> {
    <[f64; 3]>::try_from(v).map_err(|_| {
        invalid!(
            "dicom.geometry.slices[{slice}].{what} has {} values, expected 3",
            v.len()
        )
    })
}

/// Checks the request's DICOM part against a volume of `slices` slices of `ny × nx`.
pub fn plan(d: &pb::DicomOutput, slices: usize, ny: usize, nx: usize) -> Result<DicomPlan> {
    let p = d.patient_study.clone().unwrap_or_default();
    let g = d.geometry.clone().unwrap_or_default();
    let a = d.acquisition.clone().unwrap_or_default();
    let placements = g
        .slices
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(SlicePlacement {
                position: vec3(&s.position, "position", i)?,
                row_dir: vec3(&s.row_direction, "row_direction", i)?,
                col_dir: vec3(&s.column_direction, "column_direction", i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if !placements.is_empty() && placements.len() != slices {
        return Err(invalid!(
            "dicom.geometry has {} slice placements for {slices} slices; give one per slice or none",
            placements.len()
        ));
    }
    let crop = match (g.rows as usize, g.columns as usize) {
        (0, 0) => None,
        (r, c) if r >= 1 && c >= 1 && r <= ny && c <= nx => Some([r, c]),
        (r, c) => {
            return Err(invalid!(
            "dicom.geometry crop {r} x {c} must be within the {ny} x {nx} matrix (0 x 0 = no crop)"
        ))
        }
    };
    let fov = match (g.fov_rows_mm, g.fov_columns_mm) {
        (r, c) if r == 0.0 && c == 0.0 => None,
        (r, c) => Some([r, c]),
    };
    let info = AcquisitionInfo {
        patient_name: opt(&p.patient_name),
        patient_id: opt(&p.patient_id),
        patient_birth_date: opt(&p.patient_birth_date),
        patient_sex: opt(&p.patient_sex),
        study_instance_uid: opt(&p.study_instance_uid),
        study_id: opt(&p.study_id),
        accession_number: opt(&p.accession_number),
        study_description: opt(&p.study_description),
        referring_physician: opt(&p.referring_physician_name),
        study_date: opt(&p.study_date),
        study_time: opt(&p.study_time),
        series_description: opt(&d.series_description),
        frame_of_reference_uid: opt(&a.frame_of_reference_uid),
        manufacturer: opt(&a.manufacturer),
        model_name: opt(&a.model_name),
        institution: opt(&a.institution),
        field_strength_t: pos(a.field_strength_t),
        tr_ms: pos(a.repetition_time_ms),
        te_ms: pos(a.echo_time_ms),
        flip_angle_deg: pos(a.flip_angle_deg),
        fov_mm: fov,
        slice_thickness_mm: pos(g.slice_thickness_mm),
        recon_matrix: crop,
        slices: placements,
        ..Default::default()
    };
    crate::pacs::dicom::check_info(&info).map_err(|e| invalid!("dicom: {e}"))?;
    Ok(DicomPlan {
        return_dicom: d.return_dicom,
        store: d.store,
        info,
        series_number: d.series_number.max(1),
        crop,
    })
}

/// The request message for acquisition metadata read from a file (the client side).
pub fn request(info: &AcquisitionInfo, return_dicom: bool, store: bool) -> pb::DicomOutput {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let [rows, columns] = info.recon_matrix.unwrap_or([0, 0]);
    let [fov_r, fov_c] = info.fov_mm.unwrap_or([0.0, 0.0]);
    pb::DicomOutput {
        return_dicom,
        store,
        patient_study: Some(pb::PatientStudy {
            patient_name: s(&info.patient_name),
            patient_id: s(&info.patient_id),
            patient_birth_date: s(&info.patient_birth_date),
            patient_sex: s(&info.patient_sex),
            study_instance_uid: s(&info.study_instance_uid),
            study_id: s(&info.study_id),
            accession_number: s(&info.accession_number),
            study_description: s(&info.study_description),
            referring_physician_name: s(&info.referring_physician),
            study_date: s(&info.study_date),
            study_time: s(&info.study_time),
        }),
        geometry: Some(pb::ImageGeometry {
            fov_rows_mm: fov_r,
            fov_columns_mm: fov_c,
            slice_thickness_mm: info.slice_thickness_mm.unwrap_or(0.0),
            slices: info
                .slices
                .iter()
                .map(|p| pb::SlicePlacement {
                    position: p.position.to_vec(),
                    row_direction: p.row_dir.to_vec(),
                    column_direction: p.col_dir.to_vec(),
                })
                .collect(),
            rows: rows as u32,
            columns: columns as u32,
        }),
        acquisition: Some(pb::AcquisitionParameters {
            manufacturer: s(&info.manufacturer),
            model_name: s(&info.model_name),
            institution: s(&info.institution),
            field_strength_t: info.field_strength_t.unwrap_or(0.0),
            repetition_time_ms: info.tr_ms.unwrap_or(0.0),
            echo_time_ms: info.te_ms.unwrap_or(0.0),
            flip_angle_deg: info.flip_angle_deg.unwrap_or(0.0),
            frame_of_reference_uid: s(&info.frame_of_reference_uid),
        }),
        series_number: 0,
        series_description: s(&info.series_description),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_plan_round_trip() {
        let info = AcquisitionInfo {
            patient_name: Some("Doe^Jane".into()),
            patient_id: Some("ID-1".into()),
            patient_sex: Some("F".into()),
            fov_mm: Some([220.0, 220.0]),
            slice_thickness_mm: Some(3.0),
            recon_matrix: Some([4, 6]),
            slices: vec![SlicePlacement {
                position: [1.0, 2.0, 3.0],
                row_dir: [1.0, 0.0, 0.0],
                col_dir: [0.0, 0.0, -1.0],
            }],
            ..Default::default()
        };
        let p = plan(&request(&info, true, false), 1, 8, 8).unwrap();
        assert!(p.return_dicom && !p.store);
        assert_eq!(p.crop, Some([4, 6]));
        assert_eq!(p.info.patient_name.as_deref(), Some("Doe^Jane"));
        assert_eq!(p.info.slices, info.slices);
        assert_eq!(p.series_number, 1);
        // one placement for two slices, crop beyond the matrix, a bad date
        assert!(plan(&request(&info, true, false), 2, 8, 8).is_err());
        assert!(plan(&request(&info, true, false), 1, 4, 4).is_err());
        let bad = AcquisitionInfo {
            study_date: Some("2026-11-30".into()),
            ..Default::default()
        };
        let e = plan(&request(&bad, true, false), 1, 8, 8).unwrap_err();
        assert!(e.to_string().contains("YYYYMMDD"), "{e}");
    }
}
