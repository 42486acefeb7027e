//! inferd: a gRPC inference service for MR reconstruction (ReconResNet with data consistency),
//! scheduled on CPU or CUDA through candle.
//!
//! Layout: `api/` wire types and validation, `serve/` the gRPC server (inferd and KServe v2 APIs,
//! health, auth, TLS, HTTP metrics), `sched/` admission, batching policy and device workers,
//! `metrics` Prometheus counters, `mri/` FFT, masks, coils, data consistency and metrics, `models/` the candle networks,
//! `io/` file formats, `pacs/` DICOM output and PACS delivery, `client/` command-line clients, `load/` the load generator, `train/` training of the shipped models, `bench` the `inferd bench` timings.

pub mod api;
pub mod bench;
pub mod client;
pub mod error;
pub mod io;
pub mod load;
pub mod metrics;
pub mod models;
pub mod mri;
pub mod pacs;
pub mod sched;
pub mod serve;
pub mod telemetry;
pub mod train;
