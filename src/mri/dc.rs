//! Data consistency in k-space: keep the measured samples, take the network's prediction elsewhere.

use num_complex::Complex32;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DcMode {
    /// The model's own final data consistency, what a request gets unless it asks for another: hard for
    /// Cartesian sampling; for non-Cartesian sampling the unrolled model's trained CG step (its last λ),
    /// or [`RADIAL_DEFAULT`] for a single-pass network. Resolved by the engine ([`DcMode::resolve`]).
    Model,
    /// Sampled points are replaced by the measured ones: `k = y·m + F(x)·(1 − m)`.
    Hard,
    /// Sampled points become `(F(x) + λ y) / (1 + λ)`; `λ → ∞` is hard DC.
    Soft { lambda: f32 },
    /// No data consistency: the network output as is.
    Off,
    /// The least-squares problem `min ‖c − c_pred‖² + λ ‖A c − y‖²` (density-weighted for non-Cartesian
    /// sampling) by `iterations` conjugate-gradient steps. For Cartesian sampling its exact solution is
    /// the soft rule, which is applied directly.
    Cg { lambda: f32, iterations: usize },
    /// Parallel-imaging data consistency for multi-coil Cartesian data: `min ‖x − x_pred‖² +
    /// λ Σ_c ‖M F S_c x − y_c‖²` over the coil-combined image `x`, with the coil sensitivities `S_c`
    /// estimated from the calibration region, by `iterations` conjugate-gradient steps (SENSE with
    /// the network's image as prior). Unlike the per-coil rules it uses what the coils' different
    /// views say about unsampled k-space. Single-coil and non-Cartesian data get `Cg`.
    Sense { lambda: f32, iterations: usize },
}

/// The data consistency non-Cartesian requests get unless they ask for another: a light least-squares
/// fit (λ = 0.1, 10 CG iterations). A single gridded residual step (`Hard`) over-corrects when the
/// spokes undersample k-space strongly (the gridding operator `Aᴴ D A` is then far from the identity);
/// see BENCHMARKS.md for the comparison.
pub const RADIAL_DEFAULT: DcMode = DcMode::Cg {
    lambda: 0.1,
    iterations: 10,
};

impl DcMode {
    /// The concrete mode of a request: [`DcMode::Model`] becomes `trained` (the unrolled model's final
    /// step) where the model has one for this sampling, else hard (Cartesian) or [`RADIAL_DEFAULT`].
    pub fn resolve(self, radial: bool, trained: Option<DcMode>) -> DcMode {
        match (self, trained) {
            (DcMode::Model, Some(t)) => t,
            (DcMode::Model, None) if radial => RADIAL_DEFAULT,
            (DcMode::Model, None) => DcMode::Hard,
            (m, _) => m,
        }
    }

    /// Parses a request's data consistency: `mode` one of `hard`, `soft`, `cg`, `sense`, `off` (or
    /// empty / `model` for the model's own), `lambda` required by soft, CG and SENSE, `iterations`
    /// (CG default 5, SENSE 10; 0 or absent = default).
    pub fn parse(
        mode: &str,
        lambda: Option<f64>,
        iterations: Option<i64>,
    ) -> crate::error::Result<DcMode> {
        let lambda = || -> crate::error::Result<f32> {
            match lambda {
                Some(l) if l.is_finite() && l > 0.0 && l <= f32::MAX as f64 => Ok(l as f32),
                _ => Err(crate::invalid!(
                    "data consistency {mode} needs lambda > 0 (a finite number), got {lambda:?}"
                )),
            }
        };
        let iterations = |default: usize| -> crate::error::Result<usize> {
            match iterations.unwrap_or(0) {
                0 => Ok(default),
                n @ 1..=50 => Ok(n as usize),
                n => Err(crate::invalid!(
                    "data consistency iterations is {n}, expected 1 to 50 (0 = {default})"
                )),
            }
        };
        Ok(match mode.to_ascii_lowercase().as_str() {
            "" | "model" | "unspecified" => DcMode::Model,
            "hard" => DcMode::Hard,
            "off" => DcMode::Off,
            "soft" => DcMode::Soft { lambda: lambda()? },
            "cg" => DcMode::Cg {
                lambda: lambda()?,
                iterations: iterations(5)?,
            },
            "sense" => DcMode::Sense {
                lambda: lambda()?,
                iterations: iterations(10)?,
            },
            other => {
                return Err(crate::invalid!(
                    "data consistency {other:?} is unknown; expected hard, soft, cg, sense, off or model"
                ))
            }
        })
    }

