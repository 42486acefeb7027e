//! Image quality metrics in the fastMRI convention: SSIM with a 7×7 uniform window, k1 = 0.01,
//! k2 = 0.03, sample covariance, data range = max of the reference, averaged over the window centres
//! that fit inside the image; PSNR with the same data range; NMSE = ‖gt − pred‖² / ‖gt‖².

pub fn nmse(gt: &[f32], pred: &[f32]) -> f64 {
    let num: f64 = gt
        .iter()
        .zip(pred)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = gt.iter().map(|a| (*a as f64).powi(2)).sum();
    num / den
}

pub fn psnr(gt: &[f32], pred: &[f32]) -> f64 {
    let max = gt.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let mse: f64 = gt
        .iter()
        .zip(pred)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / gt.len() as f64;
    10.0 * (max * max / mse).log10()
}

/// SSIM of one `[ny, nx]` image pair (as `skimage.metrics.structural_similarity(gt, pred, win_size=7,
/// data_range=gt.max())`, which fastMRI uses).
pub fn ssim(gt: &[f32], pred: &[f32], ny: usize, nx: usize) -> f64 {
    const W: usize = 7;
    let range = gt.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let np = (W * W) as f64;
    let cov_norm = np / (np - 1.0);
    let (mut total, mut count) = (0.0f64, 0usize);
    for y in 0..=ny.saturating_sub(W) {
        for x in 0..=nx.saturating_sub(W) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for dy in 0..W {
                for dx in 0..W {
                    let i = (y + dy) * nx + x + dx;
                    let (a, b) = (gt[i] as f64, pred[i] as f64);
                    sa += a;
                    sb += b;
                    saa += a * a;
                    sbb += b * b;
                    sab += a * b;
                }
            }
            let (ma, mb) = (sa / np, sb / np);
            let va = cov_norm * (saa / np - ma * ma);
            let vb = cov_norm * (sbb / np - mb * mb);
            let vab = cov_norm * (sab / np - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_images_are_perfect() {
        let img: Vec<f32> = (0..400).map(|i| ((i * 37) % 17) as f32 / 17.0).collect();
        assert!((ssim(&img, &img, 20, 20) - 1.0).abs() < 1e-12);
        assert!(psnr(&img, &img).is_infinite());
        assert_eq!(nmse(&img, &img), 0.0);
    }

    #[test]
    fn noise_lowers_ssim_and_psnr() {
        let img: Vec<f32> = (0..1024).map(|i| (i / 32) as f32 / 32.0).collect();
        let noisy: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.05 } else { -0.05 })
            .collect();
        let s = ssim(&img, &noisy, 32, 32);
        assert!(s < 0.9 && s > 0.0, "ssim {s}");
        // MSE = 0.0025 with max 31/32 → PSNR = 10 log10((31/32)^2 / 0.0025)
        let expect = 10.0 * ((31.0f64 / 32.0).powi(2) / 0.0025).log10();
        assert!((psnr(&img, &noisy) - expect).abs() < 1e-3);
    }
}
