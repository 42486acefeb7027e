//! File formats: NumPy arrays (.npy, .npz), BART .cfl/.hdr, PNG, DICOM images (read), raw MR data
//! in HDF5 (ISMRMRD / MRD and fastMRI), and the acquisition metadata raw-data readers pass on.

pub mod acquisition;
pub mod cfl;
pub mod dicom;
pub mod fastmri;
pub mod h5;
pub mod kspace;
pub mod mrd;
pub mod npy;
pub mod npz;
pub mod png;

/// Little-endian float32 values of `bytes` (a trailing partial value is ignored).
pub fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Interleaved little-endian (re, im) float32 pairs of `bytes` as complex values.
pub fn le_c64s(bytes: &[u8]) -> Vec<num_complex::Complex32> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            num_complex::Complex32::new(
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect()
}
