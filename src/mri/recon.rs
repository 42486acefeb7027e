//! The Cartesian reconstruction pipeline around the network, split so that a worker can batch the
//! network calls of several slices:
//!
//! 1. [`prepare`]: mask the measured k-space, zero-filled coil images, coil sensitivities from the ACS
//!    region (multi-coil), coil combination, and the network input: the combined magnitude scaled so its
//!    maximum is [`NET_INPUT_PEAK`] (the training convention; this makes the service scale-equivariant).
//! 2. the network maps that magnitude image to a de-aliased magnitude image.
//! 3. [`finish`]: undo the scaling, restore the zero-filled phase, expand to coils with the
//!    sensitivities, apply data consistency per coil in k-space, and combine (root-sum-of-squares
//!    magnitude, sensitivity-weighted complex image).

use super::{
    coils,
    dc::{self, DcMode},
    fft,
};
use num_complex::Complex32;

/// Peak value of the network input image (training and inference use the same convention).
pub const NET_INPUT_PEAK: f32 = 0.5;

/// One slice of Cartesian k-space `[coils, ny, nx]` with its `[ny, nx]` mask.
#[derive(Debug, Clone)]
pub struct CartesianSlice {
    pub kspace: Vec<Complex32>,
    pub mask: Vec<f32>,
    pub coils: usize,
    pub ny: usize,
    pub nx: usize,
}

impl CartesianSlice {
    /// The single-coil k-space of a `[ny, nx]` complex image (centred orthonormal FFT) under `mask`.
    pub fn single_coil(image: &[Complex32], mask: Vec<f32>, ny: usize, nx: usize) -> Self {
        let mut kspace = image.to_vec();
        fft::fft2c(&mut kspace, ny, nx);
        CartesianSlice {
            kspace,
            mask,
            coils: 1,
            ny,
            nx,
        }
    }
}

/// A slice ready for the network.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `[ny, nx]` network input (combined zero-filled magnitude / `scale`).
    pub net_input: Vec<f32>,
    scale: f32,
    measured: Vec<Complex32>,
    mask: Vec<f32>,
    sens: Option<Vec<Complex32>>,
    /// Unit-magnitude phase of the combined zero-filled image.
    phase: Vec<Complex32>,
    zero_filled: Vec<f32>,
    /// The measured data carry no signal (all-zero k-space): the reconstruction is zero.
    empty: bool,
    pub ny: usize,
    pub nx: usize,
}

#[derive(Debug, Clone)]
pub struct SliceOutput {
    pub magnitude: Vec<f32>,
    pub complex: Vec<Complex32>,
    pub zero_filled: Vec<f32>,
}

pub fn prepare(slice: CartesianSlice) -> Prepared {
    let CartesianSlice {
        mut kspace,
        mask,
        coils,
        ny,
        nx,
    } = slice;
    let plane = ny * nx;
    for coil in kspace.chunks_exact_mut(plane) {
        for (k, &m) in coil.iter_mut().zip(&mask) {
            if m <= 0.0 {
                *k = Complex32::default();
            }
        }
    }
    let mut images = kspace.clone();
    fft::ifft2c(&mut images, ny, nx);
    let zero_filled = coils::rss(&images, plane);
    let (combined, sens) = if coils == 1 {
        (images, None)
    } else {
        let (sens, _) = coils::estimate_sensitivities(&kspace, &mask, coils, ny, nx);
        (coils::combine(&images, &sens, plane), Some(sens))
    };
    let magnitude: Vec<f32> = combined.iter().map(|v| v.norm()).collect();
    let peak = magnitude.iter().cloned().fold(0.0f32, f32::max);
    let scale = if peak > 0.0 {
        peak / NET_INPUT_PEAK
    } else {
        1.0
    };
    let net_input = magnitude.iter().map(|v| v / scale).collect();
    let phase = combined
        .iter()
        .zip(&magnitude)
        .map(|(c, &m)| {
            if m > 0.0 {
                c / m
            } else {
                Complex32::new(1.0, 0.0)
            }
        })
        .collect();
    Prepared {
        net_input,
        scale,
        measured: kspace,
        mask,
        sens,
        phase,
        zero_filled,
        empty: peak == 0.0,
        ny,
        nx,
    }
}

