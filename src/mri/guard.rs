//! The spectral guard of Cartesian reconstructions: how much of the network's prediction of the
//! *unmeasured* k-space a slice keeps, line by line.
//!
//! Hard data consistency keeps every measured sample, so a reconstruction can only be worse than the
//! zero-filled image through what it puts where nothing was measured. The measured samples outside the
//! fully sampled centre tell how good those predictions are at nearby spatial frequencies: before its
//! final data consistency, the last pass's image predicts the measured samples too. For every
//! unmeasured ring of k-space the guard fits one factor `g = Re⟨k̂, y⟩ / ‖k̂‖²` (clamped to [0, 1])
//! that best maps the prediction `k̂` onto the measurements `y` at the measured points *nearest* to
//! that ring, and scales the ring's unmeasured points by it. A network that predicts the measured
//! samples keeps its prediction (g ≈ 1); one that invents detail the measurements do not have (an
//! image with no energy at those frequencies, such as a low-resolution series interpolated to a larger
//! matrix) has it scaled towards zero there, i.e. towards the zero-filled image.
//!
//! Rings: the spectral coordinate of a point is the distance of its row from the centre row for masks
//! of whole rows (1-D phase encoding), of its column from the centre column for masks of whole
//! columns, and the elliptic radius in samples of the longer side otherwise; rings are one sample
//! wide. The measured points that count lie at or beyond the fully sampled centre (the smallest
//! coordinate of an unmeasured point). An unmeasured ring's neighbourhood starts at the ring itself and
//! grows one ring at a time towards the nearer side (the inner one on a tie) until it holds `lines`
//! lines' worth of measured points (a line: the mask's line length, or the longer side for other
//! masks); with no measured point outside the centre the gain is 1 (nothing to check against).
//! Neighbourhoods of two lines follow the spectrum where it falls steeply (near the centre, where most
//! of an image's energy and a low-resolution image's band edge lie) instead of averaging over a wide
//! ring; the width was chosen on training-source slices only (`scripts/guard_study.py`, models/README).
//! The reference implementation is `band_gains` in `tests/reference/unrolled.py`.

use super::masks::{self, LineAxis};
use num_complex::Complex32;

/// The neighbourhood of the guard in measured lines when a model file does not set it
/// (`unrolled.guard_lines`).
pub const DEFAULT_LINES: usize = 2;
/// At most this many lines (a file cannot make the guard's neighbourhoods meaningless).
pub const MAX_LINES: usize = 64;

/// The ring (one sample wide) of every point `[ny, nx]`, and the measured points of a line's worth
/// (see the module documentation).
fn rings(mask: &[f32], ny: usize, nx: usize) -> (Vec<usize>, usize) {
    let distance = |i: usize, n: usize| (i as f64 - (n / 2) as f64).abs();
    let long = ny.max(nx);
    let axis = masks::line_axis(mask, ny, nx);
    let ring = |i: usize| {
        let (dy, dx) = (distance(i / nx, ny), distance(i % nx, nx));
        match axis {
            LineAxis::Rows => dy as usize,
            LineAxis::Columns => dx as usize,
            LineAxis::Neither => {
                let (ry, rx) = (dy / (ny as f64 / 2.0), dx / (nx as f64 / 2.0));
                ((ry * ry + rx * rx).sqrt() * long as f64 / 2.0).round() as usize
            }
        }
    };
    let line = match axis {
        LineAxis::Rows => nx,
        LineAxis::Columns => ny,
        LineAxis::Neither => long,
    };
    ((0..ny * nx).map(ring).collect(), line)
}

