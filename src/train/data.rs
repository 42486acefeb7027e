//! Training images: the synthetic MR-like generator, optionally mixed with images from a folder
//! (PNG, NPY `[H, W]` / `[N, H, W]`, or uncompressed grayscale DICOM), resampled to the training size, randomly flipped and rotated by
//! multiples of 90°, and normalised to a maximum of 1.

use crate::io::{dicom, npy, png};
use crate::mri::phantom::SyntheticMr;
use num_complex::Complex32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

pub struct ImageSource {
    synthetic: SyntheticMr,
    folder: Vec<(Vec<f32>, usize, usize)>,
    folder_fraction: f32,
    rng: ChaCha8Rng,
}

/// Bilinear resampling to `[ny, nx]`.
fn resample(img: &[f32], h: usize, w: usize, ny: usize, nx: usize) -> Vec<f32> {
    let mut out = vec![0.0; ny * nx];
    for y in 0..ny {
        let fy = ((y as f32 + 0.5) * h as f32 / ny as f32 - 0.5).clamp(0.0, (h - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(h - 1);
        for x in 0..nx {
            let fx = ((x as f32 + 0.5) * w as f32 / nx as f32 - 0.5).clamp(0.0, (w - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(w - 1);
            let top = img[y0 * w + x0] * (1.0 - tx) + img[y0 * w + x1] * tx;
            let bot = img[y1 * w + x0] * (1.0 - tx) + img[y1 * w + x1] * tx;
            out[y * nx + x] = top * (1.0 - ty) + bot * ty;
        }
    }
    out
}

pub fn load_folder(dir: &Path) -> anyhow::Result<Vec<(Vec<f32>, usize, usize)>> {
    let mut images = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => images.push(png::read_gray(&p)?),
            Some("npy") => {
                let a = npy::read(&p)?;
                let npy::NpyData::F32(v) = a.data else {
                    anyhow::bail!("{}: expected a real image array", p.display())
                };
                match a.shape[..] {
                    [h, w] => images.push((v, h, w)),
                    [n, h, w] => images
                        .extend((0..n).map(|i| (v[i * h * w..(i + 1) * h * w].to_vec(), h, w))),
                    _ => anyhow::bail!(
                        "{}: shape {:?}, expected [H, W] or [N, H, W]",
                        p.display(),
                        a.shape
                    ),
                }
            }
            Some("dcm") => images.extend(dicom::read_frames(&p)?),
            _ if p.is_file() && dicom::is_dicom(&p) => images.extend(dicom::read_frames(&p)?),
            _ => {}
        }
    }
    images.retain(|(v, h, w)| *h >= 8 && *w >= 8 && v.iter().any(|x| *x > 0.0));
    Ok(images)
}

impl ImageSource {
    pub fn new(seed: u64, folder: Option<&Path>, folder_fraction: f32) -> anyhow::Result<Self> {
        let folder = match folder {
            Some(d) => {
                let imgs = load_folder(d)?;
                anyhow::ensure!(
                    !imgs.is_empty(),
                    "no PNG, NPY or DICOM images in {}",
                    d.display()
                );
                imgs
            }
            None => Vec::new(),
        };
        Ok(ImageSource {
            synthetic: SyntheticMr::new(seed),
            folder,
            folder_fraction,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
        })
    }

    /// A complex training image `[n, n]` with magnitude max 1 and a smooth phase.
    pub fn next(&mut self, n: usize) -> Vec<Complex32> {
        if !self.folder.is_empty() && self.rng.random::<f32>() < self.folder_fraction {
            let (img, h, w) = &self.folder[self.rng.random_range(0..self.folder.len())];
            // random square window of 40–100 % of the shorter side, resampled to n × n
            let side = ((*h).min(*w) as f32 * self.rng.random_range(0.4f32..1.0)) as usize;
            let side = side.max(8);
            let (y0, x0) = (
                self.rng.random_range(0..=h - side),
                self.rng.random_range(0..=w - side),
            );
            let window: Vec<f32> = (0..side)
                .flat_map(|y| img[(y0 + y) * w + x0..(y0 + y) * w + x0 + side].to_vec())
                .collect();
            let mut m = resample(&window, side, side, n, n);
            m.iter_mut().for_each(|v| *v = v.max(0.0));
            let rot = self.rng.random_range(0..4);
            let flip = self.rng.random::<bool>();
            let mut t = m.clone();
            for y in 0..n {
                for x in 0..n {
                    let (sy, sx) = match rot {
                        0 => (y, x),
                        1 => (x, n - 1 - y),
                        2 => (n - 1 - y, n - 1 - x),
                        _ => (n - 1 - x, y),
                    };
                    let sx = if flip { n - 1 - sx } else { sx };
                    t[y * n + x] = m[sy * n + sx];
                }
            }
            m = t;
            let peak = m.iter().cloned().fold(0.0f32, f32::max).max(1e-6);
            // borrow the synthetic generator's smooth phase
            let phase = self.synthetic.sample(n, n).complex;
            m.iter()
                .zip(phase)
                .map(|(v, p)| {
                    let u = if p.norm() > 0.0 {
                        p / p.norm()
                    } else {
                        Complex32::new(1.0, 0.0)
                    };
                    u * (v / peak)
                })
                .collect()
        } else {
            self.synthetic.sample(n, n).complex
        }
    }
}
