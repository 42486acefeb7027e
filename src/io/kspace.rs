//! Raw Cartesian k-space read from a file, in inferd's layout, and the readout processing the
//! raw-data readers share.
//!
//! Layout: `[slices, coils, ky, kx]` row-major, ky = phase encoding (image rows), kx = readout
//! (image columns), centred orthonormal FFT convention with DC at `(ky/2, kx/2)`.

use super::acquisition::AcquisitionInfo;
use num_complex::Complex32;
use rustfft::{FftDirection, FftPlanner};

/// K-space volume with the sampling the file records and its acquisition metadata.
#[derive(Clone, Debug)]
pub struct RawKspace {
    pub slices: usize,
    pub coils: usize,
    pub ny: usize,
    pub nx: usize,
    pub data: Vec<Complex32>,
    /// `[ny, nx]`, 1 = measured, when the file says which samples were acquired.
    pub mask: Option<Vec<f32>>,
    pub info: AcquisitionInfo,
}

/// Removes readout oversampling from `rows` readout lines of `n_in` samples stored back to back:
/// each line goes to image space (centred orthonormal inverse DFT), the central `n_out` pixels are
/// kept, and they return to k-space (centred orthonormal DFT of length `n_out`). With the orthonormal
/// convention at both ends the kept pixels keep their values, so an image reconstructed from the
/// result has the intensity of the central part of the image reconstructed from the oversampled
/// data. Lines of zeros (unmeasured) stay zero.
pub fn crop_readout(lines: &[Complex32], n_in: usize, n_out: usize) -> Vec<Complex32> {
    assert!(n_out <= n_in && n_in > 0 && lines.len().is_multiple_of(n_in));
    if n_out == n_in {
        return lines.to_vec();
    }
    let mut planner = FftPlanner::<f32>::new();
    let inv = planner.plan_fft(n_in, FftDirection::Inverse);
    let fwd = planner.plan_fft(n_out, FftDirection::Forward);
    let start = n_in / 2 - n_out / 2; // keeps the pixel at n_in/2 (x = 0) at n_out/2
    let mut out = Vec::with_capacity(lines.len() / n_in * n_out);
    let mut buf = vec![Complex32::default(); n_in];
    let mut small = vec![Complex32::default(); n_out];
    for line in lines.chunks_exact(n_in) {
        if line.iter().all(|v| *v == Complex32::default()) {
            out.extend(std::iter::repeat_n(Complex32::default(), n_out));
            continue;
        }
        centred(line, &mut buf, inv.as_ref());
        centred(&buf[start..start + n_out], &mut small, fwd.as_ref());
        out.extend_from_slice(&small);
    }
    out
}

/// Centred orthonormal 1-D DFT: `out = fftshift(F(ifftshift(x))) / sqrt(n)`.
fn centred(x: &[Complex32], out: &mut [Complex32], f: &dyn rustfft::Fft<f32>) {
    let n = x.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[(i + n / 2) % n]; // ifftshift
    }
    f.process(out);
    let scale = 1.0 / (n as f32).sqrt();
    let shifted: Vec<Complex32> = (0..n).map(|i| out[(i + n - n / 2) % n] * scale).collect(); // fftshift
    out.copy_from_slice(&shifted);
}

/// Swaps the last two axes of `planes` `[rows, cols]` matrices stored back to back.
pub fn transpose_planes(data: &[Complex32], rows: usize, cols: usize) -> Vec<Complex32> {
    let plane = rows * cols;
    let mut out = vec![Complex32::default(); data.len()];
    for (src, dst) in data.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        for r in 0..rows {
            for c in 0..cols {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mri::fft;

    #[test]
    fn cropping_the_readout_keeps_the_central_image() {
        // An image twice as wide as the target FOV: after the crop, the 2-D inverse FFT of the
        // shorter k-space equals the central columns of the wide image.
        let (ny, n_in, n_out) = (6, 16, 8);
        let img: Vec<Complex32> = (0..ny * n_in)
            .map(|i| Complex32::new((i % 7) as f32 - 3.0, (i % 5) as f32 * 0.5))
            .collect();
        let mut k = img.clone();
        fft::fft2c(&mut k, ny, n_in);
        let mut small = crop_readout(&k, n_in, n_out);
        fft::ifft2c(&mut small, ny, n_out);
        for y in 0..ny {
            for x in 0..n_out {
                let want = img[y * n_in + x + (n_in - n_out) / 2];
                let got = small[y * n_out + x];
                assert!((want - got).norm() < 1e-4, "({y},{x}) {want} vs {got}");
            }
        }
        assert_eq!(crop_readout(&k, n_in, n_in), k);
    }

    #[test]
    fn transposes_each_plane() {
        let d: Vec<Complex32> = (0..12).map(|i| Complex32::new(i as f32, 0.0)).collect();
        let t = transpose_planes(&d, 2, 3);
        let re: Vec<f32> = t.iter().map(|c| c.re).collect();
        assert_eq!(re, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
    }
}
