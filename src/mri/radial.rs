//! The radial (non-Cartesian) half of the reconstruction pipeline: gridding with density
//! compensation, coil sensitivities from the gridded centre of k-space, and data consistency through
//! the NUFFT.
//!
//! With `A` the orthonormal NUFFT of one coil image at the trajectory ([`crate::mri::nufft`]) and `D`
//! the density compensation weights ([`crate::mri::dcf`]; areas in grid units², so that `Aᴴ D A ≈ I`):
//!
//! * gridding (the "zero-filled" image of radial sampling): `Aᴴ D y` per coil;
//! * data consistency of a predicted coil image `c` (the network output, expanded to the coils with
//!   the sensitivities):
//!   - hard: the predicted samples `A c` at the measured positions are replaced by the measurements and
//!     the difference gridded back, `c + Aᴴ D (y − A c)`;
//!   - soft (λ): the same step scaled by `λ / (1 + λ)`;
//!   - conjugate gradient (λ, n): `n` CG iterations on the density-weighted least-squares problem
//!     `min ‖c − c_pred‖² + λ ‖D^½ (A c − y)‖²`, i.e. `(I + λ Aᴴ D A) c = c_pred + λ Aᴴ D y`, started at
//!     `c_pred` (for Cartesian sampling this problem's exact solution is the soft rule, which is what
//!     the Cartesian path applies).

use super::coils;
use super::dc::{self, DcMode};
use super::dcf;
use super::nufft::{NufftOptions, NufftPlan};
use super::traj::{self, Radial};
use crate::error::Result;
use num_complex::Complex32;

/// Gridding tolerance of the served NUFFT (σ = 2, kernel width 5).
pub const TOLERANCE: f64 = 1e-4;
/// Pipe–Menon iterations for user-supplied trajectories.
pub const PIPE_MENON_ITERATIONS: usize = 20;
/// Radius (grid units) of the k-space centre the coil sensitivities are estimated from, at 256².
const SENS_RADIUS_256: f32 = 12.0;

/// The NUFFT plan and density compensation of one trajectory and image size, made once and shared by
/// every slice and coil measured on that trajectory.
pub struct RadialOperator {
    pub plan: NufftPlan,
    pub dcf: Vec<f32>,
    pub n: usize,
    /// |k| of every sample, for the sensitivity window.
    radius: Vec<f32>,
}

impl std::fmt::Debug for RadialOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RadialOperator({}², {} samples)", self.n, self.dcf.len())
    }
}

impl RadialOperator {
    /// A radial trajectory with the analytic ramp density compensation.
    pub fn radial(traj: &Radial) -> Result<RadialOperator> {
        let coords = traj.nufft_coords();
        let plan = NufftPlan::new(
            traj.n,
            traj.n,
            &coords,
            &NufftOptions::with_tolerance(TOLERANCE),
        )?;
        Ok(RadialOperator::with_plan(
            plan,
            dcf::radial_ramp(traj),
            traj.n,
            &coords,
        ))
    }

    /// Any trajectory (`[kx, ky]` in grid units for an `n × n` image), with the Pipe–Menon density
    /// estimate.
    pub fn from_coords(coords: &[[f32; 2]], n: usize) -> Result<RadialOperator> {
        traj::validate(coords, n, n)?;
        let plan = NufftPlan::new(n, n, coords, &NufftOptions::with_tolerance(TOLERANCE))?;
        let w = dcf::pipe_menon(&plan, PIPE_MENON_ITERATIONS)?;
        Ok(RadialOperator::with_plan(plan, w, n, coords))
    }

    fn with_plan(plan: NufftPlan, dcf: Vec<f32>, n: usize, coords: &[[f32; 2]]) -> RadialOperator {
        let radius = coords.iter().map(|&[kx, ky]| kx.hypot(ky)).collect();
        RadialOperator {
            plan,
            dcf,
            n,
            radius,
        }
    }

    pub fn samples(&self) -> usize {
        self.dcf.len()
    }

    /// `Aᴴ (w ⊙ y)` for every coil of `samples` (`[coils, samples]`), with per-sample weights `w`.
    fn grid_weighted(&self, samples: &[Complex32], w: &[f32]) -> Result<Vec<Complex32>> {
        let weighted: Vec<Complex32> = samples
            .chunks_exact(self.samples())
            .flat_map(|coil| coil.iter().zip(w).map(|(v, &w)| v * w))
            .collect();
        self.plan.adjoint(&weighted)
    }

    /// Gridding `Aᴴ D y` of every coil (`[coils, samples]` → `[coils, n, n]`).
    pub fn grid(&self, samples: &[Complex32]) -> Result<Vec<Complex32>> {
        self.grid_weighted(samples, &self.dcf)
    }

