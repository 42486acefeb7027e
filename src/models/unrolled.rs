//! The unrolled ReconResNet: `K` passes of one complex ReconResNet denoiser `D` (two channels, real and
//! imaginary part), each followed by data consistency with its own learned weight λ_k (MoDL-style
//! physics-guided unrolling; PAPERS.md §4):
//!
//! ```text
//! x₀ = zero-filled (gridded) coil-combined image
//! z_k = x_{k−1} + s · D(x_{k−1} / s)              s: x₀'s peak magnitude / 0.5 (the network input convention)
//! x_k = argmin_x ‖x − z_k‖² + λ_k ‖A x − y‖²       k < K
//! output = the request's data consistency of z_K (by default the model's own: hard for Cartesian
//!          sampling, the trained CG step with λ_K for non-Cartesian)
//! ```
//!
//! The data-consistency step of pass `k` is the exact per-point rule `(F z + λ y)/(1 + λ)` for
//! single-coil Cartesian data, SENSE by conjugate gradients for multi-coil Cartesian data, and the
//! density-weighted least squares by conjugate gradients for non-Cartesian data
//! ([`crate::mri::dc::DcMode`]). The reference implementation and trainer are
//! `tests/reference/unrolled.py` and `scripts/train_unrolled.py`.
//!
//! Two guards keep a slice from coming out worse than its zero-filled (gridded) image: the spectral
//! guard of Cartesian slices ([`crate::mri::guard`]) scales the predicted, unmeasured k-space line by
//! line by how well the last pass predicts the nearest measured lines, and the misfit guard
//! ([`Unrolled::guard_weight`]) blends a network that contradicts its measurements towards the
//! zero-filled image.
//!
//! Weights: the denoiser under the ReconResNet names (`model.*`, two channels), `unrolled.lambda` `[K]`
//! and `unrolled.cg_iterations` `[1]`; optionally `unrolled.guard_misfit` `[1]` and
//! `unrolled.guard_lines` `[1]` (the guards' settings).

use crate::mri::dc::DcMode;
use crate::mri::guard;
use candle_core::Tensor;
use std::collections::HashMap;

/// The tensor whose presence makes a ReconResNet weights file an unrolled model.
pub const LAMBDA_TENSOR: &str = "unrolled.lambda";
/// Conjugate-gradient iterations of each data-consistency step.
pub const CG_ITERATIONS_TENSOR: &str = "unrolled.cg_iterations";
/// The guard's threshold on the final pass's misfit to the measured data.
pub const GUARD_TENSOR: &str = "unrolled.guard_misfit";
/// The threshold when a file carries none: a misfit of half the measured signal's energy.
pub const DEFAULT_GUARD_MISFIT: f32 = 0.5;
/// The spectral guard's neighbourhood in measured lines ([`crate::mri::guard`]); 0 turns it off.
pub const GUARD_LINES_TENSOR: &str = "unrolled.guard_lines";
/// At most this many passes (a malformed file cannot make a request loop for long).
pub const MAX_PASSES: usize = 32;

/// The data consistency between the passes of an unrolled model.
#[derive(Debug, Clone, PartialEq)]
pub struct Unrolled {
    /// λ_k of every pass; the last is the weight of the final step for non-Cartesian sampling.
    pub lambdas: Vec<f32>,
    pub cg_iterations: usize,
    /// The guard's threshold τ on the final pass's relative misfit to the measurements
    /// ([`crate::mri::recon::guard_statistics`]); see [`Unrolled::guard_weight`].
    pub guard_misfit: f32,
    /// The spectral guard's neighbourhood of Cartesian slices in measured lines
    /// ([`crate::mri::guard`]; 0: off).
    pub guard_lines: usize,
}

