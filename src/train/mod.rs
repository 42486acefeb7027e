//! Training of the shipped models (candle autograd on the CPU or a CUDA device).

pub mod bridge;
pub mod data;
pub mod recon;