    /// `A c` of every coil image (`[coils, n, n]` → `[coils, samples]`).
    pub fn forward(&self, images: &[Complex32]) -> Result<Vec<Complex32>> {
        self.plan.forward(images)
    }

    /// Coil sensitivities from the centre of k-space: the samples within a small radius, under a
    /// Hann window, gridded to low-resolution coil images and normalised to unit root-sum-of-squares
    /// (the radial counterpart of the Cartesian ACS estimate; the centre is densely sampled by every
    /// spoke, so it is free of streaks).
    pub fn sensitivities(&self, samples: &[Complex32]) -> Result<Vec<Complex32>> {
        let r0 = (SENS_RADIUS_256 * self.n as f32 / 256.0).max(4.0);
        let w: Vec<f32> = self
            .dcf
            .iter()
            .zip(&self.radius)
            .map(|(&d, &r)| {
                if r < r0 {
                    d * (0.5 + 0.5 * (std::f32::consts::PI * r / r0).cos())
                } else {
                    0.0
                }
            })
            .collect();
        let mut low = self.grid_weighted(samples, &w)?;
        coils::normalise_sensitivities(&mut low, self.n * self.n);
        Ok(low)
    }

    /// Data consistency of the coil images `c` (`[coils, n, n]`, in place) with the measured samples.
    pub fn data_consistency(
        &self,
        c: &mut [Complex32],
        measured: &[Complex32],
        mode: DcMode,
    ) -> Result<()> {
        let step = match mode {
            DcMode::Off => return Ok(()),
            DcMode::Model => return self.data_consistency(c, measured, dc::RADIAL_DEFAULT),
            DcMode::Hard => 1.0,
            DcMode::Soft { lambda } => lambda / (1.0 + lambda),
            DcMode::Cg { lambda, iterations } | DcMode::Sense { lambda, iterations } => {
                return self.conjugate_gradient(c, measured, lambda, iterations)
            }
        };
        let correction = self.gridded_residual(c, measured)?;
        for (c, d) in c.iter_mut().zip(correction) {
            *c += d * step;
        }
        Ok(())
    }

    /// `Aᴴ D (y − A c)`: what the measurements say the coil images `c` lack, gridded back.
    fn gridded_residual(&self, c: &[Complex32], measured: &[Complex32]) -> Result<Vec<Complex32>> {
        let predicted = self.forward(c)?;
        let residual: Vec<Complex32> = measured
            .iter()
            .zip(&predicted)
            .map(|(y, p)| y - p)
            .collect();
        self.grid(&residual)
    }

    /// `(I + λ Aᴴ D A) c = c₀ + λ Aᴴ D y` by conjugate gradients from `c₀` (the operator is Hermitian
    /// positive definite; all coils are solved as one vector, the operator being block diagonal).
    fn conjugate_gradient(
        &self,
        c: &mut [Complex32],
        measured: &[Complex32],
        lambda: f32,
        iterations: usize,
    ) -> Result<()> {
        let normal = |v: &[Complex32]| -> Result<Vec<Complex32>> {
            let av = self.forward(v)?;
            let back = self.grid(&av)?;
            Ok(v.iter().zip(back).map(|(v, b)| v + b * lambda).collect())
        };
        // r = b − M c₀ with b = c₀ + λ Aᴴ D y, so r = λ Aᴴ D (y − A c₀).
        let r: Vec<Complex32> = self
            .gridded_residual(c, measured)?
            .into_iter()
            .map(|v| v * lambda)
            .collect();
        let stop = dc::dot_re(&r, &r) * 1e-12;
        dc::conjugate_gradient(c, r, iterations, stop, normal)
    }
}

/// A trajectory as a request describes it, before its operator is made.
#[derive(Debug, Clone)]
pub enum TrajectorySpec {
    /// Radial spokes (analytic ramp density compensation).
    Radial(Radial),
    /// Any coordinates in the NUFFT's order `[kx, ky]` (Pipe–Menon density compensation).
    Coords(std::sync::Arc<Vec<[f32; 2]>>),
}

impl TrajectorySpec {
    pub fn samples(&self) -> usize {
        match self {
            TrajectorySpec::Radial(r) => r.len(),
            TrajectorySpec::Coords(c) => c.len(),
        }
    }

    /// Whether two trajectories give the same operator (compared in full: equal hashes are not
    /// enough to share a plan).
    pub fn same(&self, other: &TrajectorySpec) -> bool {
        match (self, other) {
            (TrajectorySpec::Radial(a), TrajectorySpec::Radial(b)) => a == b,
            (TrajectorySpec::Coords(a), TrajectorySpec::Coords(b)) => {
                std::sync::Arc::ptr_eq(a, b)
                    || (a.len() == b.len()
                        && a.iter().zip(b.iter()).all(|(p, q)| {
                            p[0].to_bits() == q[0].to_bits() && p[1].to_bits() == q[1].to_bits()
                        }))
            }
            _ => false,
        }
    }

