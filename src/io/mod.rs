//! File formats: NumPy arrays, BART .cfl/.hdr, PNG, DICOM images (read).

pub mod cfl;
pub mod dicom;
pub mod npy;
pub mod png;