impl Prepared {
    /// Intensity scale: network-scale values times `scale` are in the input's scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// Completes a slice from the network output (`[ny, nx]`, in the network's scale).
pub fn finish(p: Prepared, net_output: &[f32], mode: DcMode) -> SliceOutput {
    let predicted = predicted_image(&p, net_output);
    if mode == DcMode::Off {
        return SliceOutput {
            magnitude: predicted.iter().map(|v| v.norm()).collect(),
            complex: predicted,
            zero_filled: p.zero_filled,
        };
    }
    let mut coil_k = coil_kspace(&p, predicted, mode);
    fft::ifft2c(&mut coil_k, p.ny, p.nx);
    let plane = p.ny * p.nx;
    let magnitude = coils::rss(&coil_k, plane);
    let complex = match &p.sens {
        Some(sens) => coils::combine(&coil_k, sens, plane),
        None => coil_k,
    };
    SliceOutput {
        magnitude,
        complex,
        zero_filled: p.zero_filled,
    }
}

/// The network's magnitude back in the input scale with the zero-filled phase (zero for all-zero input).
fn predicted_image(p: &Prepared, net_output: &[f32]) -> Vec<Complex32> {
    if p.empty {
        return vec![Complex32::default(); p.ny * p.nx];
    }
    net_output
        .iter()
        .zip(&p.phase)
        .map(|(&m, ph)| ph * (m * p.scale))
        .collect()
}

/// Per-coil k-space of the prediction after data consistency.
fn coil_kspace(p: &Prepared, predicted: Vec<Complex32>, mode: DcMode) -> Vec<Complex32> {
    let mut coil_k = match &p.sens {
        Some(sens) => coils::expand(&predicted, sens, p.ny * p.nx),
        None => predicted,
    };
    fft::fft2c(&mut coil_k, p.ny, p.nx);
    dc::apply(&mut coil_k, &p.measured, &p.mask, mode);
    coil_k
}

/// The predicted k-space of every coil after data consistency (what [`finish`] transforms back), for
/// checking data consistency exactly.
pub fn consistent_kspace(p: &Prepared, net_output: &[f32], mode: DcMode) -> Vec<Complex32> {
    coil_kspace(p, predicted_image(p, net_output), mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mri::{masks, phantom};

    fn multicoil_slice(coils: usize, n: usize, accel: f32) -> (CartesianSlice, Vec<f32>) {
        let img = phantom::shepp_logan(n, n);
        let plane = n * n;
        let mut k = Vec::with_capacity(coils * plane);
        for c in 0..coils {
            let ang = 2.0 * std::f32::consts::PI * c as f32 / coils as f32;
            for i in 0..plane {
                let (y, x) = (
                    (i / n) as f32 / n as f32 - 0.5,
                    (i % n) as f32 / n as f32 - 0.5,
                );
                let d = (x - 0.5 * ang.cos()).powi(2) + (y - 0.5 * ang.sin()).powi(2);
                k.push(Complex32::from_polar((-d).exp() * img[i], ang));
            }
        }
        fft::fft2c(&mut k, n, n);
        let mask = masks::MaskSpec::new(masks::Pattern::VariableDensity1d, accel, 1)
            .generate(n, n)
            .unwrap();
        (
            CartesianSlice {
                kspace: k,
                mask,
                coils,
                ny: n,
                nx: n,
            },
            img,
        )
    }

    #[test]
    fn hard_dc_keeps_measured_samples_exactly() {
        let (slice, _) = multicoil_slice(4, 64, 4.0);
        let measured = slice.kspace.clone();
        let mask = slice.mask.clone();
        let p = prepare(slice);
        // any network output: here a blurred version of the input
        let out: Vec<f32> = p.net_input.iter().map(|v| v * 0.9 + 0.01).collect();
        let k = consistent_kspace(&p, &out, DcMode::Hard);
        let plane = 64 * 64;
        for c in 0..4 {
            for i in 0..plane {
                if mask[i] > 0.0 {
                    assert_eq!(k[c * plane + i], measured[c * plane + i]);
                }
            }
        }
        // soft DC moves sampled points towards the measurement by lambda / (1 + lambda)
        let ks = consistent_kspace(&p, &out, DcMode::Soft { lambda: 3.0 });
        let kn = consistent_kspace(&p, &out, DcMode::Off);
        for i in (0..plane).filter(|&i| mask[i] > 0.0).take(50) {
            let expect = (kn[i] + measured[i] * 3.0) / 4.0;
            assert!((ks[i] - expect).norm() <= 1e-5 * (1.0 + expect.norm()));
        }
    }

    #[test]
    fn identity_network_with_full_sampling_reproduces_the_image() {
        // Fully sampled: hard DC must return the exact coil-combined image whatever the network says.
        let (mut slice, img) = multicoil_slice(3, 32, 1.0);
        slice.mask = vec![1.0; 32 * 32];
        let p = prepare(slice);
        let zeros = vec![0.0f32; 32 * 32];
        let out = finish(p, &zeros, DcMode::Hard);
        // RSS of coil images = |img| * RSS of the coil profiles; compare shapes via correlation
        let num: f32 = out
            .magnitude
            .iter()
            .zip(&out.zero_filled)
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(
            num < 1e-3,
            "full sampling + hard DC equals zero-filled, diff {num}"
        );
        assert!(img.iter().cloned().fold(0.0, f32::max) > 0.0);
    }

    #[test]
    fn scale_equivariance() {
        let (slice, _) = multicoil_slice(1, 32, 4.0);
        let mut scaled = slice.clone();
        scaled.kspace.iter_mut().for_each(|k| *k *= 7.5);
        let (a, b) = (prepare(slice), prepare(scaled));
        let diff = a
            .net_input
            .iter()
            .zip(&b.net_input)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5);
        let peak = a.net_input.iter().cloned().fold(0.0, f32::max);
        assert!((peak - NET_INPUT_PEAK).abs() < 1e-6);
    }
}
