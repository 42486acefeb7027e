//! 2-D non-uniform FFT (NUFFT) for non-Cartesian k-space: Kaiser–Bessel gridding on an oversampled
//! grid, on top of rustfft.
//!
//! # Conventions
//!
//! Images are row-major `[ny, nx]` (as everywhere in inferd); k-space coordinates are `[kx, ky]` pairs
//! in grid units, BART's convention (see [`crate::mri::traj`]): `-nx/2 <= kx < nx/2`,
//! `-ny/2 <= ky < ny/2`. With `x = ix - nx/2`, `y = iy - ny/2` the pixel indices measured from the
//! image centre (integer division, as in [`crate::mri::fft`]), the forward transform (NUFFT type 2) is
//!
//! ```text
//! A f (k) = 1/√(nx·ny) · Σ_{y,x} f[y, x] · exp(-2πi (kx·x/nx + ky·y/ny))
//! ```
//!
//! and the adjoint (NUFFT type 1) is its exact adjoint, `Aᴴ c [y, x] = 1/√(nx·ny) · Σ_j c_j ·
//! exp(+2πi (kx_j·x/nx + ky_j·y/ny))`: ⟨A f, c⟩ = ⟨f, Aᴴ c⟩ holds to rounding, since each step of the
//! adjoint is the adjoint of the matching forward step. For `k` on the integer grid, `(kx, ky) =
//! (ix - nx/2, iy - ny/2)`, `A f` is exactly [`crate::mri::fft::fft2c`]'s output at `[iy, ix]`: the
//! same sign, centring and orthonormal scale. Relations to other tools:
//!
//! * BART: `bart nufft` (forward) and `bart nufft -a` (adjoint) use the same sign, centring,
//!   coordinates and 1/√(nx·ny) scale (BART's first dimension is `x`, so an `[ny, nx]` image is BART's
//!   `nx:ny:1`, and BART's `[3, X, S]` trajectory and `[1, X, S, coils]` k-space are inferd's sample
//!   order). BART's exact-DFT mode `bart nufft -s` leaves out the 1/√(nx·ny). BART's gridding is
//!   less accurate (1.4e-3 relative on smooth data, mostly a 1.0014 scale bias, and 2e-2 on random
//!   k-space, both measured against its own DFT mode), so inferd agrees with it to that accuracy and
//!   with `bart nufft -s` to a few 1e-6 (tests/nufft.rs).
//! * FINUFFT: `A f = finufft2d2(2π·ky/ny, 2π·kx/nx, f, isign=-1) / √(nx·ny)` and
//!   `Aᴴ c = finufft2d1(2π·ky/ny, 2π·kx/nx, c, (ny, nx), isign=+1) / √(nx·ny)` (first coordinate
//!   along the first array axis, default mode order).
//!
//! # Algorithm
//!
//! Forward: divide the image by the kernel's Fourier transform (deapodisation), zero-pad it to the
//! oversampled grid `my × mx` (`m ≈ σ n`, the next even 2·3·5·7-smooth size), FFT, and interpolate each
//! sample from the `w × w` grid points around `σ k` with the separable Kaiser–Bessel kernel
//! `φ(u) = I0(β √(1 - (2u/w)²)) / I0(β)` for `|u| <= w/2` (grid units). Adjoint: spread every sample onto
//! the grid with the same kernel, inverse FFT, crop, deapodise. The kernel's Fourier transform has the
//! closed form `φ̂(ξ) = w · sinh(√(β² - (π w ξ)²)) / √(β² - (π w ξ)²) / I0(β)` (Jackson et al. 1991),
//! evaluated at `ξ = x / m`.
//!
//! Kernel parameters from a requested tolerance ε and oversampling σ:
//!
//! * shape `β = π √((w/σ)² (σ - 1/2)² - 0.8)` (Beatty, Nishimura, Pauly, IEEE TMI 2005), within 2%
//!   of the β that minimises the error at every width tried (σ = 1.25 and 2, w = 3..12);
//! * width: the narrowest `w` whose estimated error ([`KaiserBessel::estimated_error`]: the exact
//!   interpolation error of single Fourier modes, plus single-precision rounding amplified by the
//!   deapodisation) is at most 0.8 ε. For σ = 2 this is FINUFFT's rule `w = ⌈log10(1/ε)⌉ + 1`
//!   (4 points for 1e-3, 5 for 1e-4, 7 for 1e-6); σ = 1.25 needs 6 for 1e-3 and 8 for 1e-4, and the
//!   rounding term keeps it above about 1.2e-5 (smaller tolerances are refused with σ = 1.25, and
//!   below about 2e-7 with σ = 2).
//!
//! Achieved relative ℓ2 errors (tests/nufft.rs, against an exact NUDFT and against FINUFFT at 1e-9):
//! σ = 2: 6.1e-4, 6.3e-5, 7.4e-7 at ε = 1e-3, 1e-4, 1e-6; σ = 1.25: 3.8e-4, 2.3e-5 at 1e-3, 1e-4,
//! and at most 1.3e-5 at 2e-5. Arithmetic is single precision (inferd's k-space is `Complex32`); the
//! kernel weights are computed in double precision.
//!
//! # Performance
//!
//! A [`NufftPlan`] is made once per trajectory and image size: it checks the coordinates, sorts the
//! samples into 16×16 tiles of the grid (cache locality), and precomputes every sample's `2w` kernel
//! weights (from a piecewise Chebyshev form of the kernel, within 1e-10 of it) and grid offset:
//! `8w + 8` bytes per sample. Transforms then only multiply and add. The grid carries a border of
//! `w/2 + 1` points on each side so that no sample needs index wrapping: the forward transform copies
//! the periodic neighbours into the border before interpolating, the adjoint folds the border back.
//! Zero columns and rows of the zero-padded grid are skipped in the FFTs. Work runs on rayon's current
//! thread pool: a batch (coils, slices sharing one trajectory) is spread over the threads one image each;
//! when there are fewer images than threads, each image's FFTs and interpolation are split across the
//! threads, and spreading gives each thread its own strip of the grid, added together afterwards (no
//! write races).

use crate::error::Result;
use num_complex::Complex32;
use rayon::prelude::*;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Narrowest and widest kernels (grid points per dimension).
pub const MIN_WIDTH: usize = 2;
pub const MAX_WIDTH: usize = 16;
/// The smallest tolerance accepted at all; whether a tolerance is reachable at a given oversampling
/// is decided by [`KaiserBessel::width_for_tolerance`].
pub const MIN_TOLERANCE: f64 = 1e-7;

