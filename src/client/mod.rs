//! Command-line clients of the service.

pub mod health;
pub mod recon;