impl Unrolled {
    /// Reads (and removes) the unrolled model's tensors; `None` for a single-pass network.
    pub fn take_from(tensors: &mut HashMap<String, Tensor>) -> Result<Option<Unrolled>, String> {
        if !tensors.contains_key(LAMBDA_TENSOR) {
            return Ok(None);
        }
        let lambdas = take_values(tensors, LAMBDA_TENSOR)?.unwrap_or_default();
        if lambdas.is_empty() || lambdas.len() > MAX_PASSES {
            return Err(format!(
                "{LAMBDA_TENSOR} has {} entries, expected 1 to {MAX_PASSES} (one per pass)",
                lambdas.len()
            ));
        }
        if let Some(bad) = lambdas.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(format!(
                "{LAMBDA_TENSOR} holds {bad}; every λ must be finite and > 0"
            ));
        }
        let first = |v: Option<Vec<f32>>, default: f32| {
            v.and_then(|v| v.first().copied()).unwrap_or(default)
        };
        let cg = first(take_values(tensors, CG_ITERATIONS_TENSOR)?, 5.0);
        if !(1.0..=50.0).contains(&cg) || cg.fract() != 0.0 {
            return Err(format!(
                "{CG_ITERATIONS_TENSOR} is {cg}, expected a whole number from 1 to 50"
            ));
        }
        let guard = first(take_values(tensors, GUARD_TENSOR)?, DEFAULT_GUARD_MISFIT);
        if !(guard.is_finite() && guard > 0.0) {
            return Err(format!(
                "{GUARD_TENSOR} is {guard}, expected a finite number > 0"
            ));
        }
        let lines = first(
            take_values(tensors, GUARD_LINES_TENSOR)?,
            guard::DEFAULT_LINES as f32,
        );
        if !(0.0..=guard::MAX_LINES as f32).contains(&lines) || lines.fract() != 0.0 {
            return Err(format!(
                "{GUARD_LINES_TENSOR} is {lines}, expected a whole number from 0 to {}",
                guard::MAX_LINES
            ));
        }
        Ok(Some(Unrolled {
            lambdas,
            cg_iterations: cg as usize,
            guard_misfit: guard,
            guard_lines: lines as usize,
        }))
    }

    /// The guard: how much of the network's image a slice keeps, from the relative misfit `m` of the
    /// final pass's image to the measured data. A model that explains the measurements (m ≤ τ, every
    /// image of the training and validation distributions) keeps all of it; beyond τ the output is
    /// blended towards the zero-filled (gridded) image with weight τ/m on the network's image, so a
    /// network that contradicts the data it was given (inputs far from anything it learned) falls
    /// back to the plain reconstruction instead of inventing an image.
    pub fn guard_weight(&self, misfit: f32) -> f32 {
        if misfit.is_finite() && misfit <= self.guard_misfit {
            1.0
        } else if misfit.is_finite() {
            self.guard_misfit / misfit
        } else {
            0.0
        }
    }

    pub fn passes(&self) -> usize {
        self.lambdas.len()
    }

    /// The data consistency after pass `k` (all but the last): the exact soft rule for single-coil
    /// Cartesian data, SENSE for multi-coil Cartesian data, CG for non-Cartesian data.
    pub fn step(&self, k: usize, radial: bool, multicoil: bool) -> DcMode {
        let (lambda, iterations) = (self.lambdas[k], self.cg_iterations);
        match (radial, multicoil) {
            (true, _) => DcMode::Cg { lambda, iterations },
            (false, true) => DcMode::Sense { lambda, iterations },
            (false, false) => DcMode::Soft { lambda },
        }
    }

    /// The model's own final data consistency for this sampling (`None`: the plain default, hard).
    pub fn trained_final(&self, radial: bool) -> Option<DcMode> {
        radial.then(|| DcMode::Cg {
            lambda: self.lambdas[self.passes() - 1],
            iterations: self.cg_iterations,
        })
    }
}

/// Removes tensor `name` from the state dict and returns its values (`None` when absent).
fn take_values(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
) -> Result<Option<Vec<f32>>, String> {
    tensors
        .remove(name)
        .map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()))
        .transpose()
        .map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensors(lambda: &[f32], cg: Option<f32>) -> HashMap<String, Tensor> {
        let mut t = HashMap::new();
        t.insert(
            LAMBDA_TENSOR.to_string(),
            Tensor::new(lambda, &Device::Cpu).unwrap(),
        );
        if let Some(c) = cg {
            t.insert(
                CG_ITERATIONS_TENSOR.to_string(),
                Tensor::new(&[c], &Device::Cpu).unwrap(),
            );
        }
        t
    }

    #[test]
    fn reads_passes_and_rejects_bad_files() {
        let mut t = tensors(&[0.5, 2.0, 3.0], Some(4.0));
        let u = Unrolled::take_from(&mut t).unwrap().unwrap();
        assert!(t.is_empty(), "the tensors are taken out of the state dict");
        assert_eq!(u.passes(), 3);
        assert_eq!(u.step(1, false, false), DcMode::Soft { lambda: 2.0 });
        assert_eq!(
            u.step(0, true, true),
            DcMode::Cg {
                lambda: 0.5,
                iterations: 4
            }
        );
        assert_eq!(
            u.step(0, false, true),
            DcMode::Sense {
                lambda: 0.5,
                iterations: 4
            }
        );
        assert_eq!(u.trained_final(false), None);
        assert_eq!(
            u.trained_final(true),
            Some(DcMode::Cg {
                lambda: 3.0,
                iterations: 4
            })
        );
        assert!(Unrolled::take_from(&mut HashMap::new()).unwrap().is_none());
        assert_eq!(u.guard_misfit, DEFAULT_GUARD_MISFIT);
        assert_eq!(u.guard_weight(0.1), 1.0);
        assert_eq!(u.guard_weight(2.0), 0.25);
        assert_eq!(u.guard_weight(f32::NAN), 0.0);
        assert_eq!(u.guard_lines, guard::DEFAULT_LINES);
        let with_lines = |b: f32| {
            let mut t = tensors(&[1.0], None);
            t.insert(
                GUARD_LINES_TENSOR.to_string(),
                Tensor::new(&[b], &Device::Cpu).unwrap(),
            );
            t
        };
        let u = Unrolled::take_from(&mut with_lines(0.0)).unwrap().unwrap();
        assert_eq!(u.guard_lines, 0);
        for bad in [
            with_lines(-1.0),
            with_lines(2.5),
            with_lines(1e9),
            tensors(&[1.0, f32::NAN], None),
            tensors(&[1.0, -1.0], None),
            tensors(&[], None),
            tensors(&[1.0; 40], None),
            tensors(&[1.0], Some(0.0)),
            tensors(&[1.0], Some(2.5)),
        ] {
            let mut bad = bad;
            assert!(Unrolled::take_from(&mut bad).is_err());
        }
    }
}
