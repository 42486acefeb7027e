//! File formats: NumPy arrays, BART .cfl/.hdr, PNG.

pub mod cfl;
pub mod npy;
pub mod png;
