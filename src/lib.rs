//! inferd: a gRPC inference service for MR reconstruction (ReconResNet with data consistency),
//! scheduled on CPU or CUDA through candle.
//!
//! Layout: `api/` wire types and validation, `serve/` the gRPC server, `sched/` queue and device
//! worker, `mri/` FFT, masks, coils, data consistency and metrics, `models/` the candle networks,
//! `io/` file formats, `client/` command-line clients, `train/` training of the shipped models.

pub mod api;
pub mod client;
pub mod error;
pub mod io;
pub mod models;
pub mod mri;
pub mod sched;
pub mod serve;
pub mod train;
