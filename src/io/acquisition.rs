//! What a raw-data file says about its acquisition beyond the k-space samples: patient and study
//! attributes, the reconstructed field of view and the slice geometry. Readers fill what their format
//! carries; the DICOM writer uses it for the Patient, Study, Image Plane and MR Image modules.
//! Everything here may identify a patient: never log it.

/// Position and orientation of one slice in the patient coordinate system (LPS, millimetres), as in
/// DICOM's Image Plane module: `position` is the centre of the first transmitted pixel, `row_dir`
/// the direction along a row (increasing column index), `col_dir` along a column.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePlacement {
    pub position: [f64; 3],
    pub row_dir: [f64; 3],
    pub col_dir: [f64; 3],
}

/// Acquisition metadata read from an input file (MRD XML header, fastMRI `ismrmrd_header`) or given
/// on the command line. Every field is optional; absent values are left empty in the DICOM output
/// (type 2 attributes) or replaced by documented defaults.
#[derive(Clone, Debug, Default)]
pub struct AcquisitionInfo {
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    /// YYYYMMDD.
    pub patient_birth_date: Option<String>,
    /// M, F or O.
    pub patient_sex: Option<String>,
    pub study_instance_uid: Option<String>,
    pub study_id: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician: Option<String>,
    /// YYYYMMDD and HHMMSS.
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub series_description: Option<String>,
    /// Frame of reference shared by the slices, when the file names one.
    pub frame_of_reference_uid: Option<String>,
    pub manufacturer: Option<String>,
    pub model_name: Option<String>,
    pub institution: Option<String>,
    pub field_strength_t: Option<f64>,
    pub tr_ms: Option<f64>,
    pub te_ms: Option<f64>,
    pub flip_angle_deg: Option<f64>,
    /// Reconstructed field of view (rows, columns) in millimetres, and slice thickness.
    pub fov_mm: Option<[f64; 2]>,
    pub slice_thickness_mm: Option<f64>,
    /// Reconstruction matrix (rows, columns) when it is smaller than the k-space matrix (the
    /// client centre-crops the images to it).
    pub recon_matrix: Option<[usize; 2]>,
    /// The file stores images transposed relative to inferd's orientation (fastMRI: rows along the
    /// readout). `recon_matrix`, `fov_mm` and `slices` describe inferd's orientation (rows along
    /// phase encoding); a client giving images back in the file's orientation crops to
    /// `recon_matrix` first, then transposes (see [`AcquisitionInfo::to_file_orientation`]).
    pub transpose_output: bool,
    /// One placement per slice, when the file gives positions.
    pub slices: Vec<SlicePlacement>,
}

/// The centre `rows × cols` window of a `ny × nx` image, keeping the k-space centre's pixel
/// (ny/2, nx/2) at (rows/2, cols/2) — how a readout-oversampled reconstruction is cropped to its
/// reconstruction matrix.
pub fn centre_crop(image: &[f32], ny: usize, nx: usize, rows: usize, cols: usize) -> Vec<f32> {
    let (y0, x0) = (ny / 2 - rows / 2, nx / 2 - cols / 2);
    (0..rows)
        .flat_map(|y| image[(y0 + y) * nx + x0..][..cols].iter().copied())
        .collect()
}

impl AcquisitionInfo {
    /// Centre-crops a `[ny, nx]` image to `recon_matrix` (when given) and transposes it when the
    /// file's orientation is transposed; returns the image with its (rows, columns).
    pub fn to_file_orientation(
        &self,
        img: &[f32],
        ny: usize,
        nx: usize,
    ) -> (Vec<f32>, usize, usize) {
        let [ry, rx] = self
            .recon_matrix
            .map(|[r, c]| [r.min(ny), c.min(nx)])
            .unwrap_or([ny, nx]);
        let crop = centre_crop(img, ny, nx, ry, rx);
        if !self.transpose_output {
            return (crop, ry, rx);
        }
        let t = (0..rx)
            .flat_map(|x| (0..ry).map(move |y| (x, y)))
            .map(|(x, y)| crop[y * rx + x])
            .collect();
        (t, rx, ry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_the_centre() {
        let img: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(centre_crop(&img, 4, 4, 2, 2), vec![5.0, 6.0, 9.0, 10.0]);
    }

    #[test]
    fn crops_then_transposes() {
        let img: Vec<f32> = (0..6 * 4).map(|i| i as f32).collect(); // [6, 4]
        let mut info = AcquisitionInfo {
            recon_matrix: Some([2, 2]),
            ..Default::default()
        };
        assert_eq!(
            info.to_file_orientation(&img, 6, 4),
            (vec![9., 10., 13., 14.], 2, 2)
        );
        info.transpose_output = true;
        assert_eq!(
            info.to_file_orientation(&img, 6, 4),
            (vec![9., 13., 10., 14.], 2, 2)
        );
        info.recon_matrix = None;
        let (t, r, c) = info.to_file_orientation(&img, 6, 4);
        assert_eq!((r, c, t[1], t[6]), (4, 6, 4., 1.));
    }
}