    /// Plans the NUFFT and the density compensation (milliseconds to a few hundred for large
    /// trajectories: run it off the async runtime and reuse the result).
    pub fn build(&self, n: usize) -> Result<RadialOperator> {
        match self {
            TrajectorySpec::Radial(r) => RadialOperator::radial(r),
            TrajectorySpec::Coords(c) => RadialOperator::from_coords(c, n),
        }
    }
}

/// One slice of radial k-space: `[coils, samples]` on `op`'s trajectory.
#[derive(Debug, Clone)]
pub struct RadialSlice {
    pub samples: Vec<Complex32>,
    pub coils: usize,
    pub op: std::sync::Arc<RadialOperator>,
}

impl RadialSlice {
    /// The single-coil samples of an `[n, n]` complex image on `op`'s trajectory.
    pub fn single_coil(image: &[Complex32], op: std::sync::Arc<RadialOperator>) -> Result<Self> {
        Ok(RadialSlice {
            samples: op.forward(image)?,
            coils: 1,
            op,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mri::{phantom, traj::SpokeAngles};
    use std::sync::Arc;

    fn rel(a: &[Complex32], b: &[Complex32]) -> f32 {
        let num: f32 = a.iter().zip(b).map(|(a, b)| (a - b).norm_sqr()).sum();
        let den: f32 = b.iter().map(|b| b.norm_sqr()).sum();
        (num / den).sqrt()
    }

    fn setup(n: usize, spokes: usize) -> (Vec<Complex32>, Arc<RadialOperator>) {
        let img = phantom::SyntheticMr::new(3).sample(n, n).complex;
        let traj = Radial::oversampled(n, spokes, SpokeAngles::GoldenAngle).unwrap();
        (img, Arc::new(RadialOperator::radial(&traj).unwrap()))
    }

    #[test]
    fn gridding_a_well_sampled_trajectory_returns_the_image() {
        // Nyquist spoke count (π/2 · N): gridding alone is close to the image.
        let (img, op) = setup(64, 101);
        let s = RadialSlice::single_coil(&img, op.clone()).unwrap();
        let g = op.grid(&s.samples).unwrap();
        let e = rel(&g, &img);
        assert!(e < 0.1, "gridding error {e}");
    }

    #[test]
    fn data_consistency_moves_towards_the_measurements() {
        let (img, op) = setup(64, 24);
        let y = op.forward(&img).unwrap();
        // A poor prediction: the image blurred by zeroing its fine details is replaced by half of it.
        let pred: Vec<Complex32> = img.iter().map(|v| v * 0.5).collect();
        let misfit = |c: &[Complex32]| rel(&op.forward(c).unwrap(), &y);
        let before = misfit(&pred);
        let mut hard = pred.clone();
        op.data_consistency(&mut hard, &y, DcMode::Hard).unwrap();
        let mut soft = pred.clone();
        op.data_consistency(&mut soft, &y, DcMode::Soft { lambda: 1.0 })
            .unwrap();
        let mut cg = pred.clone();
        op.data_consistency(
            &mut cg,
            &y,
            DcMode::Cg {
                lambda: 100.0,
                iterations: 10,
            },
        )
        .unwrap();
        let (h, s, c) = (misfit(&hard), misfit(&soft), misfit(&cg));
        assert!(h < 0.5 * before, "hard {h} vs {before}");
        assert!(s < before && s > h, "soft {s}, hard {h}, before {before}");
        assert!(c < h, "cg {c} vs hard {h}");
        // and the data-consistent images are closer to the truth than the prediction
        assert!(rel(&cg, &img) < rel(&pred, &img));
        let mut off = pred.clone();
        op.data_consistency(&mut off, &y, DcMode::Off).unwrap();
        assert_eq!(off, pred);
    }

    #[test]
    fn sensitivities_have_unit_root_sum_of_squares_on_the_object() {
        let (img, op) = setup(64, 64);
        let plane = 64 * 64;
        let coils = 4;
        let mut multi = Vec::new();
        for c in 0..coils {
            let a = c as f32 * 1.3;
            multi.extend(img.iter().enumerate().map(|(i, v)| {
                let (y, x) = ((i / 64) as f32 / 64.0, (i % 64) as f32 / 64.0);
                v * Complex32::from_polar(1.0 + 0.5 * (a + 3.0 * x - 2.0 * y).sin(), a)
            }));
        }
        let y = op.forward(&multi).unwrap();
        let s = op.sensitivities(&y).unwrap();
        let rss = coils::rss(&s, plane);
        let centre = rss[32 * 64 + 32];
        assert!((centre - 1.0).abs() < 1e-3, "rss at centre {centre}");
    }
}