/// Samples are sorted into tiles of this many grid points per side.
const TILE: usize = 16;

/// Accuracy and grid settings of a [`NufftPlan`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NufftOptions {
    /// Requested relative ℓ2 accuracy ε of the transforms (1e-1 down to about 2e-7 with σ = 2, 1.2e-5
    /// with σ = 1.25); sets the kernel width.
    pub tolerance: f64,
    /// Grid oversampling σ (1.2 ..= 4). 2 is the classic choice; 1.25 halves the grid memory and FFT
    /// work at the price of a kernel about 1.6× wider.
    pub oversampling: f64,
    /// Overrides the kernel width derived from the tolerance (grid points, 2 ..= 16).
    pub width: Option<usize>,
}

impl Default for NufftOptions {
    /// ε = 1e-4, σ = 2 (a 5-point kernel).
    fn default() -> Self {
        NufftOptions {
            tolerance: 1e-4,
            oversampling: 2.0,
            width: None,
        }
    }
}

impl NufftOptions {
    pub fn with_tolerance(tolerance: f64) -> Self {
        NufftOptions {
            tolerance,
            ..Default::default()
        }
    }

    pub fn oversampling(mut self, sigma: f64) -> Self {
        self.oversampling = sigma;
        self
    }
}

/// The modified Bessel function of the first kind, order 0, from its power series
/// `Σ (x²/4)^k / (k!)²` (all terms positive, so accurate to rounding for any x).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    loop {
        term *= q / (k * k);
        sum += term;
        if term <= sum * 1e-17 {
            return sum;
        }
        k += 1.0;
    }
}

/// A separable Kaiser–Bessel gridding kernel in oversampled-grid units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KaiserBessel {
    width: usize,
    beta: f64,
    i0_beta: f64,
}

impl KaiserBessel {
    /// The narrowest width (2..=16) whose [`estimated_error`](Self::estimated_error) with Beatty's β is at
    /// most 0.8 `tolerance` (a margin for the spread of the error between data sets); `None` when no
    /// width gets there in single precision at this oversampling.
    pub fn width_for_tolerance(tolerance: f64, sigma: f64) -> Option<usize> {
        (MIN_WIDTH..=MAX_WIDTH).find(|&w| {
            KaiserBessel::with_beta(w, KaiserBessel::beatty_beta(w, sigma)).estimated_error(sigma)
                <= 0.8 * tolerance
        })
    }

    /// The expected relative ℓ2 error of a 2-D single-precision transform of white data on a grid
    /// oversampled by σ: `√(e_kernel² + e_round²)` with
    ///
    /// * `e_kernel`, the exact interpolation error of single Fourier modes,
    ///   `e(ξ, t) = Σ_m φ(t - m) e^{2πi (t - m) ξ} / φ̂(ξ) - 1` (the kernel sum over the `w` grid points
    ///   next to a sample at `t`, for the image frequency ξ = x/m), root mean square over the image
    ///   frequencies `|ξ| <= 1/(2σ)` and the sample offsets, times `√2` (a separable 2-D transform adds
    ///   the two dimensions' errors);
    /// * `e_round = ε32 · (1.5 + 0.6 A²)`, single-precision rounding (ε32 = 6e-8) amplified by the
    ///   deapodisation, with `A` the root mean square of `φ̂(0)/φ̂(ξ)` over the same frequencies. A grows
    ///   quickly with the width at small σ (33 for w = 11 at σ = 1.25, 1.5 for w = 7 at σ = 2), which
    ///   is what limits σ = 1.25 to about 1.2e-5 (σ = 2 reaches 2e-7). The constants are fitted to
    ///   measured errors (σ = 1.25 to 2, widths 4 to 14, random points and dense radial sampling,
    ///   whose adjoint accumulates the most rounding) and err on the high side.
    ///
    /// The estimate is within about 15% of the errors measured against exact sums and FINUFFT
    /// (tests/nufft.rs) wherever the kernel term dominates.
    pub fn estimated_error(&self, sigma: f64) -> f64 {
        const XIS: usize = 32;
        const OFFSETS: usize = 32;
        const EPS32: f64 = 6e-8;
        let w = self.width as f64;
        let ft0 = self.fourier(0.0);
        let (mut sum, mut amp) = (0.0, 0.0);
        for i in 0..XIS {
            let xi = (i as f64 + 0.5) / XIS as f64 / (2.0 * sigma);
            let ft = self.fourier(xi);
            amp += (ft0 / ft).powi(2);
            for j in 0..OFFSETS {
                // offset of the sample from its first kernel point, in (w/2 - 1, w/2]
                let f = w / 2.0 - (j as f64 + 0.5) / OFFSETS as f64;
                let (mut re, mut im) = (0.0, 0.0);
                for d in 0..self.width {
                    let u = f - d as f64;
                    let (s, c) = (2.0 * std::f64::consts::PI * u * xi).sin_cos();
                    let p = self.eval(u);
                    re += p * c;
                    im += p * s;
                }
                sum += (re / ft - 1.0).powi(2) + (im / ft).powi(2);
            }
        }
        let kernel = (2.0 * sum / (XIS * OFFSETS) as f64).sqrt();
        let round = EPS32 * (1.5 + 0.6 * amp / XIS as f64);
        kernel.hypot(round)
    }

    /// Beatty et al.'s shape parameter `β = π √((w/σ)² (σ - 1/2)² - 0.8)`.
    pub fn beatty_beta(width: usize, sigma: f64) -> f64 {
        let a = width as f64 / sigma * (sigma - 0.5);
        std::f64::consts::PI * (a * a - 0.8).max(0.0).sqrt()
    }

    /// The kernel of the given width with Beatty's β for oversampling σ.
    pub fn new(width: usize, sigma: f64) -> Result<KaiserBessel> {
        if !(MIN_WIDTH..=MAX_WIDTH).contains(&width) {
            return Err(crate::invalid!(
                "NUFFT kernel width must be {MIN_WIDTH}..={MAX_WIDTH} grid points, got {width}"
            ));
        }
        check_sigma(sigma)?;
        Ok(KaiserBessel::with_beta(
            width,
            KaiserBessel::beatty_beta(width, sigma),
        ))
    }

    fn with_beta(width: usize, beta: f64) -> KaiserBessel {
        KaiserBessel {
            width,
            beta,
            i0_beta: bessel_i0(beta),
        }
    }

