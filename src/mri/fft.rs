//! Centred orthonormal 2D FFT (BART `fft -u`, fastMRI): `k = fftshift(FFT2(ifftshift(x))) / sqrt(N)`.
//!
//! Arrays are row-major `[ny, nx]` (ky rows, kx columns). Batches of 2D arrays (coils) are stored
//! back to back.

use num_complex::Complex32;
use rustfft::{FftDirection, FftPlanner};
use std::cell::RefCell;

thread_local! {
    // FftPlanner caches plans per length, so one planner per thread serves every size.
    static PLANNER: RefCell<FftPlanner<f32>> = RefCell::new(FftPlanner::new());
}

/// Forward centred orthonormal FFT of every `[ny, nx]` plane in `data`, in place.
pub fn fft2c(data: &mut [Complex32], ny: usize, nx: usize) {
    transform(data, ny, nx, FftDirection::Forward);
}

/// Inverse centred orthonormal FFT of every `[ny, nx]` plane in `data`, in place.
pub fn ifft2c(data: &mut [Complex32], ny: usize, nx: usize) {
    transform(data, ny, nx, FftDirection::Inverse);
}

fn transform(data: &mut [Complex32], ny: usize, nx: usize, dir: FftDirection) {
    let plane = ny * nx;
    assert!(
        plane > 0 && data.len() % plane == 0,
        "data is not a whole number of [{ny}, {nx}] planes"
    );
    // Planes (coils) are independent: several of a useful size go to rayon's pool (sized by
    // `--cpu-threads`), one or small ones stay on the calling thread.
    if data.len() > plane && plane >= 64 * 64 {
        use rayon::prelude::*;
        data.par_chunks_exact_mut(plane)
            .for_each_init(|| Plane::new(ny, nx, dir), |p, img| p.transform(img));
    } else {
        let mut p = Plane::new(ny, nx, dir);
        for img in data.chunks_exact_mut(plane) {
            p.transform(img);
        }
    }
}

/// The plans and work buffers for transforming `[ny, nx]` planes one after the other.
struct Plane {
    ny: usize,
    nx: usize,
    row_fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    col_fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    tmp: Vec<Complex32>,
    scratch: Vec<Complex32>,
    scale: f32,
}

impl Plane {
    fn new(ny: usize, nx: usize, dir: FftDirection) -> Plane {
        let (row_fft, col_fft) = PLANNER.with(|p| {
            let mut p = p.borrow_mut();
            (p.plan_fft(nx, dir), p.plan_fft(ny, dir))
        });
        let scratch = row_fft
            .get_inplace_scratch_len()
            .max(col_fft.get_inplace_scratch_len());
        Plane {
            ny,
            nx,
            row_fft,
            col_fft,
            tmp: vec![Complex32::default(); ny * nx],
            scratch: vec![Complex32::default(); scratch],
            scale: 1.0 / ((ny * nx) as f32).sqrt(),
        }
    }

