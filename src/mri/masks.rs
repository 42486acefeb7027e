//! Cartesian undersampling masks `[ny, nx]` (1 = sampled), generated from an acceleration factor and a seed.
//!
//! 1D patterns sample whole ky lines (rows). Every pattern keeps a fully sampled centre (ACS region),
//! which the coil-sensitivity estimate uses. Same arguments, same mask: generation is seeded (ChaCha8).

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    VariableDensity1d,
    Equispaced1d,
    VariableDensity2d,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vd1d" | "variable-density-1d" => Ok(Pattern::VariableDensity1d),
            "eq1d" | "equispaced-1d" => Ok(Pattern::Equispaced1d),
            "vd2d" | "variable-density-2d" => Ok(Pattern::VariableDensity2d),
            other => Err(format!(
                "unknown mask pattern {other:?}; expected vd1d, eq1d or vd2d"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskSpec {
    pub pattern: Pattern,
    pub acceleration: f32,
    /// Fraction of ky (and kx for 2D) sampled fully at the centre; `None` picks `0.32 / R` (0.08 at 4×, 0.04 at 8×).
    pub center_fraction: Option<f32>,
    pub seed: u64,
}

impl MaskSpec {
    pub fn new(pattern: Pattern, acceleration: f32, seed: u64) -> Self {
        MaskSpec {
            pattern,
            acceleration,
            center_fraction: None,
            seed,
        }
    }

    pub fn generate(&self, ny: usize, nx: usize) -> Result<Vec<f32>> {
        if !(self.acceleration.is_finite() && self.acceleration >= 1.0) {
            return Err(crate::invalid!(
                "mask acceleration must be a finite number >= 1, got {}",
                self.acceleration
            ));
        }
        if ny < 4 || nx < 4 {
            return Err(crate::invalid!(
                "mask size must be at least 4x4, got {ny}x{nx}"
            ));
        }
        let cf = self
            .center_fraction
            .unwrap_or(0.32 / self.acceleration)
            .clamp(0.0, 1.0);
        if !cf.is_finite() {
            return Err(Error::InvalidArgument(
                "mask center_fraction must be finite".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        Ok(match self.pattern {
            Pattern::VariableDensity1d => {
                let lines = vd_lines(ny, self.acceleration, cf, &mut rng);
                expand_lines(&lines, nx)
            }
            Pattern::Equispaced1d => {
                let lines = equispaced_lines(ny, self.acceleration, cf, &mut rng);
                expand_lines(&lines, nx)
            }
            Pattern::VariableDensity2d => vd_2d(ny, nx, self.acceleration, cf, &mut rng),
        })
    }
}

fn centre_range(n: usize, fraction: f32) -> std::ops::Range<usize> {
    let count = ((n as f32 * fraction).round() as usize).clamp(2, n);
    let start = n / 2 - count / 2;
    start..start + count
}

/// Weighted sampling without replacement (Efraimidis–Spirakis): the `k` largest keys `u^(1/w)`.
fn weighted_pick(weights: &[f64], k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0.0)
        .map(|(i, &w)| (rng.random::<f64>().max(1e-300).ln() / w, i))
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Sampling density that falls off polynomially with the distance from the centre (1 at DC, small at the edge).
fn density(dist: f64) -> f64 {
    (1.0 - dist.clamp(0.0, 1.0)).powi(2) + 0.02
}

fn vd_lines(ny: usize, accel: f32, cf: f32, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let target = ((ny as f32 / accel).round() as usize).clamp(1, ny);
    let mut lines = vec![false; ny];
    for y in centre_range(ny, cf) {
        lines[y] = true;
    }
    let have = lines.iter().filter(|&&s| s).count();
    let weights: Vec<f64> = (0..ny)
        .map(|y| {
            if lines[y] {
                0.0
            } else {
                density((y as f64 - (ny / 2) as f64).abs() / (ny as f64 / 2.0))
            }
        })
        .collect();
    for y in weighted_pick(&weights, target.saturating_sub(have), rng) {
        lines[y] = true;
    }
    lines
}

fn equispaced_lines(ny: usize, accel: f32, cf: f32, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let mut lines = vec![false; ny];
    let centre = centre_range(ny, cf);
    let nc = centre.len() as f32;
    for y in centre {
        lines[y] = true;
    }
    // Spacing chosen so that centre + equispaced lines total about ny / R (as fastMRI's equispaced masks).
    let n = ny as f32;
    let spacing = if nc * accel < n {
        accel * (nc - n) / (nc * accel - n)
    } else {
        f32::INFINITY
    };
    if spacing.is_finite() && spacing >= 1.0 {
        let offset = rng.random_range(0.0..spacing);
        let mut pos = offset;
        while (pos as usize) < ny {
            lines[pos as usize] = true;
            pos += spacing;
        }
    }
    lines
}

fn expand_lines(lines: &[bool], nx: usize) -> Vec<f32> {
    lines
        .iter()
        .flat_map(|&s| std::iter::repeat_n(if s { 1.0 } else { 0.0 }, nx))
        .collect()
}

fn vd_2d(ny: usize, nx: usize, accel: f32, cf: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let total = ny * nx;
    let target = ((total as f32 / accel).round() as usize).clamp(1, total);
    let mut mask = vec![0.0f32; total];
    let (cy, cx) = (
        centre_range(ny, cf.sqrt() * 0.5),
        centre_range(nx, cf.sqrt() * 0.5),
    );
    for y in cy.clone() {
        for x in cx.clone() {
            mask[y * nx + x] = 1.0;
        }
    }
    let have = cy.len() * cx.len();
    let weights: Vec<f64> = (0..total)
        .map(|i| {
            if mask[i] > 0.0 {
                return 0.0;
            }
            let dy = ((i / nx) as f64 - (ny / 2) as f64) / (ny as f64 / 2.0);
            let dx = ((i % nx) as f64 - (nx / 2) as f64) / (nx as f64 / 2.0);
            density((dy * dy + dx * dx).sqrt())
        })
        .collect();
    for i in weighted_pick(&weights, target.saturating_sub(have), rng) {
        mask[i] = 1.0;
    }
    mask
}

/// How the sampled positions of a Cartesian mask are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAxis {
    /// Whole rows (k-space lines along kx; phase encoding along the image's first axis, H): the
    /// orientation inferd's networks are trained in. Full and empty masks count as rows.
    Rows,
    /// Whole columns (phase encoding along W, as in fastMRI's raw files).
    Columns,
    /// Neither (2-D undersampling).
    Neither,
}

/// Tells from a `[ny, nx]` mask whether it samples whole rows, whole columns, or neither.
pub fn line_axis(mask: &[f32], ny: usize, nx: usize) -> LineAxis {
    let on = |y: usize, x: usize| mask[y * nx + x] > 0.0;
    if (0..ny).all(|y| (1..nx).all(|x| on(y, x) == on(y, 0))) {
        LineAxis::Rows
    } else if (0..nx).all(|x| (1..ny).all(|y| on(y, x) == on(0, x))) {
        LineAxis::Columns
    } else {
        LineAxis::Neither
    }
}

/// `[planes, ny, nx]` → `[planes, nx, ny]`.
pub fn transpose<T: Copy>(data: &[T], ny: usize, nx: usize) -> Vec<T> {
    let plane = ny * nx;
    let mut out = Vec::with_capacity(data.len());
    for p in data.chunks_exact(plane) {
        for x in 0..nx {
            out.extend((0..ny).map(|y| p[y * nx + x]));
        }
    }
    out
}

/// Fraction of positions sampled.
pub fn sampled_fraction(mask: &[f32]) -> f32 {
    mask.iter().filter(|&&m| m > 0.0).count() as f32 / mask.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_axis_tells_rows_from_columns() {
        let rows = MaskSpec::new(Pattern::VariableDensity1d, 4.0, 3)
            .generate(16, 12)
            .unwrap();
        assert_eq!(line_axis(&rows, 16, 12), LineAxis::Rows);
        let cols = transpose(&rows, 16, 12);
        assert_eq!(line_axis(&cols, 12, 16), LineAxis::Columns);
        assert_eq!(transpose(&cols, 12, 16), rows);
        let two_d = MaskSpec::new(Pattern::VariableDensity2d, 4.0, 3)
            .generate(16, 16)
            .unwrap();
        assert_eq!(line_axis(&two_d, 16, 16), LineAxis::Neither);
        assert_eq!(line_axis(&[1.0; 64], 8, 8), LineAxis::Rows);
    }

    #[test]
    fn acceleration_is_met_and_centre_is_sampled() {
        for pattern in [
            Pattern::VariableDensity1d,
            Pattern::Equispaced1d,
            Pattern::VariableDensity2d,
        ] {
            for accel in [4.0f32, 8.0] {
                let m = MaskSpec::new(pattern, accel, 3).generate(256, 256).unwrap();
                let f = sampled_fraction(&m);
                assert!(
                    (f * accel - 1.0).abs() < 0.12,
                    "{pattern:?} R={accel}: sampled fraction {f}"
                );
                assert_eq!(m[128 * 256 + 128], 1.0, "{pattern:?}: DC must be sampled");
            }
        }
    }

    #[test]
    fn one_dimensional_masks_sample_whole_lines() {
        let m = MaskSpec::new(Pattern::VariableDensity1d, 4.0, 1)
            .generate(64, 48)
            .unwrap();
        for row in m.chunks(48) {
            assert!(row.iter().all(|&v| v == row[0]));
        }
    }

    #[test]
    fn seeded_and_reproducible() {
        let a = MaskSpec::new(Pattern::VariableDensity1d, 4.0, 9)
            .generate(128, 128)
            .unwrap();
        let b = MaskSpec::new(Pattern::VariableDensity1d, 4.0, 9)
            .generate(128, 128)
            .unwrap();
        let c = MaskSpec::new(Pattern::VariableDensity1d, 4.0, 10)
            .generate(128, 128)
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn rejects_bad_acceleration() {
        assert!(MaskSpec::new(Pattern::VariableDensity1d, 0.5, 0)
            .generate(64, 64)
            .is_err());
        assert!(MaskSpec::new(Pattern::VariableDensity1d, f32::NAN, 0)
            .generate(64, 64)
            .is_err());
    }
}
