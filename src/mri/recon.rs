//! The reconstruction pipeline around the network, split so that a worker can batch the network
//! calls of several slices. Cartesian and radial sampling share it; only the transforms differ
//! (centred FFT with a mask, or gridding with the NUFFT and density compensation, [`super::radial`]).
//!
//! 1. [`prepare`]: zero-filled (Cartesian) or gridded (radial) coil images, coil sensitivities from the
//!    centre of k-space (multi-coil), coil combination, and the network input: the combined magnitude
//!    scaled so its maximum is [`NET_INPUT_PEAK`] (the training convention; this makes the service
//!    scale-equivariant).
//! 2. the network maps that magnitude image to a de-aliased magnitude image.
//! 3. [`finish`]: undo the scaling, restore the zero-filled phase, expand to coils with the
//!    sensitivities, apply data consistency per coil against the measurements, and combine
//!    (root-sum-of-squares magnitude, sensitivity-weighted complex image).

use super::{
    coils,
    dc::{self, DcMode},
    fft, guard,
    radial::{RadialOperator, RadialSlice},
};
use crate::error::Result;
use num_complex::Complex32;
use std::sync::Arc;

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

impl CartesianSlice {
    /// Whether the mask samples whole columns (phase encoding along W): the slice is then
    /// reconstructed transposed, in the orientation the networks are trained in (lines along rows).
    pub fn samples_columns(&self) -> bool {
        super::masks::line_axis(&self.mask, self.ny, self.nx) == super::masks::LineAxis::Columns
    }

    /// The slice of the transposed image (k-space and mask transposed; the centred 2-D FFT commutes
    /// with transposition).
    pub fn transposed(self) -> CartesianSlice {
        CartesianSlice {
            kspace: super::masks::transpose(&self.kspace, self.ny, self.nx),
            mask: super::masks::transpose(&self.mask, self.ny, self.nx),
            coils: self.coils,
            ny: self.nx,
            nx: self.ny,
        }
    }
}

impl SliceOutput {
    /// The output of a slice that was reconstructed transposed (`ny × nx` here), back in its own
    /// orientation.
    pub fn transposed(self, ny: usize, nx: usize) -> SliceOutput {
        use super::masks::transpose;
        SliceOutput {
            magnitude: transpose(&self.magnitude, ny, nx),
            complex: transpose(&self.complex, ny, nx),
            zero_filled: transpose(&self.zero_filled, ny, nx),
        }
    }
}

/// One slice of measured k-space, Cartesian or on a non-Cartesian trajectory.
#[derive(Debug, Clone)]
pub enum Slice {
    Cartesian(CartesianSlice),
    Radial(RadialSlice),
}

impl From<CartesianSlice> for Slice {
    fn from(s: CartesianSlice) -> Slice {
        Slice::Cartesian(s)
    }
}

impl From<RadialSlice> for Slice {
    fn from(s: RadialSlice) -> Slice {
        Slice::Radial(s)
    }
}

impl Slice {
    /// The share of k-space measured: sampled mask points (Cartesian), or samples per coil relative
    /// to the image's pixel count (non-Cartesian, capped at 1).
    pub fn sampled_fraction(&self) -> f32 {
        match self {
            Slice::Cartesian(s) => super::masks::sampled_fraction(&s.mask),
            Slice::Radial(s) => (s.op.samples() as f32 / (s.op.n * s.op.n) as f32).min(1.0),
        }
    }

    /// `(ny, nx)` of the reconstructed image.
    pub fn image_size(&self) -> (usize, usize) {
        match self {
            Slice::Cartesian(s) => (s.ny, s.nx),
            Slice::Radial(s) => (s.op.n, s.op.n),
        }
    }
}

/// The measurements a slice's data consistency needs.
#[derive(Debug, Clone)]
enum Measured {
    /// Masked k-space `[coils, ny, nx]` and the mask.
    Cartesian {
        kspace: Vec<Complex32>,
        mask: Vec<f32>,
    },
    /// Samples `[coils, samples]` on the operator's trajectory.
    Radial {
        samples: Vec<Complex32>,
        op: Arc<RadialOperator>,
    },
}

/// A slice ready for the network.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `[ny, nx]` network input (combined zero-filled magnitude / `scale`).
    pub net_input: Vec<f32>,
    scale: f32,
    measured: Measured,
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