    fn transform(&mut self, img: &mut [Complex32]) {
        let (ny, nx, tmp) = (self.ny, self.nx, &mut self.tmp);
        // ifftshift, transposed into tmp ([nx, ny]) so that the column transforms run on contiguous rows.
        for y in 0..ny {
            let sy = (y + ny / 2) % ny; // ifftshift: out[y] = in[(y + n/2) mod n]
            for x in 0..nx {
                let sx = (x + nx / 2) % nx;
                tmp[x * ny + y] = img[sy * nx + sx];
            }
        }
        self.col_fft.process_with_scratch(tmp, &mut self.scratch);
        // transpose back
        for x in 0..nx {
            for y in 0..ny {
                img[y * nx + x] = tmp[x * ny + y];
            }
        }
        self.row_fft.process_with_scratch(img, &mut self.scratch);
        // fftshift (out[(i + n/2) mod n] = in[i]) with the orthonormal scale.
        tmp.copy_from_slice(img);
        for y in 0..ny {
            let dy = (y + ny / 2) % ny;
            for x in 0..nx {
                let dx = (x + nx / 2) % nx;
                img[dy * nx + dx] = tmp[y * nx + x] * self.scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dft2c(x: &[Complex32], ny: usize, nx: usize, inverse: bool) -> Vec<Complex32> {
        // Direct evaluation of the centred DFT with indices measured from the centre n/2.
        let sign = if inverse { 1.0 } else { -1.0 };
        let mut out = vec![Complex32::default(); ny * nx];
        for ky in 0..ny {
            for kx in 0..nx {
                let mut acc = num_complex::Complex64::default();
                for y in 0..ny {
                    for xx in 0..nx {
                        let ph = sign
                            * 2.0
                            * std::f64::consts::PI
                            * ((ky as f64 - (ny / 2) as f64) * (y as f64 - (ny / 2) as f64)
                                / ny as f64
                                + (kx as f64 - (nx / 2) as f64) * (xx as f64 - (nx / 2) as f64)
                                    / nx as f64);
                        let v = x[y * nx + xx];
                        acc += num_complex::Complex64::new(v.re as f64, v.im as f64)
                            * num_complex::Complex64::from_polar(1.0, ph);
                    }
                }
                acc /= ((ny * nx) as f64).sqrt();
                out[ky * nx + kx] = Complex32::new(acc.re as f32, acc.im as f32);
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<Complex32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        };
        (0..n).map(|_| Complex32::new(next(), next())).collect()
    }

    #[test]
    fn matches_direct_centred_dft_for_even_and_odd_sizes() {
        for &(ny, nx) in &[(8, 8), (6, 10), (5, 7), (9, 4)] {
            let x = pseudo_random(ny * nx, (ny * 31 + nx) as u32);
            for inverse in [false, true] {
                let mut y = x.clone();
                if inverse {
                    ifft2c(&mut y, ny, nx)
                } else {
                    fft2c(&mut y, ny, nx)
                }
                let r = naive_dft2c(&x, ny, nx, inverse);
                let err = y
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| (a - b).norm())
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-5, "{ny}x{nx} inverse={inverse}: max error {err}");
            }
        }
    }

    #[test]
    fn round_trip_and_parseval() {
        let (ny, nx) = (32, 24);
        let x = pseudo_random(3 * ny * nx, 7);
        let mut k = x.clone();
        fft2c(&mut k, ny, nx);
        let e_x: f32 = x.iter().map(|v| v.norm_sqr()).sum();
        let e_k: f32 = k.iter().map(|v| v.norm_sqr()).sum();
        assert!(
            (e_x - e_k).abs() / e_x < 1e-5,
            "orthonormal transform keeps energy"
        );
        ifft2c(&mut k, ny, nx);
        let err = x
            .iter()
            .zip(&k)
            .map(|(a, b)| (a - b).norm())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "round trip error {err}");
    }

    #[test]
    fn constant_image_puts_all_energy_at_the_centre() {
        let (ny, nx) = (16, 16);
        let mut k = vec![Complex32::new(1.0, 0.0); ny * nx];
        fft2c(&mut k, ny, nx);
        assert!((k[(ny / 2) * nx + nx / 2].re - 16.0).abs() < 1e-4);
        let off: f32 = k
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != (ny / 2) * nx + nx / 2)
            .map(|(_, v)| v.norm())
            .sum();
        assert!(off < 1e-3);
    }

    #[test]
    fn coils_in_parallel_equal_coils_one_by_one() {
        let (ny, nx, coils) = (64, 80, 5);
        let x = pseudo_random(coils * ny * nx, 11);
        let mut together = x.clone();
        fft2c(&mut together, ny, nx);
        for (c, plane) in x.chunks(ny * nx).enumerate() {
            let mut alone = plane.to_vec();
            fft2c(&mut alone, ny, nx);
            assert_eq!(alone, together[c * ny * nx..(c + 1) * ny * nx]);
        }
    }
}
