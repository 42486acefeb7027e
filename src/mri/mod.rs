//! MR physics: centred FFTs, undersampling masks, coil handling, data consistency, quality metrics,
//! synthetic images, and the reconstruction pipeline around the network.

pub mod coils;
pub mod dc;
pub mod fft;
pub mod masks;
pub mod metrics;
pub mod phantom;
pub mod recon;