/// Zero-filled (gridded) coil images, sensitivities and the network input of a slice. Fails only when
/// a radial slice's samples do not fit its trajectory (checked when requests are decoded).
pub fn prepare(slice: impl Into<Slice>) -> Result<Prepared> {
    let (images, sens, measured, ny, nx) = match slice.into() {
        Slice::Cartesian(CartesianSlice {
            mut kspace,
            mask,
            coils,
            ny,
            nx,
        }) => {
            for coil in kspace.chunks_exact_mut(ny * nx) {
                for (k, &m) in coil.iter_mut().zip(&mask) {
                    if m <= 0.0 {
                        *k = Complex32::default();
                    }
                }
            }
            let mut images = kspace.clone();
            fft::ifft2c(&mut images, ny, nx);
            let sens =
                (coils > 1).then(|| coils::estimate_sensitivities(&kspace, &mask, coils, ny, nx).0);
            (images, sens, Measured::Cartesian { kspace, mask }, ny, nx)
        }
        Slice::Radial(RadialSlice { samples, coils, op }) => {
            let images = op.grid(&samples)?;
            let sens = if coils > 1 {
                Some(op.sensitivities(&samples)?)
            } else {
                None
            };
            let n = op.n;
            (images, sens, Measured::Radial { samples, op }, n, n)
        }
    };
    let plane = ny * nx;
    let zero_filled = coils::rss(&images, plane);
    let combined = match &sens {
        Some(sens) => coils::combine(&images, sens, plane),
        None => images,
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
    Ok(Prepared {
        net_input,
        scale,
        measured,
        sens,
        phase,
        zero_filled,
        empty: peak == 0.0,
        ny,
        nx,
    })
}

impl Prepared {
    /// Intensity scale: network-scale values times `scale` are in the input's scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Whether the measured data carry no signal (the reconstruction is zero).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The combined zero-filled (gridded) complex image in the input's scale: the first iterate of the
    /// unrolled model.
    pub fn zero_filled_image(&self) -> Vec<Complex32> {
        self.net_input
            .iter()
            .zip(&self.phase)
            .map(|(&m, ph)| ph * (m * self.scale))
            .collect()
    }

    /// Whether the slice was measured on a non-Cartesian trajectory.
    pub fn is_radial(&self) -> bool {
        matches!(self.measured, Measured::Radial { .. })
    }

    /// Whether the slice has several coils (combined with estimated sensitivities).
    pub fn is_multicoil(&self) -> bool {
        self.sens.is_some()
    }
}

/// Completes a slice from the magnitude network's output (`[ny, nx]`, in the network's scale): the
/// zero-filled phase is restored, then [`finish_image`].
pub fn finish(p: Prepared, net_output: &[f32], mode: DcMode) -> Result<SliceOutput> {
    let predicted = predicted_image(&p, net_output);
    finish_image(p, predicted, mode, None)
}

/// Completes a slice from a predicted coil-combined complex image (in the input's scale): data
/// consistency per coil against the measurements, then root-sum-of-squares magnitude and the
/// sensitivity-weighted complex image. `gains` (Cartesian): the spectral guard's factors
/// ([`guard::band_gains`]) applied to every coil's k-space after its data consistency.
pub fn finish_image(
    p: Prepared,
    predicted: Vec<Complex32>,
    mode: DcMode,
    gains: Option<&[f32]>,
) -> Result<SliceOutput> {
    if mode == DcMode::Off {
        return Ok(SliceOutput {
            magnitude: predicted.iter().map(|v| v.norm()).collect(),
            complex: predicted,
            zero_filled: p.zero_filled,
        });
    }
    let coil_images = consistent_coil_images(&p, predicted, mode, gains)?;
    let plane = p.ny * p.nx;
    let magnitude = coils::rss(&coil_images, plane);
    let complex = match &p.sens {
        Some(sens) => coils::combine(&coil_images, sens, plane),
        None => coil_images,
    };
    Ok(SliceOutput {
        magnitude,
        complex,
        zero_filled: p.zero_filled,
    })
}

/// The coil-combined image after data consistency: one data-consistency step of the unrolled model
/// (in the input's scale).
pub fn consistent_image(
    p: &Prepared,
    predicted: Vec<Complex32>,
    mode: DcMode,
) -> Result<Vec<Complex32>> {
    if mode == DcMode::Off {
        return Ok(predicted);
    }
    let plane = p.ny * p.nx;
    Ok(match &p.sens {
        Some(sens) => coils::combine(
            &consistent_coil_images(p, predicted, mode, None)?,
            sens,
            plane,
        ),
        None => consistent_coil_images(p, predicted, mode, None)?,
    })
}

/// Every coil's image after data consistency of the predicted combined image (and the spectral
/// guard's `gains`, Cartesian only).
fn consistent_coil_images(
    p: &Prepared,
    predicted: Vec<Complex32>,
    mode: DcMode,
    gains: Option<&[f32]>,
) -> Result<Vec<Complex32>> {
    let plane = p.ny * p.nx;
    Ok(match &p.measured {
        Measured::Cartesian { .. } => {
            let mut k = coil_kspace(p, predicted, mode);
            if let Some(g) = gains {
                guard::apply(&mut k, g);
            }
            fft::ifft2c(&mut k, p.ny, p.nx);
            k
        }
        Measured::Radial { samples, op } => {
            let mut c = match &p.sens {
                Some(sens) => coils::expand(&predicted, sens, plane),
                None => predicted,
            };
            op.data_consistency(&mut c, samples, mode)?;
            c
        }
    })
}

/// What both guards need of the last pass's coil-combined image `x` (input scale), before its data
/// consistency:
/// - the misfit `‖A S x − y‖² / ‖y‖²` over the measured samples of every coil (`A` the masked FFT, or
///   the NUFFT weighted by the density compensation; `S` the sensitivities), 0 for an image that
///   explains the data exactly;
/// - for Cartesian slices, the spectral guard's gains ([`guard::band_gains`] over neighbourhoods of
///   `lines` measured lines).
pub fn guard_statistics(
    p: &Prepared,
    x: &[Complex32],
    lines: usize,
) -> Result<(f32, Option<Vec<f32>>)> {
    let plane = p.ny * p.nx;
    let coil_images = match &p.sens {
        Some(sens) => coils::expand(x, sens, plane),
        None => x.to_vec(),
    };
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut gains = None;
    match &p.measured {
        Measured::Cartesian { kspace, mask } => {
            let mut k = coil_images;
            fft::fft2c(&mut k, p.ny, p.nx);
            for (kc, yc) in k.chunks_exact(plane).zip(kspace.chunks_exact(plane)) {
                for ((k, y), &m) in kc.iter().zip(yc).zip(mask) {
                    if m > 0.0 {
                        num += (k - y).norm_sqr() as f64;
                        den += y.norm_sqr() as f64;
                    }
                }
            }
            if !p.empty {
                gains = guard::band_gains(&k, kspace, mask, p.ny, p.nx, lines);
            }
        }
        Measured::Radial { samples, op } => {
            let predicted = op.forward(&coil_images)?;
            let w = op.dcf.iter().cycle();
            for ((k, y), &w) in predicted.iter().zip(samples).zip(w) {
                num += (w * (k - y).norm_sqr()) as f64;
                den += (w * y.norm_sqr()) as f64;
            }
        }
    }
    let misfit = if den > 0.0 { (num / den) as f32 } else { 0.0 };
    Ok((misfit, gains))
}

impl SliceOutput {
    /// `w ·` this reconstruction `+ (1 − w) ·` the zero-filled (gridded) image `zero_filled` (the
    /// combined complex image in the input's scale): the guard's fall-back.
    pub fn blend_towards_zero_filled(mut self, w: f32, zero_filled: &[Complex32]) -> SliceOutput {
        if w >= 1.0 {
            return self;
        }
        for (c, z) in self.complex.iter_mut().zip(zero_filled) {
            *c = *c * w + z * (1.0 - w);
        }
        for (m, z) in self.magnitude.iter_mut().zip(&self.zero_filled) {
            *m = *m * w + z * (1.0 - w);
        }
        self
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

/// Per-coil Cartesian k-space after data consistency, from the predicted coil-combined image.
fn coil_kspace(p: &Prepared, predicted: Vec<Complex32>, mode: DcMode) -> Vec<Complex32> {
    let plane = p.ny * p.nx;
    let Measured::Cartesian { kspace, mask } = &p.measured else {
        unreachable!("Cartesian data consistency of a non-Cartesian slice")
    };
    let mut k = match (&p.sens, mode) {
        (Some(sens), DcMode::Sense { lambda, iterations }) => {
            let x = sense(
                &predicted, sens, kspace, mask, p.ny, p.nx, lambda, iterations,
            );
            let mut k = coils::expand(&x, sens, plane);
            fft::fft2c(&mut k, p.ny, p.nx);
            return k;
        }
        (Some(sens), _) => coils::expand(&predicted, sens, plane),
        (None, _) => predicted,
    };
    fft::fft2c(&mut k, p.ny, p.nx);
    dc::apply(&mut k, kspace, mask, mode);
    k
}

/// `(I + λ Σ_c S_cᴴ Fᴴ M F S_c) x = x₀ + λ Σ_c S_cᴴ Fᴴ M y_c` by conjugate gradients from `x₀` (the
/// operator is Hermitian positive definite): the SENSE least-squares problem with the network's
/// image `x₀` as prior, `kspace` `[coils, ny, nx]` (zero where not sampled), sensitivities normalised
/// to unit root-sum-of-squares.
#[allow(clippy::too_many_arguments)]
fn sense(
    x0: &[Complex32],
    sens: &[Complex32],
    kspace: &[Complex32],
    mask: &[f32],
    ny: usize,
    nx: usize,
    lambda: f32,
    iterations: usize,
) -> Vec<Complex32> {
    let plane = ny * nx;
    // Σ_c S_cᴴ Fᴴ M k_c for per-coil k-space `k` (consumed).
    let back = |mut k: Vec<Complex32>| -> Vec<Complex32> {
        for kc in k.chunks_exact_mut(plane) {
            for (v, &m) in kc.iter_mut().zip(mask) {
                if m <= 0.0 {
                    *v = Complex32::default();
                }
            }
        }
        fft::ifft2c(&mut k, ny, nx);
        coils::combine(&k, sens, plane)
    };
    let normal = |v: &[Complex32]| -> Vec<Complex32> {
        let mut k = coils::expand(v, sens, plane);
        fft::fft2c(&mut k, ny, nx);
        let b = back(k);
        v.iter().zip(b).map(|(v, b)| v + b * lambda).collect()
    };
    let rhs: Vec<Complex32> = x0
        .iter()
        .zip(back(kspace.to_vec()))
        .map(|(x, b)| x + b * lambda)
        .collect();
    let mut x = x0.to_vec();
    let r: Vec<Complex32> = rhs.iter().zip(normal(&x)).map(|(b, a)| b - a).collect();
    let stop = 1e-12 * dc::dot_re(&rhs, &rhs);
    let solved = dc::conjugate_gradient(&mut x, r, iterations, stop, |v| {
        Ok::<_, std::convert::Infallible>(normal(v))
    });
    let Ok(()) = solved;
    x
}

/// The predicted k-space of every coil after data consistency, for checking data consistency
/// exactly: the Cartesian grid `[coils, ny, nx]`, or the samples `[coils, samples]` of a radial slice.
pub fn consistent_kspace(p: &Prepared, net_output: &[f32], mode: DcMode) -> Result<Vec<Complex32>> {
    let predicted = predicted_image(p, net_output);
    match &p.measured {
        Measured::Cartesian { .. } => Ok(coil_kspace(p, predicted, mode)),
        Measured::Radial { op, .. } => {
            op.forward(&consistent_coil_images(p, predicted, mode, None)?)
        }
    }
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
    fn sense_dc_uses_the_coils_to_fill_unsampled_lines() {
        // 8 coils, 4x variable density; the "network" returns the zero-filled input unchanged, so
        // everything SENSE adds over hard DC comes from the coil sensitivities.
        let (slice, _) = multicoil_slice(8, 64, 4.0);
        let measured = slice.kspace.clone();
        // The reference: root-sum-of-squares of the fully sampled coil images.
        let mut full = slice.kspace.clone();
        fft::ifft2c(&mut full, 64, 64);
        let truth = coils::rss(&full, 64 * 64);
        let mask = slice.mask.clone();
        let p = prepare(slice).unwrap();
        let identity = p.net_input.clone();
        let error = |mode| {
            let out = finish(p.clone(), &identity, mode).unwrap();
            crate::mri::metrics::nmse(&truth, &out.magnitude)
        };
        let hard = error(DcMode::Hard);
        let sense = error(DcMode::Sense {
            lambda: 100.0,
            iterations: 30,
        });
        // Measured: hard 0.290, SENSE 0.222 (smooth synthetic coils, sensitivities from the
        // calibration lines).
        assert!(sense < 0.85 * hard, "SENSE {sense} vs hard {hard}");
        // With a large weight the sampled k-space is (nearly) the measured one.
        let k = consistent_kspace(
            &p,
            &identity,
            DcMode::Sense {
                lambda: 1e4,
                iterations: 50,
            },
        )
        .unwrap();
        let plane = 64 * 64;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for c in 0..8 {
            for i in (0..plane).filter(|&i| mask[i] > 0.0) {
                num += (k[c * plane + i] - measured[c * plane + i]).norm_sqr() as f64;
                den += measured[c * plane + i].norm_sqr() as f64;
            }
        }
        // The sensitivities are estimates, so the model cannot match every coil exactly.
        assert!(num / den < 0.05, "relative misfit {}", num / den);
    }

    #[test]
    fn spectral_guard_removes_invented_detail_and_keeps_a_faithful_prediction() {
        // An object with energy only in the 5 centre rows of k-space (a low-resolution series
        // interpolated to 64²), 8 coils, 4× variable density: the measured outer rows are zero.
        let n = 64;
        let plane = n * n;
        let (mut slice, _) = multicoil_slice(8, n, 4.0);
        for (i, k) in slice.kspace.iter_mut().enumerate() {
            if ((i % plane) / n).abs_diff(n / 2) > 2 {
                *k = Complex32::default();
            }
        }
        for y in n / 2 - 2..=n / 2 + 2 {
            assert!(slice.mask[y * n] > 0.0, "centre row {y} is measured");
        }
        let mut full = slice.kspace.clone();
        fft::ifft2c(&mut full, n, n);
        let truth = coils::rss(&full, plane);
        for (k, &m) in slice.kspace.iter_mut().zip(slice.mask.iter().cycle()) {
            *k *= m;
        }
        let p = prepare(slice).unwrap();
        let zero_filled = p.zero_filled_image();
        let peak = zero_filled.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
        // A "network" that invents detail: the zero-filled image plus texture at every frequency.
        let mut state = 12345u32;
        let mut noise = || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let invented: Vec<Complex32> = zero_filled
            .iter()
            .map(|z| z + Complex32::new(noise(), noise()) * (0.2 * peak))
            .collect();
        let (_, gains) = guard_statistics(&p, &invented, 8).unwrap();
        let gains = gains.expect("a Cartesian slice with unmeasured rows has gains");
        let error = |z: &[Complex32], g: Option<&[f32]>| {
            let out = finish_image(p.clone(), z.to_vec(), DcMode::Hard, g).unwrap();
            crate::mri::metrics::nmse(&truth, &out.magnitude)
        };
        let (zf, raw, guarded) = (
            error(&zero_filled, None),
            error(&invented, None),
            error(&invented, Some(&gains)),
        );
        println!("NMSE zero-filled {zf:.2e}, invented detail {raw:.2e}, guarded {guarded:.2e}");
        assert!(raw > 10.0 * zf, "the texture must hurt: {raw} vs {zf}");
        assert!(guarded < 0.1 * raw, "guarded {guarded} vs unguarded {raw}");
        assert!(
            guarded <= 1.5 * zf + 1e-6,
            "guarded {guarded} vs zero-filled {zf}"
        );
        // A network whose prediction explains the measured outer rows keeps it: the combined image
        // of a fully sampled object with detail at every frequency.
        let (slice, _) = multicoil_slice(8, n, 4.0);
        let mut full = slice.kspace.clone();
        fft::ifft2c(&mut full, n, n);
        let mask = slice.mask.clone();
        let p = prepare(slice).unwrap();
        let faithful = coils::combine(&full, p.sens.as_ref().unwrap(), plane);
        let (_, gains) = guard_statistics(&p, &faithful, 8).unwrap();
        let low = gains
            .unwrap()
            .into_iter()
            .zip(&mask)
            .filter(|(_, &m)| m <= 0.0)
            .map(|(g, _)| g)
            .fold(1.0f32, f32::min);
        println!("lowest gain of a faithful prediction {low:.3}");
        assert!(
            low > 0.9,
            "a faithful prediction keeps its gains: lowest {low}"
        );
    }

    #[test]
    fn hard_dc_keeps_measured_samples_exactly() {
        let (slice, _) = multicoil_slice(4, 64, 4.0);
        let measured = slice.kspace.clone();
        let mask = slice.mask.clone();
        let p = prepare(slice).unwrap();
        // any network output: here a blurred version of the input
        let out: Vec<f32> = p.net_input.iter().map(|v| v * 0.9 + 0.01).collect();
        let k = consistent_kspace(&p, &out, DcMode::Hard).unwrap();
        let plane = 64 * 64;
        for c in 0..4 {
            for i in 0..plane {
                if mask[i] > 0.0 {
                    assert_eq!(k[c * plane + i], measured[c * plane + i]);
                }
            }
        }
        // soft DC moves sampled points towards the measurement by lambda / (1 + lambda)
        let ks = consistent_kspace(&p, &out, DcMode::Soft { lambda: 3.0 }).unwrap();
        let kn = consistent_kspace(&p, &out, DcMode::Off).unwrap();
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
        let p = prepare(slice).unwrap();
        let zeros = vec![0.0f32; 32 * 32];
        let out = finish(p, &zeros, DcMode::Hard).unwrap();
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
        let (a, b) = (prepare(slice).unwrap(), prepare(scaled).unwrap());
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
