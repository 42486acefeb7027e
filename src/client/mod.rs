//! Command-line clients of the service.

pub mod recon;
