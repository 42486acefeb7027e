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
