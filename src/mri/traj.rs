//! Non-Cartesian k-space trajectories: radial spokes (uniform or golden-angle) and validation of
//! user-supplied sample coordinates.
//!
//! Two orders of the same coordinates (grid units: for an `[ny, nx]` image the Cartesian k-space grid
//! spans `-nx/2 <= kx < nx/2`, `-ny/2 <= ky < ny/2`, one unit per Cartesian k-space line):
//!
//! * **BART's / the API's order `[k0, k1]`**: `k0` pairs with the image's first axis (H, the row index),
//!   `k1` with the second (W) — BART's first and second dimension as Python's `cfl.readcfl` returns its
//!   arrays (NumPy axis 0 = BART's first dimension). [`Radial::coords`] and every trajectory a client
//!   sends (KServe `recon-radial` `traj`, `Sampling.trajectory`) use this order.
//! * **The NUFFT's order `[kx, ky]`** ([`crate::mri::nufft`]): `kx` along the columns (W), `ky` along
//!   the rows (H); a sample measures `Σ img[y, x] exp(-2πi (kx·x/nx + ky·y/ny))`, pixel indices from the
//!   image centre. [`to_nufft_order`] swaps the pair; [`Radial::nufft_coords`] gives it directly.
//!
//! Radial trajectories reproduce `bart traj -r` exactly: a spoke of `X` readout samples (BART `-x X`)
//! is the line through the centre at radii `r_j = (j + 0.5 - X/2) · N/X`, `j = 0..X`, and spoke `s` runs
//! along `(kx, ky) = r · (sin θ_s, cos θ_s)`. The factor `N/X` is BART's `bart scale`: a readout
//! oversampled twice (`X = 2N`, the usual acquisition) is `bart traj -r -x 2N -y S` followed by
//! `bart scale 0.5`; `X = N` needs no scaling. The k-space centre itself is not sampled (the two
//! samples nearest to it sit at `±N/(2X)`). Samples are stored spoke after spoke, readout fastest, the
//! order of BART's `[3, X, S]` trajectory array and of k-space data `[1, X, S, coils]`.

use crate::error::Result;

/// How the spoke angles `θ_s`, `s = 0..S`, are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpokeAngles {
    /// `θ_s = π s / S`: uniform over a half circle (BART's default). Every spoke is a full line through
    /// the centre, so a half circle covers all directions.
    Half,
    /// `θ_s = 2π s / S`: uniform over the full circle (`bart traj -D`).
    Full,
    /// `θ_s = s · π/φ` with φ the golden ratio, an increment of 180°/φ ≈ 111.246° (`bart traj -G`):
    /// any run of consecutive spokes covers the directions almost uniformly, which suits dynamic and
    /// self-gated imaging. (BART evaluates `s · π/φ` in single precision, so its coordinates differ
    /// from these by up to `|r| · 1.2e-7 · s` grid units, half an ulp of the angle.)
    GoldenAngle,
}

/// A 2-D radial trajectory for an `n × n` image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Radial {
    /// Image size `N` (the Cartesian grid the coordinates are measured on).
    pub n: usize,
    /// Readout samples per spoke `X`; `2N` for the usual twice-oversampled readout.
    pub readout: usize,
    /// Number of spokes `S`.
    pub spokes: usize,
    pub angles: SpokeAngles,
}

/// The golden ratio φ = (1 + √5) / 2.
pub const GOLDEN_RATIO: f64 = 1.618_033_988_749_895;

impl Radial {
    /// A trajectory with `readout` samples per spoke, covering radii up to `N/2 · (1 - 1/X)`.
    pub fn new(n: usize, readout: usize, spokes: usize, angles: SpokeAngles) -> Result<Radial> {
        if n < 2 {
            return Err(crate::invalid!(
                "radial trajectory: image size must be at least 2, got {n}"
            ));
        }
        if readout < 2 {
            return Err(crate::invalid!(
                "radial trajectory: expected at least 2 readout samples per spoke, got {readout}"
            ));
        }
        if spokes == 0 {
            return Err(crate::invalid!(
                "radial trajectory: expected at least one spoke, got 0"
            ));
        }
        Ok(Radial {
            n,
            readout,
            spokes,
            angles,
        })
    }

    /// The usual acquisition: `2N` readout samples per spoke (twice-oversampled readout), i.e.
    /// `bart traj -r -x 2N -y S` then `bart scale 0.5`.
    pub fn oversampled(n: usize, spokes: usize, angles: SpokeAngles) -> Result<Radial> {
        Radial::new(n, 2 * n, spokes, angles)
    }

    /// The number of spokes that samples the edge of k-space at the Nyquist rate: the arc between
    /// neighbouring spokes at radius N/2 is at most one grid unit, `S = ⌈π N / 2⌉`.
    pub fn nyquist_spokes(n: usize) -> usize {
        (std::f64::consts::PI * n as f64 / 2.0).ceil() as usize
    }

    /// Total number of samples `X · S`.
    pub fn len(&self) -> usize {
        self.readout * self.spokes
    }

    /// Always false: a trajectory has at least one spoke of two samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distance between neighbouring samples along a spoke, `Δr = N / X` grid units.
    pub fn readout_spacing(&self) -> f64 {
        self.n as f64 / self.readout as f64
    }