/// The guard's gain of every k-space point `[ny, nx]` (1 where measured), or `None` when nothing is
/// unmeasured or `lines` is 0. `predicted` and `measured` are the coils' k-space `[coils, ny, nx]`: the
/// last pass's image before its data consistency, and the measurements (zero where not sampled).
pub fn band_gains(
    predicted: &[Complex32],
    measured: &[Complex32],
    mask: &[f32],
    ny: usize,
    nx: usize,
    lines: usize,
) -> Option<Vec<f32>> {
    let plane = ny * nx;
    if lines == 0 || plane == 0 || mask.iter().all(|&m| m > 0.0) {
        return None;
    }
    let (ring, line) = rings(mask, ny, nx);
    let last = ring.iter().copied().max().unwrap_or(0);
    let centre = (0..plane)
        .filter(|&i| mask[i] <= 0.0)
        .map(|i| ring[i])
        .min()
        .unwrap_or(0);
    let (mut num, mut den) = (vec![0.0f64; last + 1], vec![0.0f64; last + 1]);
    let (mut count, mut open) = (vec![0usize; last + 1], vec![false; last + 1]);
    for i in 0..plane {
        let r = ring[i];
        if mask[i] <= 0.0 {
            open[r] = true;
        } else if r >= centre {
            count[r] += 1;
        }
    }
    for (kc, yc) in predicted
        .chunks_exact(plane)
        .zip(measured.chunks_exact(plane))
    {
        for i in (0..plane).filter(|&i| mask[i] > 0.0 && ring[i] >= centre) {
            let (k, y) = (kc[i], yc[i]);
            num[ring[i]] += k.re as f64 * y.re as f64 + k.im as f64 * y.im as f64;
            den[ring[i]] += k.re as f64 * k.re as f64 + k.im as f64 * k.im as f64;
        }
    }
    let need = lines.saturating_mul(line);
    let gains: Vec<f32> = (0..=last)
        .map(|r| {
            if !open[r] {
                return 1.0;
            }
            let (mut lo, mut hi, mut held) = (r, r, count[r]);
            while held < need && (lo > centre || hi < last) {
                // the nearer side next, the inner one on a tie
                if lo > centre && (hi == last || r + 1 - lo <= hi + 1 - r) {
                    lo -= 1;
                    held += count[lo];
                } else {
                    hi += 1;
                    held += count[hi];
                }
            }
            let d: f64 = den[lo..=hi].iter().sum();
            if d > 0.0 {
                (num[lo..=hi].iter().sum::<f64>() / d).clamp(0.0, 1.0) as f32
            } else {
                1.0
            }
        })
        .collect();
    Some(
        (0..plane)
            .map(|i| if mask[i] > 0.0 { 1.0 } else { gains[ring[i]] })
            .collect(),
    )
}

