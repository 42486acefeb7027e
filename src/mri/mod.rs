//! MR physics: centred FFTs, the non-uniform FFT, radial trajectories and density compensation,
//! undersampling masks, coil handling, data consistency, quality metrics, synthetic images, and the
//! Cartesian and radial reconstruction pipelines around the network.

pub mod coils;
pub mod dc;
pub mod dcf;
pub mod fft;
pub mod guard;
pub mod masks;
pub mod metrics;
pub mod nufft;
pub mod phantom;
pub mod radial;
pub mod recon;
pub mod traj;