    /// The kernel for a requested tolerance and oversampling.
    pub fn for_tolerance(tolerance: f64, sigma: f64) -> Result<KaiserBessel> {
        check_tolerance(tolerance)?;
        check_sigma(sigma)?;
        match KaiserBessel::width_for_tolerance(tolerance, sigma) {
            Some(w) => KaiserBessel::new(w, sigma),
            None => {
                let (w, e) = (MIN_WIDTH..=MAX_WIDTH)
                    .map(|w| {
                        (
                            w,
                            KaiserBessel::new(w, sigma)
                                .map(|k| k.estimated_error(sigma))
                                .unwrap_or(f64::MAX),
                        )
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("widths");
                Err(crate::invalid!(
                    "NUFFT tolerance {tolerance:e} is out of reach in single precision with grid oversampling {sigma} \
                     (best estimated error {e:.1e}, with a {w}-point kernel); use oversampling 2 or a looser tolerance"
                ))
            }
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// `φ(u) = I0(β √(1 - (2u/w)²)) / I0(β)` for `|u| <= w/2`, else 0; `φ(0) = 1`.
    pub fn eval(&self, u: f64) -> f64 {
        let s = 2.0 * u / self.width as f64;
        if s.abs() > 1.0 {
            return 0.0;
        }
        bessel_i0(self.beta * (1.0 - s * s).sqrt()) / self.i0_beta
    }

    /// The Fourier transform `φ̂(ξ) = ∫ φ(u) e^{-2πiξu} du` (ξ in cycles per grid point), in closed form.
    pub fn fourier(&self, xi: f64) -> f64 {
        let w = self.width as f64;
        let z2 = self.beta * self.beta - (std::f64::consts::PI * w * xi).powi(2);
        let shape = if z2 > 1e-12 {
            let z = z2.sqrt();
            z.sinh() / z
        } else if z2 < -1e-12 {
            let z = (-z2).sqrt();
            z.sin() / z
        } else {
            1.0
        };
        w * shape / self.i0_beta
    }
}

fn check_tolerance(tolerance: f64) -> Result<()> {
    if !(MIN_TOLERANCE..=0.1).contains(&tolerance) {
        return Err(crate::invalid!(
            "NUFFT tolerance must be between {MIN_TOLERANCE:e} and 0.1, got {tolerance}"
        ));
    }
    Ok(())
}

fn check_sigma(sigma: f64) -> Result<()> {
    if !(1.2..=4.0).contains(&sigma) {
        return Err(crate::invalid!(
            "NUFFT grid oversampling must be between 1.2 and 4, got {sigma}"
        ));
    }
    Ok(())
}

/// The kernel's `w` weights as polynomials of the sample's offset, for fast plan creation: a sample at
/// offset `a ∈ (w/2 - 1, w/2]` from its first kernel point has weights `φ(a - d)`, `d = 0..w`, and each
/// is a Chebyshev series in `z = 2a - (w - 1) ∈ (-1, 1]` (interpolation at Chebyshev nodes; the
/// Kaiser–Bessel kernel is an entire function of `u`, so the series converge fast). The degree is the
/// lowest that keeps the largest deviation from the exact kernel below 1e-10 (φ(0) = 1), well under
/// single-precision rounding.
struct KernelPoly {
    width: usize,
    /// Chebyshev coefficients, `coef[k * width + d]`.
    coef: Vec<f64>,
    degree: usize,
}

impl KernelPoly {
    const MAX_DEGREE: usize = 40;

    fn new(kernel: &KaiserBessel) -> KernelPoly {
        let w = kernel.width;
        let mut best = None;
        for degree in (w + 2).min(Self::MAX_DEGREE)..=Self::MAX_DEGREE {
            let nodes = degree + 1;
            let mut coef = vec![0.0; nodes * w];
            for i in 0..nodes {
                let theta = std::f64::consts::PI * (i as f64 + 0.5) / nodes as f64;
                let z = theta.cos();
                for d in 0..w {
                    let y = kernel.eval((z + w as f64 - 1.0) / 2.0 - d as f64);
                    for k in 0..nodes {
                        coef[k * w + d] += 2.0 / nodes as f64 * y * (k as f64 * theta).cos();
                    }
                }
            }
            for c in &mut coef[..w] {
                *c /= 2.0;
            }
            let poly = KernelPoly {
                width: w,
                coef,
                degree,
            };
            let mut err: f64 = 0.0;
            let mut out = vec![0f64; w];
            for j in 0..=200 {
                let a = w as f64 / 2.0 - j as f64 / 200.0;
                poly.eval_f64(a, &mut out);
                for (d, v) in out.iter().enumerate() {
                    err = err.max((v - kernel.eval(a - d as f64)).abs());
                }
            }
            best = Some(poly);
            if err < 1e-10 {
                break;
            }
        }
        best.expect("at least one degree is tried")
    }

    /// Weights `φ(a - d)` for `d = 0..w`, by Clenshaw's recurrence.
    fn eval_f64(&self, a: f64, out: &mut [f64]) {
        let w = self.width;
        let z = 2.0 * a - (w as f64 - 1.0);
        let mut b1 = [0.0f64; MAX_WIDTH];
        let mut b2 = [0.0f64; MAX_WIDTH];
        for k in (1..=self.degree).rev() {
            let c = &self.coef[k * w..(k + 1) * w];
            for d in 0..w {
                let b = c[d] + 2.0 * z * b1[d] - b2[d];
                b2[d] = b1[d];
                b1[d] = b;
            }
        }
        for d in 0..w {
            out[d] = self.coef[d] + z * b1[d] - b2[d];
        }
    }

    fn eval(&self, a: f64, out: &mut [f32]) {
        let mut v = [0.0f64; MAX_WIDTH];
        self.eval_f64(a, &mut v[..self.width]);
        for (o, v) in out.iter_mut().zip(v) {
            *o = v as f32;
        }
    }
}

/// The smallest even size `>= n` whose only prime factors are 2, 3, 5 and 7 (fast FFT lengths).
fn fft_size(n: usize) -> usize {
    let mut m = n.max(2);
    m += m % 2;
    loop {
        let mut r = m;
        for p in [2, 3, 5, 7] {
            while r % p == 0 {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 2;
    }
}

/// A NUFFT for one trajectory and image size, reused for every image (coil, slice, frame) on it.
pub struct NufftPlan {
    ny: usize,
    nx: usize,
    /// Oversampled grid.
    my: usize,
    mx: usize,
    /// Border width and padded grid size (`py = my + 2 pad` rows of `px = mx + 2 pad`).
    pad: usize,
    py: usize,
    px: usize,
    kernel: KaiserBessel,
    coords: Vec<[f32; 2]>,
    /// Tile order: position `i` holds sample `order[i]`.
    order: Vec<u32>,
    /// Padded-grid offset of each sorted sample's first kernel point.
    base: Vec<u32>,
    /// Per sorted sample: `w` kernel weights along y, then `w` along x.
    weights: Vec<f32>,
    /// Deapodisation including the (-1)^x centring and 1/√n scale, per image row and column.
    deapod_y: Vec<f32>,
    deapod_x: Vec<f32>,
    fft_y: Arc<dyn Fft<f32>>,
    fft_x: Arc<dyn Fft<f32>>,
    ifft_y: Arc<dyn Fft<f32>>,
    ifft_x: Arc<dyn Fft<f32>>,
}

/// Buffers of one image's transform, reused across a batch.
#[derive(Default)]
struct Work {
    /// The `nx` non-zero columns of the grid, column-major (`nx × my`).
    cols: Vec<Complex32>,
    /// Padded grid, row-major (`py × px`).
    grid: Vec<Complex32>,
    scratch: Vec<Complex32>,
}

impl std::fmt::Debug for NufftPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NufftPlan")
            .field("image", &(self.ny, self.nx))
            .field("grid", &(self.my, self.mx))
            .field("samples", &self.coords.len())
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl NufftPlan {
    /// Plans transforms between `[ny, nx]` images and the samples at `coords` (`[kx, ky]`, grid units).
    /// Fails when a coordinate is not finite or outside `-n/2 <= k < n/2`, or the options are out of range.
    pub fn new(
        ny: usize,
        nx: usize,
        coords: &[[f32; 2]],
        options: &NufftOptions,
    ) -> Result<NufftPlan> {
        if ny < 2 || nx < 2 {
            return Err(crate::invalid!(
                "NUFFT image size must be at least 2x2, got {ny}x{nx}"
            ));
        }
        if coords.len() >= u32::MAX as usize {
            return Err(crate::invalid!(
                "NUFFT: at most {} samples per plan, got {}",
                u32::MAX - 1,
                coords.len()
            ));
        }
        check_sigma(options.oversampling)?;
        let kernel = match options.width {
            Some(w) => {
                check_tolerance(options.tolerance)?;
                KaiserBessel::new(w, options.oversampling)?
            }
            None => KaiserBessel::for_tolerance(options.tolerance, options.oversampling)?,
        };
        crate::mri::traj::validate(coords, ny, nx)?;
        let w = kernel.width;
        let grid =
            |n: usize| fft_size(((options.oversampling * n as f64).ceil() as usize).max(2 * w + 4));
        let (my, mx) = (grid(ny), grid(nx));
        let pad = w / 2 + 1;
        let (py, px) = (my + 2 * pad, mx + 2 * pad);
        if py.checked_mul(px).is_none_or(|p| p >= u32::MAX as usize) {
            return Err(crate::invalid!(
                "NUFFT image {ny}x{nx} is too large (grid {my}x{mx})"
            ));
        }

        // First kernel point (padded-grid index) and the offset of σk from it, per dimension.
        let start = |k: f32, n: usize, m: usize| -> (usize, f64) {
            let t = k as f64 * m as f64 / n as f64;
            let m0 = (t - w as f64 / 2.0).ceil();
            let p0 = (m0 as i64 + (m / 2) as i64 + pad as i64) as usize;
            (p0, t - m0)
        };
        // Counting sort of the samples by tile (row-major tiles of the padded grid).
        let tiles_x = px.div_ceil(TILE);
        let keys: Vec<u32> = coords
            .par_iter()
            .map(|&[kx, ky]| {
                let (y0, _) = start(ky, ny, my);
                let (x0, _) = start(kx, nx, mx);
                ((y0 / TILE) * tiles_x + x0 / TILE) as u32
            })
            .collect();
        let mut first = vec![0u32; py.div_ceil(TILE) * tiles_x + 1];
        for &k in &keys {
            first[k as usize + 1] += 1;
        }
        for t in 1..first.len() {
            first[t] += first[t - 1];
        }
        let mut order = vec![0u32; coords.len()];
        for (i, &k) in keys.iter().enumerate() {
            let slot = &mut first[k as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }

        let poly = KernelPoly::new(&kernel);
        let mut base = vec![0u32; coords.len()];
        let mut weights = vec![0f32; coords.len() * 2 * w];
        const CHUNK: usize = 4096;
        base.par_chunks_mut(CHUNK)
            .zip(weights.par_chunks_mut(CHUNK * 2 * w))
            .zip(order.par_chunks(CHUNK))
            .for_each(|((b, wt), o)| {
                for ((b, wt), &i) in b.iter_mut().zip(wt.chunks_exact_mut(2 * w)).zip(o) {
                    let [kx, ky] = coords[i as usize];
                    let (y0, fy) = start(ky, ny, my);
                    let (x0, fx) = start(kx, nx, mx);
                    *b = (y0 * px + x0) as u32;
                    let (wy, wx) = wt.split_at_mut(w);
                    poly.eval(fy, wy);
                    poly.eval(fx, wx);
                }
            });

        let deapod = |n: usize, m: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let x = i as i64 - (n / 2) as i64;
                    let sign = if x.rem_euclid(2) == 0 { 1.0 } else { -1.0 };
                    (sign / ((n as f64).sqrt() * kernel.fourier(x as f64 / m as f64))) as f32
                })
                .collect()
        };
        let mut planner = FftPlanner::new();
        Ok(NufftPlan {
            ny,
            nx,
            my,
            mx,
            pad,
            py,
            px,
            kernel,
            coords: coords.to_vec(),
            order,
            base,
            weights,
            deapod_y: deapod(ny, my),
            deapod_x: deapod(nx, mx),
            fft_y: planner.plan_fft_forward(my),
            fft_x: planner.plan_fft_forward(mx),
            ifft_y: planner.plan_fft_inverse(my),
            ifft_x: planner.plan_fft_inverse(mx),
        })
    }

    /// Image size `(ny, nx)`.
    pub fn image_size(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Oversampled grid size `(my, mx)`.
    pub fn grid_size(&self) -> (usize, usize) {
        (self.my, self.mx)
    }

    /// Number of k-space samples per image.
    pub fn samples(&self) -> usize {
        self.coords.len()
    }

    /// The trajectory, `[kx, ky]` in grid units, in the caller's order.
    pub fn coords(&self) -> &[[f32; 2]] {
        &self.coords
    }

    pub fn kernel(&self) -> &KaiserBessel {
        &self.kernel
    }

    fn plane(&self) -> usize {
        self.ny * self.nx
    }

    /// Forward NUFFT (type 2) of a batch of `[ny, nx]` images stored back to back: returns the samples of
    /// each image, in trajectory order, also back to back.
    pub fn forward(&self, images: &[Complex32]) -> Result<Vec<Complex32>> {
        let batch = self.batch_of_images(images.len(), "forward")?;
        let mut out = vec![Complex32::default(); batch * self.samples()];
        self.forward_into(images, &mut out)?;
        Ok(out)
    }

    /// Adjoint NUFFT (type 1): samples of a batch (each image's samples back to back) to `[ny, nx]` images.
    pub fn adjoint(&self, samples: &[Complex32]) -> Result<Vec<Complex32>> {
        let batch = self.batch_of_samples(samples.len(), "adjoint")?;
        let mut out = vec![Complex32::default(); batch * self.plane()];
        self.adjoint_into(samples, &mut out)?;
        Ok(out)
    }

    /// [`forward`](Self::forward) into a caller's buffer of `batch · samples()` values.
    pub fn forward_into(&self, images: &[Complex32], out: &mut [Complex32]) -> Result<()> {
        let batch = self.batch_of_images(images.len(), "forward")?;
        if out.len() != batch * self.samples() {
            return Err(crate::invalid!(
                "NUFFT forward: {batch} images need an output of {} samples ({} per image), got {}",
                batch * self.samples(),
                self.samples(),
                out.len()
            ));
        }
        self.for_each_item(
            images,
            self.plane(),
            out,
            self.samples(),
            batch,
            |img, o, w, par| self.forward_one(img, o, w, par),
        );
        Ok(())
    }

    /// [`adjoint`](Self::adjoint) into a caller's buffer of `batch` images.
    pub fn adjoint_into(&self, samples: &[Complex32], out: &mut [Complex32]) -> Result<()> {
        let batch = self.batch_of_samples(samples.len(), "adjoint")?;
        if out.len() != batch * self.plane() {
            return Err(crate::invalid!(
                "NUFFT adjoint: {batch} sample sets need an output of {batch} {}x{} images ({} values), got {}",
                self.ny,
                self.nx,
                batch * self.plane(),
                out.len()
            ));
        }
        self.for_each_item(
            samples,
            self.samples(),
            out,
            self.plane(),
            batch,
            |s, img, w, par| self.adjoint_one(s, img, w, par),
        );
        Ok(())
    }

    /// Runs `one(input, output, work, parallel_inside)` on the `batch` item pairs (chunks of
    /// `in_len` and `out_len` values): the first [`batch_split`](Self::batch_split) items one per
    /// thread, the rest one at a time with the item's own parallelism.
    fn for_each_item(
        &self,
        input: &[Complex32],
        in_len: usize,
        out: &mut [Complex32],
        out_len: usize,
        batch: usize,
        one: impl Fn(&[Complex32], &mut [Complex32], &mut Work, bool) + Sync,
    ) {
        let split = self.batch_split(batch);
        input[..split * in_len]
            .par_chunks(in_len)
            .zip(out[..split * out_len].par_chunks_mut(out_len))
            .for_each_init(Work::default, |work, (i, o)| one(i, o, work, false));
        let mut work = Work::default();
        for (i, o) in input[split * in_len..]
            .chunks(in_len)
            .zip(out[split * out_len..].chunks_mut(out_len))
        {
            one(i, o, &mut work, true);
        }
    }

    /// `Σ_k v_k Σ_m φ(σk_j - m) φ(σk_k - m)` at every sample `j`: the values spread onto the grid with the
    /// kernel and interpolated back (no FFT). Density compensation (Pipe–Menon) iterates on it.
    pub fn kernel_convolution(&self, values: &[f32]) -> Result<Vec<f32>> {
        if values.len() != self.samples() {
            return Err(crate::invalid!(
                "kernel convolution: expected one value per sample ({}), got {}",
                self.samples(),
                values.len()
            ));
        }
        let c: Vec<Complex32> = values.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        let mut work = Work::default();
        self.spread(&c, &mut work.grid, true);
        self.fold(&mut work.grid);
        self.extend(&mut work.grid);
        let mut out = vec![Complex32::default(); self.samples()];
        self.interp(&work.grid, &mut out, true);
        Ok(out.into_iter().map(|v| v.re).collect())
    }

    fn batch_of_images(&self, len: usize, what: &str) -> Result<usize> {
        let plane = self.plane();
        if len == 0 || len % plane != 0 {
            return Err(crate::invalid!(
                "NUFFT {what}: expected a whole number of {}x{} images ({plane} values each), got {len} values",
                self.ny,
                self.nx
            ));
        }
        Ok(len / plane)
    }

    fn batch_of_samples(&self, len: usize, what: &str) -> Result<usize> {
        let n = self.samples();
        if len == 0 || len % n != 0 {
            return Err(crate::invalid!(
                "NUFFT {what}: expected a whole number of sample sets of {n} samples (the plan's trajectory), got {len} values"
            ));
        }
        Ok(len / n)
    }

    /// How many batch items run one per thread; the rest split each transform across the threads.
    fn batch_split(&self, batch: usize) -> usize {
        let threads = rayon::current_num_threads();
        if threads <= 1 {
            0
        } else {
            batch / threads * threads
        }
    }

    fn forward_one(&self, img: &[Complex32], out: &mut [Complex32], work: &mut Work, par: bool) {
        let (ny, nx, my, mx, pad, px) = (self.ny, self.nx, self.my, self.mx, self.pad, self.px);
        // Deapodise and zero-pad the image into its nx grid columns, FFT along y.
        work.cols.clear();
        work.cols.resize(nx * my, Complex32::default());
        for iy in 0..ny {
            let q = (iy as isize - (ny / 2) as isize).rem_euclid(my as isize) as usize;
            let dy = self.deapod_y[iy];
            let row = &img[iy * nx..(iy + 1) * nx];
            for (ix, (&v, &dx)) in row.iter().zip(&self.deapod_x).enumerate() {
                work.cols[ix * my + q] = v * (dy * dx);
            }
        }
        fft_rows(&*self.fft_y, &mut work.cols, my, par, &mut work.scratch);
        // Place the columns in the padded grid, FFT along x.
        work.grid.clear();
        work.grid.resize(self.py * px, Complex32::default());
        for (ix, col) in work.cols.chunks_exact(my).enumerate() {
            let c = pad + (ix as isize - (nx / 2) as isize).rem_euclid(mx as isize) as usize;
            for (q, &v) in col.iter().enumerate() {
                work.grid[(q + pad) * px + c] = v;
            }
        }
        {
            let rows = &mut work.grid[pad * px..(pad + my) * px];
            let fft = &*self.fft_x;
            if par {
                rows.par_chunks_mut(px).for_each_init(
                    || vec![Complex32::default(); fft.get_inplace_scratch_len()],
                    |s, r| fft.process_with_scratch(&mut r[pad..pad + mx], s),
                );
            } else {
                work.scratch
                    .resize(fft.get_inplace_scratch_len(), Complex32::default());
                for r in rows.chunks_exact_mut(px) {
                    fft.process_with_scratch(&mut r[pad..pad + mx], &mut work.scratch);
                }
            }
        }
        self.extend(&mut work.grid);
        self.interp(&work.grid, out, par);
    }

    fn adjoint_one(
        &self,
        samples: &[Complex32],
        img: &mut [Complex32],
        work: &mut Work,
        par: bool,
    ) {
        let (ny, nx, my, mx, pad, px) = (self.ny, self.nx, self.my, self.mx, self.pad, self.px);
        self.spread(samples, &mut work.grid, par);
        self.fold(&mut work.grid);
        {
            let rows = &mut work.grid[pad * px..(pad + my) * px];
            let fft = &*self.ifft_x;
            if par {
                rows.par_chunks_mut(px).for_each_init(
                    || vec![Complex32::default(); fft.get_inplace_scratch_len()],
                    |s, r| fft.process_with_scratch(&mut r[pad..pad + mx], s),
                );
            } else {
                work.scratch
                    .resize(fft.get_inplace_scratch_len(), Complex32::default());
                for r in rows.chunks_exact_mut(px) {
                    fft.process_with_scratch(&mut r[pad..pad + mx], &mut work.scratch);
                }
            }
        }
        // Gather the nx image columns, inverse FFT along y, crop and deapodise.
        work.cols.resize(nx * my, Complex32::default());
        for (ix, col) in work.cols.chunks_exact_mut(my).enumerate() {
            let c = pad + (ix as isize - (nx / 2) as isize).rem_euclid(mx as isize) as usize;
            for (q, v) in col.iter_mut().enumerate() {
                *v = work.grid[(q + pad) * px + c];
            }
        }
        fft_rows(&*self.ifft_y, &mut work.cols, my, par, &mut work.scratch);
        for iy in 0..ny {
            let q = (iy as isize - (ny / 2) as isize).rem_euclid(my as isize) as usize;
            let dy = self.deapod_y[iy];
            let row = &mut img[iy * nx..(iy + 1) * nx];
            for (ix, (v, &dx)) in row.iter_mut().zip(&self.deapod_x).enumerate() {
                *v = work.cols[ix * my + q] * (dy * dx);
            }
        }
    }

    /// Copies the periodic neighbours of the grid interior into its border.
    fn extend(&self, grid: &mut [Complex32]) {
        let (my, mx, pad, py, px) = (self.my, self.mx, self.pad, self.py, self.px);
        for r in grid[pad * px..(pad + my) * px].chunks_exact_mut(px) {
            for p in 0..pad {
                r[p] = r[p + mx];
                r[mx + pad + p] = r[pad + p];
            }
        }
        for p in 0..pad {
            grid.copy_within((p + my) * px..(p + my + 1) * px, p * px);
        }
        for p in my + pad..py {
            grid.copy_within((p - my) * px..(p - my + 1) * px, p * px);
        }
    }

    /// Adds the border into the periodic grid interior it stands for (the adjoint of [`Self::extend`]).
    fn fold(&self, grid: &mut [Complex32]) {
        let (my, mx, pad, py, px) = (self.my, self.mx, self.pad, self.py, self.px);
        for p in 0..pad {
            let (a, b) = grid.split_at_mut((p + my) * px);
            for (d, s) in b[..px].iter_mut().zip(&a[p * px..(p + 1) * px]) {
                *d += s;
            }
        }
        for p in my + pad..py {
            let (a, b) = grid.split_at_mut(p * px);
            for (d, s) in a[(p - my) * px..(p - my + 1) * px].iter_mut().zip(&b[..px]) {
                *d += s;
            }
        }
        for r in grid[pad * px..(pad + my) * px].chunks_exact_mut(px) {
            for p in 0..pad {
                let v = r[p];
                r[p + mx] += v;
                let v = r[mx + pad + p];
                r[pad + p] += v;
            }
        }
    }

    /// Spreads all samples onto a zeroed padded grid.
    fn spread(&self, samples: &[Complex32], grid: &mut Vec<Complex32>, par: bool) {
        let (w, px) = (self.kernel.width, self.px);
        grid.clear();
        grid.resize(self.py * px, Complex32::default());
        let n = self.samples();
        let threads = rayon::current_num_threads();
        if !par || threads <= 1 || n < 4096 {
            spread_dispatch(
                w,
                grid,
                px,
                0,
                &self.base,
                &self.weights,
                &self.order,
                samples,
            );
            return;
        }
        // One contiguous run of tile-sorted samples per thread, each spread into its own strip of rows,
        // then added into the grid one after the other.
        let chunk = n.div_ceil(threads);
        let strips: Vec<(usize, Vec<Complex32>)> = (0..n)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let end = (start + chunk).min(n);
                let base = &self.base[start..end];
                let (mut lo, mut hi) = (usize::MAX, 0);
                for &b in base {
                    let r = b as usize / px;
                    lo = lo.min(r);
                    hi = hi.max(r);
                }
                let mut strip = vec![Complex32::default(); (hi - lo + w) * px];
                spread_dispatch(
                    w,
                    &mut strip,
                    px,
                    lo * px,
                    base,
                    &self.weights[start * 2 * w..end * 2 * w],
                    &self.order[start..end],
                    samples,
                );
                (lo, strip)
            })
            .collect();
        for (lo, strip) in strips {
            for (d, s) in grid[lo * px..lo * px + strip.len()].iter_mut().zip(&strip) {
                *d += s;
            }
        }
    }

    /// Interpolates every sample from the extended grid into `out` (trajectory order).
    fn interp(&self, grid: &[Complex32], out: &mut [Complex32], par: bool) {
        let (w, px) = (self.kernel.width, self.px);
        let n = self.samples();
        if !par || rayon::current_num_threads() <= 1 || n < 4096 {
            interp_dispatch(w, grid, px, &self.base, &self.weights, &self.order, out);
            return;
        }
        // Interpolate in tile order in parallel, then put the values in trajectory order.
        const CHUNK: usize = 8192;
        let mut sorted = vec![Complex32::default(); n];
        sorted.par_chunks_mut(CHUNK).enumerate().for_each(|(c, s)| {
            let (a, b) = (c * CHUNK, c * CHUNK + s.len());
            interp_sorted_dispatch(
                w,
                grid,
                px,
                &self.base[a..b],
                &self.weights[a * 2 * w..b * 2 * w],
                s,
            );
        });
        for (&i, v) in self.order.iter().zip(sorted) {
            out[i as usize] = v;
        }
    }
}

/// In-place FFTs of consecutive rows of length `len`, split across threads when `par`.
fn fft_rows(
    fft: &dyn Fft<f32>,
    data: &mut [Complex32],
    len: usize,
    par: bool,
    scratch: &mut Vec<Complex32>,
) {
    let need = fft.get_inplace_scratch_len();
    if par {
        let rows = data.len() / len;
        let per = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        data.par_chunks_mut(per * len).for_each_init(
            || vec![Complex32::default(); need],
            |s, c| fft.process_with_scratch(c, s),
        );
    } else {
        scratch.resize(need, Complex32::default());
        fft.process_with_scratch(data, scratch);
    }
}

macro_rules! dispatch_width {
    ($w:expr, $f:ident, $($arg:expr),*) => {
        match $w {
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*),
            14 => $f::<14>($($arg),*),
            15 => $f::<15>($($arg),*),
            16 => $f::<16>($($arg),*),
            _ => unreachable!("kernel width is checked when planning"),
        }
    };
}

#[allow(clippy::too_many_arguments)]
fn spread_dispatch(
    w: usize,
    grid: &mut [Complex32],
    px: usize,
    offset: usize,
    base: &[u32],
    weights: &[f32],
    order: &[u32],
    samples: &[Complex32],
) {
    dispatch_width!(w, spread_w, grid, px, offset, base, weights, order, samples)
}

fn interp_dispatch(
    w: usize,
    grid: &[Complex32],
    px: usize,
    base: &[u32],
    weights: &[f32],
    order: &[u32],
    out: &mut [Complex32],
) {
    dispatch_width!(w, interp_w, grid, px, base, weights, order, out)
}

fn interp_sorted_dispatch(
    w: usize,
    grid: &[Complex32],
    px: usize,
    base: &[u32],
    weights: &[f32],
    out: &mut [Complex32],
) {
    dispatch_width!(w, interp_sorted_w, grid, px, base, weights, out)
}

/// Adds `c · wy[dy] · wx[dx]` to the `W × W` grid points from offset `b`.
#[inline(always)]
fn spread_one<const W: usize>(
    grid: &mut [Complex32],
    px: usize,
    b: usize,
    wt: &[f32],
    c: Complex32,
) {
    let wy: &[f32; W] = wt[..W].try_into().unwrap();
    let wx: &[f32; W] = wt[W..2 * W].try_into().unwrap();
    for (dy, &vy) in wy.iter().enumerate() {
        let cy = c * vy;
        let row: &mut [Complex32; W] = (&mut grid[b + dy * px..b + dy * px + W])
            .try_into()
            .unwrap();
        for (g, &vx) in row.iter_mut().zip(wx) {
            *g += cy * vx;
        }
    }
}

/// `Σ wy[dy] wx[dx] grid[b + dy·px + dx]`.
#[inline(always)]
fn interp_one<const W: usize>(grid: &[Complex32], px: usize, b: usize, wt: &[f32]) -> Complex32 {
    let wy: &[f32; W] = wt[..W].try_into().unwrap();
    let wx: &[f32; W] = wt[W..2 * W].try_into().unwrap();
    let mut acc = Complex32::default();
    for (dy, &vy) in wy.iter().enumerate() {
        let row: &[Complex32; W] = grid[b + dy * px..b + dy * px + W].try_into().unwrap();
        let mut r = Complex32::default();
        for (g, &vx) in row.iter().zip(wx) {
            r += g * vx;
        }
        acc += r * vy;
    }
    acc
}

#[allow(clippy::too_many_arguments)]
fn spread_w<const W: usize>(
    grid: &mut [Complex32],
    px: usize,
    offset: usize,
    base: &[u32],
    weights: &[f32],
    order: &[u32],
    samples: &[Complex32],
) {
    for ((&b, wt), &i) in base.iter().zip(weights.chunks_exact(2 * W)).zip(order) {
        spread_one::<W>(grid, px, b as usize - offset, wt, samples[i as usize]);
    }
}

fn interp_w<const W: usize>(
    grid: &[Complex32],
    px: usize,
    base: &[u32],
    weights: &[f32],
    order: &[u32],
    out: &mut [Complex32],
) {
    for ((&b, wt), &i) in base.iter().zip(weights.chunks_exact(2 * W)).zip(order) {
        out[i as usize] = interp_one::<W>(grid, px, b as usize, wt);
    }
}

fn interp_sorted_w<const W: usize>(
    grid: &[Complex32],
    px: usize,
    base: &[u32],
    weights: &[f32],
    out: &mut [Complex32],
) {
    for ((&b, wt), o) in base.iter().zip(weights.chunks_exact(2 * W)).zip(out) {
        *o = interp_one::<W>(grid, px, b as usize, wt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex64;

    fn random(n: usize, seed: u64) -> Vec<Complex32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        (0..n).map(|_| Complex32::new(next(), next())).collect()
    }

    fn random_coords(n: usize, ny: usize, nx: usize, seed: u64) -> Vec<[f32; 2]> {
        random(n, seed)
            .into_iter()
            .map(|v| [v.re * nx as f32 * 0.9999, v.im * ny as f32 * 0.9999])
            .collect()
    }

    /// Exact forward NUDFT in double precision.
    fn nudft(img: &[Complex32], ny: usize, nx: usize, coords: &[[f32; 2]]) -> Vec<Complex64> {
        let s = 1.0 / ((ny * nx) as f64).sqrt();
        coords
            .iter()
            .map(|&[kx, ky]| {
                let mut acc = Complex64::default();
                for iy in 0..ny {
                    for ix in 0..nx {
                        let (x, y) = (ix as f64 - (nx / 2) as f64, iy as f64 - (ny / 2) as f64);
                        let ph = -2.0
                            * std::f64::consts::PI
                            * (kx as f64 * x / nx as f64 + ky as f64 * y / ny as f64);
                        let v = img[iy * nx + ix];
                        acc += Complex64::new(v.re as f64, v.im as f64)
                            * Complex64::from_polar(1.0, ph);
                    }
                }
                acc * s
            })
            .collect()
    }

    fn rel_err(a: &[Complex32], b: &[Complex64]) -> f64 {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (Complex64::new(x.re as f64, x.im as f64) - y).norm_sqr())
            .sum();
        let den: f64 = b.iter().map(|y| y.norm_sqr()).sum();
        (num / den).sqrt()
    }

    #[test]
    fn bessel_and_kernel_fourier_transform() {
        // I0 against known values
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        assert!((bessel_i0(1.0) - 1.266_065_877_752_008_4).abs() < 1e-14);
        assert!((bessel_i0(10.0) / 2_815.716_628_466_254 - 1.0).abs() < 1e-13);
        // φ̂ against a numerical integral (Simpson, 20000 intervals over the support)
        let k = KaiserBessel::new(7, 2.0).unwrap();
        for xi in [0.0, 0.05, 0.2, 0.25, 0.4] {
            let (a, nseg) = (3.5f64, 20000);
            let h = 2.0 * a / nseg as f64;
            let mut s = 0.0;
            for i in 0..=nseg {
                let u = -a + i as f64 * h;
                let c = if i == 0 || i == nseg {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                s += c * k.eval(u) * (2.0 * std::f64::consts::PI * xi * u).cos();
            }
            s *= h / 3.0;
            assert!(
                (s - k.fourier(xi)).abs() < 1e-9 * k.fourier(0.0),
                "xi {xi}: {s} vs {}",
                k.fourier(xi)
            );
        }
    }

    #[test]
    fn polynomial_weights_match_the_kernel() {
        for (w, sigma) in [(2, 2.0), (4, 2.0), (7, 2.0), (11, 1.25), (16, 2.0)] {
            let k = KaiserBessel::new(w, sigma).unwrap();
            let p = KernelPoly::new(&k);
            let mut out = vec![0f64; w];
            for j in 0..=997 {
                let a = w as f64 / 2.0 - j as f64 / 997.0;
                p.eval_f64(a, &mut out);
                for (d, v) in out.iter().enumerate() {
                    let e = (v - k.eval(a - d as f64)).abs();
                    assert!(e < 1e-10, "w={w} degree {}: {e:e}", p.degree);
                }
            }
        }
    }

    #[test]
    fn width_and_beta_rules() {
        assert_eq!(KaiserBessel::width_for_tolerance(1e-3, 2.0), Some(4));
        assert_eq!(KaiserBessel::width_for_tolerance(1e-4, 2.0), Some(5));
        assert_eq!(KaiserBessel::width_for_tolerance(1e-6, 2.0), Some(7));
        assert_eq!(KaiserBessel::width_for_tolerance(1e-3, 1.25), Some(6));
        assert_eq!(KaiserBessel::width_for_tolerance(1e-4, 1.25), Some(8));
        assert_eq!(KaiserBessel::width_for_tolerance(1e-6, 1.25), None);
        let e = KaiserBessel::for_tolerance(1e-6, 1.25)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out of reach") && e.contains("oversampling 2"),
            "{e}"
        );
        // the estimate tracks the error measured on white data (see tests/nufft.rs)
        let e = KaiserBessel::new(5, 2.0).unwrap().estimated_error(2.0);
        assert!((5e-5..8e-5).contains(&e), "{e}");
        // Beatty's β for W = 4, σ = 2: π √(4·2.25 - 0.8)
        assert!(
            (KaiserBessel::beatty_beta(4, 2.0) - std::f64::consts::PI * 8.2f64.sqrt()).abs()
                < 1e-12
        );
        assert_eq!(fft_size(513), 540);
        assert_eq!(fft_size(320), 320);
        assert!(KaiserBessel::for_tolerance(1e-9, 2.0).is_err());
        assert!(KaiserBessel::for_tolerance(1e-4, 1.0).is_err());
    }

    #[test]
    fn small_sizes_match_the_exact_transform() {
        for &(ny, nx, sigma, tol) in &[
            (16, 16, 2.0, 1e-6),
            (15, 12, 2.0, 1e-4),
            (10, 17, 1.25, 1e-4),
        ] {
            let coords = random_coords(150, ny, nx, 3);
            let plan = NufftPlan::new(
                ny,
                nx,
                &coords,
                &NufftOptions::with_tolerance(tol).oversampling(sigma),
            )
            .unwrap();
            let img = random(ny * nx, 5);
            let e = rel_err(&plan.forward(&img).unwrap(), &nudft(&img, ny, nx, &coords));
            assert!(
                e < tol,
                "{ny}x{nx} σ={sigma}: forward error {e:e} (tolerance {tol:e})"
            );
        }
    }

    #[test]
    fn adjoint_identity_single_and_batched() {
        let (ny, nx) = (24, 20);
        let coords = random_coords(5000, ny, nx, 9);
        let plan = NufftPlan::new(ny, nx, &coords, &NufftOptions::default()).unwrap();
        for batch in [1, 3] {
            let x = random(batch * ny * nx, 1);
            let y = random(batch * coords.len(), 2);
            let ax = plan.forward(&x).unwrap();
            let ahy = plan.adjoint(&y).unwrap();
            let dot = |a: &[Complex32], b: &[Complex32]| -> Complex64 {
                a.iter()
                    .zip(b)
                    .map(|(p, q)| {
                        Complex64::new(p.re as f64, p.im as f64).conj()
                            * Complex64::new(q.re as f64, q.im as f64)
                    })
                    .sum()
            };
            let (l, r) = (dot(&ax, &y), dot(&x, &ahy));
            assert!(
                (l - r).norm() / l.norm() < 1e-5,
                "batch {batch}: {l} vs {r}"
            );
        }
    }

    #[test]
    fn plans_are_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<NufftPlan>();
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let plan =
            NufftPlan::new(8, 8, &[[0.0, 0.0], [1.0, -2.0]], &NufftOptions::default()).unwrap();
        let e = plan
            .forward(&[Complex32::default(); 63])
            .unwrap_err()
            .to_string();
        assert!(e.contains("8x8 images (64 values each)"), "{e}");
        let e = plan
            .adjoint(&[Complex32::default(); 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample sets of 2 samples"), "{e}");
        let mut out = vec![Complex32::default(); 3];
        let e = plan
            .forward_into(&[Complex32::default(); 64], &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("output of 2 samples"), "{e}");
    }
}
