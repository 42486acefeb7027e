//! Coil combination and coil-sensitivity estimation from the fully sampled k-space centre (ACS).

use super::fft::ifft2c;
use num_complex::Complex32;

/// Root-sum-of-squares over coils: `images` is `[coils, ny * nx]` back to back.
pub fn rss(images: &[Complex32], plane: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; plane];
    for coil in images.chunks_exact(plane) {
        for (o, v) in out.iter_mut().zip(coil) {
            *o += v.norm_sqr();
        }
    }
    out.iter_mut().for_each(|v| *v = v.sqrt());
    out
}

/// The fully sampled box around the k-space centre: `(rows, cols)` ranges.
///
/// The column extent is the contiguous sampled run through the centre of the centre row; the row extent
/// is the run of rows around the centre in which that whole column extent is sampled. For a 1D mask
/// this is the block of fully sampled central ky lines; for a 2D mask the central square.
pub fn acs_region(
    mask: &[f32],
    ny: usize,
    nx: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (cy, cx) = (ny / 2, nx / 2);
    let sampled = |y: usize, x: usize| mask[y * nx + x] > 0.0;
    if !sampled(cy, cx) {
        return (cy..cy, cx..cx);
    }
    let (mut x0, mut x1) = (cx, cx + 1);
    while x0 > 0 && sampled(cy, x0 - 1) {
        x0 -= 1;
    }
    while x1 < nx && sampled(cy, x1) {
        x1 += 1;
    }
    let row_ok = |y: usize| (x0..x1).all(|x| sampled(y, x));
    let (mut y0, mut y1) = (cy, cy + 1);
    while y0 > 0 && row_ok(y0 - 1) {
        y0 -= 1;
    }
    while y1 < ny && row_ok(y1) {
        y1 += 1;
    }
    (y0..y1, x0..x1)
}

/// Smallest ACS extent (in samples, per direction) accepted for sensitivity estimation.
pub const MIN_ACS: usize = 4;

/// Coil sensitivities `[coils, ny * nx]`, normalised so that `sum_c |S_c|^2 = 1` wherever there is signal.
///
/// Low-resolution coil images come from the ACS region of the (masked) k-space under a Hann window; each is
/// divided by their root-sum-of-squares. When the mask has no usable ACS region, the central 8 % of
/// k-space is used instead (aliasing then leaks into the estimate). Returns the region used.
pub fn estimate_sensitivities(
    kspace: &[Complex32],
    mask: &[f32],
    coils: usize,
    ny: usize,
    nx: usize,
) -> (
    Vec<Complex32>,
    (std::ops::Range<usize>, std::ops::Range<usize>),
) {
    let plane = ny * nx;
    let (mut ry, mut rx) = acs_region(mask, ny, nx);
    if ry.len() < MIN_ACS.min(ny) || rx.len() < MIN_ACS.min(nx) {
        let h = ((ny as f32 * 0.08).round() as usize).max(MIN_ACS).min(ny);
        let w = ((nx as f32 * 0.08).round() as usize).max(MIN_ACS).min(nx);
        ry = ny / 2 - h / 2..ny / 2 - h / 2 + h;
        rx = nx / 2 - w / 2..nx / 2 - w / 2 + w;
    }
    let hann = |i: usize, r: &std::ops::Range<usize>| {
        let n = r.len() as f32;
        let t = (i - r.start) as f32 + 0.5;
        0.5 - 0.5 * (2.0 * std::f32::consts::PI * t / n).cos()
    };
    let mut low = vec![Complex32::default(); coils * plane];
    for c in 0..coils {
        for y in ry.clone() {
            let wy = hann(y, &ry);
            for x in rx.clone() {
                let i = c * plane + y * nx + x;
                low[i] = kspace[i] * (wy * hann(x, &rx));
            }
        }
    }
    ifft2c(&mut low, ny, nx);
    normalise_sensitivities(&mut low, plane);
    (low, (ry, rx))
}

/// Turns low-resolution coil images (`[coils, plane]`) into sensitivities: each divided by their
/// root-sum-of-squares (floored at 1e-6 of its peak, so empty background stays finite).
pub fn normalise_sensitivities(low: &mut [Complex32], plane: usize) {
    let norm = rss(low, plane);
    let peak = norm.iter().cloned().fold(0.0f32, f32::max);
    let floor = (peak * 1e-6).max(f32::MIN_POSITIVE);
    for coil in low.chunks_exact_mut(plane) {
        for (s, &n) in coil.iter_mut().zip(&norm) {
            *s /= n.max(floor);
        }
    }
}

/// Sensitivity-weighted combination `sum_c conj(S_c) x_c` (the least-squares coil combination for
/// sensitivities normalised to unit root-sum-of-squares).
pub fn combine(images: &[Complex32], sens: &[Complex32], plane: usize) -> Vec<Complex32> {
    let mut out = vec![Complex32::default(); plane];
    for (img, s) in images.chunks_exact(plane).zip(sens.chunks_exact(plane)) {
        for ((o, v), s) in out.iter_mut().zip(img).zip(s) {
            *o += s.conj() * v;
        }
    }
    out
}

/// Coil images `S_c * x` from a single image.
pub fn expand(image: &[Complex32], sens: &[Complex32], plane: usize) -> Vec<Complex32> {
    sens.chunks_exact(plane)
        .flat_map(|s| s.iter().zip(image).map(|(s, v)| s * v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mri::fft::fft2c;

    #[test]
    fn acs_region_of_line_mask() {
        let (ny, nx) = (32, 16);
        let mut mask = vec![0.0; ny * nx];
        for y in [3, 13, 14, 15, 16, 17, 18, 25] {
            for x in 0..nx {
                mask[y * nx + x] = 1.0;
            }
        }
        let (ry, rx) = acs_region(&mask, ny, nx);
        assert_eq!((ry, rx), (13..19, 0..16));
    }

    #[test]
    fn sensitivities_recover_smooth_coil_profiles() {
        // Two coils with smooth, known profiles on a smooth object: the estimate divided by the true
        // normalised profile must be (nearly) constant where the object has signal.
        let (ny, nx) = (64, 64);
        let plane = ny * nx;
        let object: Vec<Complex32> = (0..plane)
            .map(|i| {
                let (y, x) = (
                    (i / nx) as f32 / ny as f32 - 0.5,
                    (i % nx) as f32 / nx as f32 - 0.5,
                );
                Complex32::new((-(x * x + y * y) * 8.0).exp(), 0.0)
            })
            .collect();
        let prof = |c: usize, i: usize| {
            let x = (i % nx) as f32 / nx as f32;
            if c == 0 {
                Complex32::new(1.0 - 0.5 * x, 0.1)
            } else {
                Complex32::new(0.5 + 0.5 * x, -0.2)
            }
        };
        let mut k: Vec<Complex32> = (0..2)
            .flat_map(|c| (0..plane).map(move |i| (c, i)))
            .map(|(c, i)| prof(c, i) * object[i])
            .collect();
        fft2c(&mut k, ny, nx);
        let mask = vec![1.0; plane];
        let (sens, _) = estimate_sensitivities(&k, &mask, 2, ny, nx);
        let centre = (ny / 2) * nx + nx / 2;
        for i in [centre, centre + 5, centre - 7 * nx] {
            let n = (prof(0, i).norm_sqr() + prof(1, i).norm_sqr()).sqrt();
            for c in 0..2 {
                let err = (sens[c * plane + i] - prof(c, i) / n).norm();
                assert!(err < 0.05, "coil {c} pixel {i}: error {err}");
            }
        }
    }
}