    /// The angle `θ_s` of spoke `s` in radians (not reduced modulo 2π for golden-angle spokes).
    pub fn angle(&self, s: usize) -> f64 {
        use std::f64::consts::PI;
        match self.angles {
            SpokeAngles::Half => PI * s as f64 / self.spokes as f64,
            SpokeAngles::Full => 2.0 * PI * s as f64 / self.spokes as f64,
            SpokeAngles::GoldenAngle => s as f64 * PI / GOLDEN_RATIO,
        }
    }

    /// The signed radius of readout sample `j`: `(j + 0.5 - X/2) · N/X`.
    pub fn radius(&self, j: usize) -> f64 {
        (j as f64 + 0.5 - self.readout as f64 / 2.0) * self.readout_spacing()
    }

    /// The coordinates in the NUFFT's order `[kx, ky]` (kx along the columns).
    pub fn nufft_coords(&self) -> Vec<[f32; 2]> {
        to_nufft_order(&self.coords())
    }

    /// `[k0, k1]` of every sample (BART's order: k0 along the image rows' axis H), spoke after spoke,
    /// readout fastest.
    pub fn coords(&self) -> Vec<[f32; 2]> {
        let mut out = Vec::with_capacity(self.len());
        for s in 0..self.spokes {
            let (sin, cos) = self.angle(s).sin_cos();
            for j in 0..self.readout {
                let r = self.radius(j);
                out.push([(r * sin) as f32, (r * cos) as f32]);
            }
        }
        out
    }
}

/// BART's / the API's `[k0, k1]` (k0 along H) → the NUFFT's `[kx, ky]` (kx along W), and back (the
/// swap is its own inverse).
pub fn to_nufft_order(coords: &[[f32; 2]]) -> Vec<[f32; 2]> {
    coords.iter().map(|&[a, b]| [b, a]).collect()
}

/// Checks NUFFT-order `[kx, ky]` coordinates for an `[ny, nx]` image: every value finite and on the
/// grid, `-nx/2 <= kx < nx/2` and `-ny/2 <= ky < ny/2` (k = ±N/2 is the same frequency, so only one end
/// is included, as for the Cartesian grid). The error names the first offending sample.
pub fn validate(coords: &[[f32; 2]], ny: usize, nx: usize) -> Result<()> {
    if ny == 0 || nx == 0 {
        return Err(crate::invalid!(
            "k-space coordinates: image size must be positive, got {ny}x{nx}"
        ));
    }
    if coords.is_empty() {
        return Err(crate::invalid!(
            "k-space coordinates: expected at least one sample, got none"
        ));
    }
    let (hx, hy) = (nx as f64 / 2.0, ny as f64 / 2.0);
    for (i, &[kx, ky]) in coords.iter().enumerate() {
        for (name, v, h) in [("kx", kx, hx), ("ky", ky, hy)] {
            if !v.is_finite() {
                return Err(crate::invalid!(
                    "k-space sample {i}: {name} is {v}; expected a finite coordinate in grid units"
                ));
            }
            let v = v as f64;
            if !(-h..h).contains(&v) {
                return Err(crate::invalid!(
                    "k-space sample {i}: {name} = {v} is outside the grid; expected -{h} <= {name} < {h} \
                     for a {ny}x{nx} image (grid units, BART convention)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bart_layout_for_a_small_trajectory() {
        // bart traj -r -x 8 -y 4: spoke 0 along +ky, spoke 1 at 45°, spoke 2 along +kx, radii ±0.5 … ±3.5.
        let t = Radial::new(8, 8, 4, SpokeAngles::Half).unwrap().coords();
        assert_eq!(t.len(), 32);
        assert!((t[0][0]).abs() < 1e-6 && (t[0][1] + 3.5).abs() < 1e-6);
        assert!((t[7][1] - 3.5).abs() < 1e-6);
        let d = 2.5 / 2f32.sqrt();
        assert!((t[8 + 1][0] + d).abs() < 1e-5 && (t[8 + 1][1] + d).abs() < 1e-5);
        assert!((t[16 + 7][0] - 3.5).abs() < 1e-6 && t[16 + 7][1].abs() < 1e-6);
        // oversampled readout: 2N samples at half-unit spacing
        let o = Radial::oversampled(8, 1, SpokeAngles::Half).unwrap();
        assert_eq!(o.readout_spacing(), 0.5);
        assert!((o.radius(0) + 3.75).abs() < 1e-12 && (o.radius(15) - 3.75).abs() < 1e-12);
    }

    #[test]
    fn golden_angle_increment_and_nyquist_count() {
        let r = Radial::oversampled(256, 3, SpokeAngles::GoldenAngle).unwrap();
        assert!((r.angle(1).to_degrees() - 111.246_117_974_981).abs() < 1e-9);
        assert_eq!(Radial::nyquist_spokes(256), 403);
        assert!(validate(&r.coords(), 256, 256).is_ok());
    }

    #[test]
    fn validation_names_the_problem() {
        let e = validate(&[[0.0, 0.0], [f32::NAN, 0.0]], 8, 8).unwrap_err();
        assert!(e.to_string().contains("sample 1") && e.to_string().contains("finite"));
        let e = validate(&[[0.0, 4.0]], 8, 8).unwrap_err().to_string();
        assert!(e.contains("-4 <= ky < 4"), "{e}");
        assert!(validate(&[[-4.0, 3.999]], 8, 8).is_ok());
        assert!(Radial::new(8, 8, 0, SpokeAngles::Half).is_err());
    }
}
