//! Synthetic MR-like images: the modified Shepp–Logan phantom and a seeded generator of random
//! head-like images (skull ring, brain with tissue classes, ventricles, vessels, cortical texture,
//! coil bias field, smooth phase) used for training and tests.

use num_complex::Complex32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One ellipse: intensity added inside `((x-cx)cosθ + (y-cy)sinθ)²/a² + (…)²/b² ≤ 1`, coordinates in [-1, 1].
#[derive(Debug, Clone, Copy)]
struct Ellipse {
    value: f32,
    a: f32,
    b: f32,
    cx: f32,
    cy: f32,
    theta: f32,
}

fn draw(img: &mut [f32], ny: usize, nx: usize, e: &Ellipse) {
    let (s, c) = e.theta.sin_cos();
    for y in 0..ny {
        let py = 1.0 - 2.0 * (y as f32 + 0.5) / ny as f32; // rows go top to bottom
        for x in 0..nx {
            let px = 2.0 * (x as f32 + 0.5) / nx as f32 - 1.0;
            let (dx, dy) = (px - e.cx, py - e.cy);
            let u = (dx * c + dy * s) / e.a;
            let v = (-dx * s + dy * c) / e.b;
            if u * u + v * v <= 1.0 {
                img[y * nx + x] += e.value;
            }
        }
    }
}

