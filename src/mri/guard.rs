//! The spectral guard of Cartesian reconstructions: how much of the network's prediction of the
//! *unmeasured* k-space a slice keeps, ring by ring.
//!
//! Hard data consistency keeps every measured sample, so a reconstruction can only be worse than the
//! zero-filled image through what it puts where nothing was measured. The measured samples outside the
//! fully sampled centre tell how good those predictions are at the same spatial frequencies: before its
//! final data consistency, the last pass's image predicts the measured samples too. Per ring of k-space
//! the guard fits one factor `g = Re⟨k̂, y⟩ / ‖k̂‖²` (clamped to [0, 1]) that best maps the prediction
//! `k̂` onto the measurements `y` at that ring's measured points, and scales the unmeasured points of
//! the ring by it. A network that predicts the measured samples keeps its prediction (g ≈ 1); one
//! that invents detail the measurements do not have (an image with no energy at those frequencies,
//! such as a low-resolution series interpolated to a larger matrix) has it scaled towards zero there,
//! i.e. towards the zero-filled image.
//!
//! Rings: the spectral coordinate of a point is the distance of its row from the centre row over
//! `ny / 2` for masks of whole rows (1-D phase encoding), of its column over `nx / 2` for masks of
//! whole columns, and the elliptic radius otherwise. The unmeasured region, from the smallest
//! coordinate of an unmeasured point to the largest coordinate, is cut into `bands` rings of equal
//! width; a ring without measured points takes the factor of the ring inside it (the first ring: 1).
//! The reference implementation is `band_gains` in `tests/reference/unrolled.py`.

use super::masks::{self, LineAxis};
use num_complex::Complex32;

/// Rings of the guard when a model file does not set them (`unrolled.guard_bands`).
pub const DEFAULT_BANDS: usize = 8;
/// At most this many rings (a file cannot make the guard's statistics meaningless).
pub const MAX_BANDS: usize = 64;

/// The spectral coordinate of point `i` (row-major `[ny, nx]`; see the module documentation).
fn coordinate(mask: &[f32], ny: usize, nx: usize) -> impl Fn(usize) -> f64 {
    let axis = masks::line_axis(mask, ny, nx);
    let distance = |i: usize, n: usize| (i as f64 - (n / 2) as f64).abs() / (n as f64 / 2.0);
    move |i| {
        let (dy, dx) = (distance(i / nx, ny), distance(i % nx, nx));
        match axis {
            LineAxis::Rows => dy,
            LineAxis::Columns => dx,
            LineAxis::Neither => (dy * dy + dx * dx).sqrt(),
        }
    }
}

/// The guard's gain of every k-space point `[ny, nx]` (1 where measured), or `None` when nothing is
/// unmeasured or `bands` is 0. `predicted` and `measured` are the coils' k-space `[coils, ny, nx]`: the
/// last pass's image before its data consistency, and the measurements (zero where not sampled).
pub fn band_gains(
    predicted: &[Complex32],
    measured: &[Complex32],
    mask: &[f32],
    ny: usize,
    nx: usize,
    bands: usize,
) -> Option<Vec<f32>> {
    let plane = ny * nx;
    if bands == 0 || plane == 0 || mask.iter().all(|&m| m > 0.0) {
        return None;
    }
    let coord = coordinate(mask, ny, nx);
    let (mut r0, mut r1) = (f64::INFINITY, 0.0f64);
    for (i, &m) in mask.iter().enumerate() {
        let c = coord(i);
        if m <= 0.0 {
            r0 = r0.min(c);
        }
        r1 = r1.max(c);
    }
    let width = (r1 - r0) / bands as f64;
    let band = |c: f64| {
        if width > 0.0 {
            ((c - r0) / width).floor().clamp(0.0, (bands - 1) as f64) as usize
        } else {
            0
        }
    };
    let (mut num, mut den) = (vec![0.0f64; bands], vec![0.0f64; bands]);
    let mut measured_in = vec![false; bands];
    for (kc, yc) in predicted
        .chunks_exact(plane)
        .zip(measured.chunks_exact(plane))
    {
        for i in 0..plane {
            let c = coord(i);
            if mask[i] > 0.0 && c >= r0 {
                let b = band(c);
                let (k, y) = (kc[i], yc[i]);
                num[b] += k.re as f64 * y.re as f64 + k.im as f64 * y.im as f64;
                den[b] += k.re as f64 * k.re as f64 + k.im as f64 * k.im as f64;
                measured_in[b] = true;
            }
        }
    }
    let mut gains = Vec::with_capacity(bands);
    let mut g = 1.0f64;
    for b in 0..bands {
        if measured_in[b] && den[b] > 0.0 {
            g = (num[b] / den[b]).clamp(0.0, 1.0);
        }
        gains.push(g as f32);
    }
    Some(
        mask.iter()
            .enumerate()
            .map(|(i, &m)| {
                let c = coord(i);
                if m > 0.0 || c < r0 {
                    1.0
                } else {
                    gains[band(c)]
                }
            })
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

    #[test]
    fn a_prediction_that_matches_the_measurements_is_kept_and_one_that_invents_energy_is_removed() {
        let (ny, nx) = (16, 8);
        // centre rows 6..10 and outer rows 2 and 13
        let mask = row_mask(ny, nx, &[2, 6, 7, 8, 9, 10, 13]);
        let truth: Vec<Complex32> = (0..ny * nx)
            .map(|i| Complex32::new((i % 5) as f32, (i % 3) as f32 - 1.0))
            .collect();
        let measured: Vec<Complex32> = truth
            .iter()
            .zip(&mask)
            .map(|(t, &m)| if m > 0.0 { *t } else { Complex32::default() })
            .collect();
        let gains = band_gains(&truth, &measured, &mask, ny, nx, 4).unwrap();
        assert!(gains.iter().all(|&g| (g - 1.0).abs() < 1e-6), "{gains:?}");
        // An image with nothing outside the centre: the measured outer rows are zero; a network that
        // predicts energy there loses it on the unmeasured rows of those rings.
        let measured: Vec<Complex32> = measured
            .iter()
            .enumerate()
            .map(|(i, y)| {
                if (6..=10).contains(&(i / nx)) {
                    *y
                } else {
                    Complex32::default()
                }
            })
            .collect();
        // Rows are 3 to 8 from the centre row beyond the centre block: rings of 5/32 from 3/8 of the
        // half-width. Ring 0 (rows 4, 5, 11, 12) holds no measured row and keeps the first ring's 1;
        // ring 1 (row 13 measured, row 3) and ring 2 (row 2 measured, row 14) measured zeros; ring 3
        // (rows 0, 1, 15) has none and takes ring 2's 0.
        let gains = band_gains(&truth, &measured, &mask, ny, nx, 4).unwrap();
        for y in 0..ny {
            let expected = if [0, 1, 3, 14, 15].contains(&y) {
                0.0
            } else {
                1.0
            };
            assert_eq!(gains[y * nx], expected, "row {y}");
        }
    }

    #[test]
    fn column_masks_use_column_distance_and_full_masks_have_no_guard() {
        let (ny, nx) = (8, 16);
        let rows = row_mask(nx, ny, &[1, 7, 8, 9]);
        let mask = crate::mri::masks::transpose(&rows, nx, ny);
        let c = coordinate(&mask, ny, nx);
        assert_eq!(c(0), 1.0); // column 0: |0 - 8| / 8
        assert_eq!(c(3 * nx + 8), 0.0);
        assert!(band_gains(&[], &[], &vec![1.0; 4], 2, 2, 8).is_none());
        assert!(band_gains(&[], &[], &mask, ny, nx, 0).is_none());
    }
}