    /// How DICOM descriptions and logs name the mode.
    pub fn describe(self) -> &'static str {
        match self {
            DcMode::Model => "the model's own",
            DcMode::Hard => "hard",
            DcMode::Soft { .. } => "soft",
            DcMode::Cg { .. } => "conjugate-gradient",
            DcMode::Sense { .. } => "SENSE",
            DcMode::Off => "no",
        }
    }
}

/// Applies data consistency to the predicted k-space of every coil (`predicted` and `measured` are
/// `[coils, plane]`, `mask` is `[plane]`).
pub fn apply(predicted: &mut [Complex32], measured: &[Complex32], mask: &[f32], mode: DcMode) {
    let plane = mask.len();
    match mode {
        DcMode::Off => {}
        DcMode::Hard | DcMode::Model => {
            for (p, y) in predicted
                .chunks_exact_mut(plane)
                .zip(measured.chunks_exact(plane))
            {
                for ((p, y), &m) in p.iter_mut().zip(y).zip(mask) {
                    if m > 0.0 {
                        *p = *y;
                    }
                }
            }
        }
        DcMode::Soft { lambda } | DcMode::Cg { lambda, .. } | DcMode::Sense { lambda, .. } => {
            let w = 1.0 / (1.0 + lambda);
            for (p, y) in predicted
                .chunks_exact_mut(plane)
                .zip(measured.chunks_exact(plane))
            {
                for ((p, y), &m) in p.iter_mut().zip(y).zip(mask) {
                    if m > 0.0 {
                        *p = (*p + y * lambda) * w;
                    }
                }
            }
        }
    }
}

/// Real part of ⟨a, b⟩, accumulated in f64.
pub fn dot_re(a: &[Complex32], b: &[Complex32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a.conj() * b).re as f64).sum()
}

/// Conjugate gradients for a Hermitian positive definite system `M x = b`, from `x` (updated in
/// place) with its residual `r = b − M x`, for at most `iterations` steps or until ‖r‖² ≤ `stop`.
/// `normal` applies `M`. Both data-consistency solvers use it: per-coil least squares on a
/// non-Cartesian trajectory and SENSE on Cartesian multi-coil data.
pub fn conjugate_gradient<E>(
    x: &mut [Complex32],
    mut r: Vec<Complex32>,
    iterations: usize,
    stop: f64,
    mut normal: impl FnMut(&[Complex32]) -> Result<Vec<Complex32>, E>,
) -> Result<(), E> {
    let mut d = r.clone();
    let mut rr = dot_re(&r, &r);
    for _ in 0..iterations {
        if rr <= stop {
            break;
        }
        let q = normal(&d)?;
        let alpha = (rr / dot_re(&d, &q).max(f64::MIN_POSITIVE)) as f32;
        for ((x, r), (d, q)) in x.iter_mut().zip(r.iter_mut()).zip(d.iter().zip(&q)) {
            *x += d * alpha;
            *r -= q * alpha;
        }
        let rr_next = dot_re(&r, &r);
        let beta = (rr_next / rr) as f32;
        for (d, r) in d.iter_mut().zip(&r) {
            *d = r + *d * beta;
        }
        rr = rr_next;
    }
    Ok(())
}