/// Scales every coil's k-space `[coils, ny, nx]` point by point by the guard's `gains` `[ny, nx]`.
pub fn apply(kspace: &mut [Complex32], gains: &[f32]) {
    for kc in kspace.chunks_exact_mut(gains.len()) {
        for (k, &g) in kc.iter_mut().zip(gains) {
            *k *= g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_mask(ny: usize, nx: usize, rows: &[usize]) -> Vec<f32> {
        let mut m = vec![0.0; ny * nx];
        for &r in rows {
            m[r * nx..(r + 1) * nx].fill(1.0);
        }
        m
    }

    fn energy(k: &[Complex32], nx: usize, row: usize) -> f64 {
        k[row * nx..(row + 1) * nx]
            .iter()
            .map(|c| c.norm_sqr() as f64)
            .sum()
    }

    #[test]
    fn each_unmeasured_line_takes_the_fit_of_the_nearest_measured_lines() {
        let (ny, nx) = (16, 8);
        // centre rows 6..=10; outside it, rows 13 (5 from the centre row 8) and 2 (6 from it)
        let mask = row_mask(ny, nx, &[2, 6, 7, 8, 9, 10, 13]);
        let truth: Vec<Complex32> = (0..ny * nx)
            .map(|i| Complex32::new((i % 5) as f32 + 1.0, (i % 3) as f32 - 1.0))
            .collect();
        let sampled = |y: &dyn Fn(usize) -> bool| -> Vec<Complex32> {
            (0..ny * nx)
                .map(|i| {
                    if y(i / nx) {
                        truth[i]
                    } else {
                        Complex32::default()
                    }
                })
                .collect()
        };
        let measured = sampled(&|r| mask[r * nx] > 0.0);
        let gains = band_gains(&truth, &measured, &mask, ny, nx, 2).unwrap();
        assert!(gains.iter().all(|&g| (g - 1.0).abs() < 1e-6), "{gains:?}");
        // Row 13 is predicted exactly, row 2 measured nothing (an image without that frequency).
        let measured = sampled(&|r| (6..=13).contains(&r) && mask[r * nx] > 0.0);
        let gains = band_gains(&truth, &measured, &mask, ny, nx, 1).unwrap();
        for row in 0..ny {
            // with one line's worth: rows 3..=5 and 11, 12 (3 to 5 from the centre) look to row 13,
            // rows 14, 15, 0, 1 (6 to 8 from it) to row 2; measured rows keep everything
            let expected = if [14, 15, 0, 1].contains(&row) {
                0.0
            } else {
                1.0
            };
            assert_eq!(gains[row * nx], expected, "row {row}");
        }
        // Two lines' worth: row 5 (3 from the centre) grows outwards to rows 13 and 2 and takes their
        // joint least-squares factor ‖t₁₃‖² / (‖t₁₃‖² + ‖t₂‖²).
        let gains = band_gains(&truth, &measured, &mask, ny, nx, 2).unwrap();
        let (e13, e2) = (energy(&truth, nx, 13), energy(&truth, nx, 2));
        let joint = (e13 / (e13 + e2)) as f32;
        assert!(
            (gains[5 * nx] - joint).abs() < 1e-6,
            "{} vs {joint}",
            gains[5 * nx]
        );
        assert_eq!(gains[13 * nx], 1.0);
    }

    #[test]
    fn column_masks_use_column_distance_and_degenerate_masks_have_no_guard() {
        let (ny, nx) = (8, 16);
        let rows = row_mask(nx, ny, &[1, 7, 8, 9]);
        let mask = crate::mri::masks::transpose(&rows, nx, ny);
        let (ring, line) = rings(&mask, ny, nx);
        assert_eq!((ring[0], ring[3 * nx + 8], ring[5 * nx + 15]), (8, 0, 7));
        assert_eq!(line, ny);
        // an image whose measured column 1 is zero: every unmeasured column is scaled to zero
        let k = vec![Complex32::new(1.0, 2.0); ny * nx];
        let y: Vec<Complex32> = (0..ny * nx)
            .map(|i| {
                if (7..=9).contains(&(i % nx)) {
                    k[i]
                } else {
                    Complex32::default()
                }
            })
            .collect();
        let gains = band_gains(&k, &y, &mask, ny, nx, 2).unwrap();
        for (i, g) in gains.iter().enumerate() {
            let expected = if mask[i] > 0.0 { 1.0 } else { 0.0 };
            assert_eq!(*g, expected, "point {i}");
        }
        // nothing measured outside the centre: nothing to check against, nothing scaled
        let centre = crate::mri::masks::transpose(&row_mask(nx, ny, &[7, 8, 9]), nx, ny);
        assert!(band_gains(&k, &y, &centre, ny, nx, 2)
            .unwrap()
            .iter()
            .all(|&g| g == 1.0));
        assert!(band_gains(&[], &[], &vec![1.0; 4], 2, 2, 2).is_none());
        assert!(band_gains(&[], &[], &mask, ny, nx, 0).is_none());
    }

    #[test]
    fn two_dimensional_masks_use_rings_by_radius() {
        // 64 × 128: rings are the elliptic radius in samples of the longer side (64 per half-width)
        let (ny, nx) = (64, 128);
        let radius = |i: usize| {
            let (dy, dx) = ((i / nx) as f64 - 32.0, (i % nx) as f64 - 64.0);
            ((dy / 32.0).powi(2) + (dx / 64.0).powi(2)).sqrt() * 64.0
        };
        // a disc of radius 6 and every fifth point beyond it
        let mask: Vec<f32> = (0..ny * nx)
            .map(|i| f32::from(radius(i) <= 6.0 || i % 5 == 0))
            .collect();
        let (ring, line) = rings(&mask, ny, nx);
        assert_eq!(line, 128);
        assert_eq!(ring[32 * nx + 69], 5); // 5 columns right of the centre
        assert_eq!(ring[48 * nx + 64], 32); // 16 rows below it: half the half-height
                                            // The prediction matches the measurements inside radius 32 and invents energy beyond it, where
                                            // the measured points are zero: with one line's worth (128 measured points) the unmeasured
                                            // points keep everything up to ring 28, lose it from ring 36 on, and lose part of it between
                                            // (the reference implementation gives 0.875 at ring 29 falling to 0.104 at ring 35).
        let k = vec![Complex32::new(0.5, -1.0); ny * nx];
        let y: Vec<Complex32> = (0..ny * nx)
            .map(|i| {
                if mask[i] > 0.0 && radius(i) < 32.0 {
                    k[i]
                } else {
                    Complex32::default()
                }
            })
            .collect();
        let gains = band_gains(&k, &y, &mask, ny, nx, 1).unwrap();
        for i in (0..ny * nx).filter(|&i| mask[i] <= 0.0) {
            let (r, g) = (ring[i], gains[i]);
            match r {
                0..=28 => assert_eq!(g, 1.0, "ring {r}"),
                29..=35 => assert!(g > 0.1 && g < 0.9, "ring {r}: {g}"),
                _ => assert_eq!(g, 0.0, "ring {r}"),
            }
        }
    }
}