/// The modified Shepp–Logan phantom (Toft's contrast), values in [0, 1].
pub fn shepp_logan(ny: usize, nx: usize) -> Vec<f32> {
    const E: [(f32, f32, f32, f32, f32, f32); 10] = [
        (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
        (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
        (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
        (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
        (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
        (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
        (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
        (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
        (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
        (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
    ];
    let mut img = vec![0.0; ny * nx];
    for &(value, a, b, cx, cy, deg) in &E {
        draw(
            &mut img,
            ny,
            nx,
            &Ellipse {
                value,
                a,
                b,
                cx,
                cy,
                theta: deg.to_radians(),
            },
        );
    }
    img.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    img
}

/// Separable box blur, repeated `passes` times (≈ Gaussian).
fn blur(img: &mut [f32], ny: usize, nx: usize, radius: usize, passes: usize) {
    let mut tmp = vec![0.0f32; img.len()];
    for _ in 0..passes {
        for y in 0..ny {
            for x in 0..nx {
                let (lo, hi) = (x.saturating_sub(radius), (x + radius).min(nx - 1));
                tmp[y * nx + x] =
                    img[y * nx + lo..=y * nx + hi].iter().sum::<f32>() / (hi - lo + 1) as f32;
            }
        }
        for y in 0..ny {
            let (lo, hi) = (y.saturating_sub(radius), (y + radius).min(ny - 1));
            for x in 0..nx {
                img[y * nx + x] =
                    (lo..=hi).map(|yy| tmp[yy * nx + x]).sum::<f32>() / (hi - lo + 1) as f32;
            }
        }
    }
}

/// Seeded generator of random head-like MR images.
pub struct SyntheticMr {
    rng: ChaCha8Rng,
}

/// One synthetic image: magnitude in [0, 1] (max exactly 1) and the complex image with a smooth phase.
pub struct SyntheticImage {
    pub magnitude: Vec<f32>,
    pub complex: Vec<Complex32>,
}

impl SyntheticMr {
    pub fn new(seed: u64) -> Self {
        SyntheticMr {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn sample(&mut self, ny: usize, nx: usize) -> SyntheticImage {
        let r = &mut self.rng;
        let mut img = vec![0.0f32; ny * nx];
        let theta = r.random_range(-0.4f32..0.4);
        let (ha, hb) = (r.random_range(0.6f32..0.85), r.random_range(0.7f32..0.95));
        let (hx, hy) = (
            r.random_range(-0.08f32..0.08),
            r.random_range(-0.08f32..0.08),
        );
        let skull = r.random_range(0.03f32..0.08);
        let scalp_val = r.random_range(0.5f32..1.0);
        // scalp/skull ring: bright outer shell, dark bone, then brain
        draw(
            &mut img,
            ny,
            nx,
            &Ellipse {
                value: scalp_val,
                a: ha,
                b: hb,
                cx: hx,
                cy: hy,
                theta,
            },
        );
        draw(
            &mut img,
            ny,
            nx,
            &Ellipse {
                value: -scalp_val + r.random_range(0.0f32..0.1),
                a: ha - skull,
                b: hb - skull,
                cx: hx,
                cy: hy,
                theta,
            },
        );
        let (ba, bb) = (
            ha - skull - r.random_range(0.02f32..0.05),
            hb - skull - r.random_range(0.02f32..0.05),
        );
        let wm = r.random_range(0.25f32..0.6);
        let mut brain = vec![0.0f32; ny * nx];
        draw(
            &mut brain,
            ny,
            nx,
            &Ellipse {
                value: 1.0,
                a: ba,
                b: bb,
                cx: hx,
                cy: hy,
                theta,
            },
        );
        // cortical texture: band-limited noise, thresholded into grey/white matter folds
        let mut tex: Vec<f32> = (0..ny * nx).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let scale = (ny.min(nx) / 64).max(1);
        blur(&mut tex, ny, nx, r.random_range(1..=2) * scale, 3);
        let tex_std = (tex.iter().map(|v| v * v).sum::<f32>() / tex.len() as f32)
            .sqrt()
            .max(1e-6);
        let gm_contrast = r.random_range(-0.35f32..0.35);
        for i in 0..ny * nx {
            if brain[i] > 0.0 {
                let t = tex[i] / tex_std;
                let fold = 1.0 / (1.0 + (-3.0 * t).exp());
                img[i] += wm + gm_contrast * fold + 0.06 * t.clamp(-2.0, 2.0);
            }
        }
        // ventricles, lesions and deep structures
        for _ in 0..r.random_range(2..7) {
            let e = Ellipse {
                value: r.random_range(-0.35f32..0.35),
                a: r.random_range(0.03f32..0.25),
                b: r.random_range(0.03f32..0.25),
                cx: hx + r.random_range(-0.4f32..0.4) * ba,
                cy: hy + r.random_range(-0.4f32..0.4) * bb,
                theta: r.random_range(0.0f32..std::f32::consts::PI),
            };
            let mut layer = vec![0.0f32; ny * nx];
            draw(&mut layer, ny, nx, &e);
            for i in 0..ny * nx {
                img[i] += layer[i] * brain[i];
            }
        }
        // small bright vessels / spots
        for _ in 0..r.random_range(0..6) {
            let rad = r.random_range(0.008f32..0.03);
            draw(
                &mut img,
                ny,
                nx,
                &Ellipse {
                    value: r.random_range(0.2f32..0.6),
                    a: rad,
                    b: rad,
                    cx: hx + r.random_range(-0.7f32..0.7) * ba,
                    cy: hy + r.random_range(-0.7f32..0.7) * bb,
                    theta: 0.0,
                },
            );
        }
        // smooth multiplicative bias field (receive-coil shading)
        let (bx, by, bxy) = (
            r.random_range(-0.25f32..0.25),
            r.random_range(-0.25f32..0.25),
            r.random_range(-0.15f32..0.15),
        );
        for y in 0..ny {
            let py = 2.0 * y as f32 / ny as f32 - 1.0;
            for x in 0..nx {
                let px = 2.0 * x as f32 / nx as f32 - 1.0;
                img[y * nx + x] *= (1.0 + bx * px + by * py + bxy * px * py).max(0.2);
            }
        }
        let mut mag: Vec<f32> = img.iter().map(|v| v.max(0.0)).collect();
        // slight partial-volume softening
        blur(&mut mag, ny, nx, 1, 1);
        let peak = mag.iter().cloned().fold(0.0f32, f32::max).max(1e-6);
        mag.iter_mut().for_each(|v| *v /= peak);
        // smooth phase: low-order polynomial, as from B0 inhomogeneity and coil phase
        let (p0, p1, p2, p3) = (
            r.random_range(-std::f32::consts::PI..std::f32::consts::PI),
            r.random_range(-1.5f32..1.5),
            r.random_range(-1.5f32..1.5),
            r.random_range(-1.0f32..1.0),
        );
        let complex = mag
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let (py, px) = (
                    2.0 * (i / nx) as f32 / ny as f32 - 1.0,
                    2.0 * (i % nx) as f32 / nx as f32 - 1.0,
                );
                Complex32::from_polar(m, p0 + p1 * px + p2 * py + p3 * (px * px + py * py))
            })
            .collect();
        SyntheticImage {
            magnitude: mag,
            complex,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shepp_logan_range() {
        let img = shepp_logan(128, 128);
        let max = img.iter().cloned().fold(0.0, f32::max);
        assert!((max - 1.0).abs() < 1e-6);
        assert_eq!(img[0], 0.0);
    }

    #[test]
    fn synthetic_images_are_normalised_and_seeded() {
        let a = SyntheticMr::new(5).sample(64, 64);
        let b = SyntheticMr::new(5).sample(64, 64);
        assert_eq!(a.magnitude, b.magnitude);
        let max = a.magnitude.iter().cloned().fold(0.0, f32::max);
        assert!((max - 1.0).abs() < 1e-6);
        assert!(a.magnitude.iter().all(|v| *v >= 0.0));
        for (m, c) in a.magnitude.iter().zip(&a.complex) {
            assert!((c.norm() - m).abs() < 1e-5);
        }
    }
}
