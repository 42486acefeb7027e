//! The centred orthonormal FFT against BART's `fft -u` (and its inverse) on the same data.

mod common;

use inferd::io::cfl;
use inferd::mri::fft;
use num_complex::Complex32;

fn max_rel_err(a: &[Complex32], b: &[Complex32]) -> f32 {
    let scale = b.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm())
        .fold(0.0f32, f32::max)
        / scale
}

#[test]
fn forward_and_inverse_match_bart_fft_unitary() {
    let dir = tempfile::tempdir().unwrap();
    // even and odd sizes, two "coils" stacked in BART's COIL dimension
    for &(ny, nx) in &[(64usize, 48usize), (33, 20)] {
        let n = ny * nx * 2;
        let data: Vec<Complex32> = (0..n)
            .map(|i| {
                let t = i as f32;
                Complex32::new((t * 0.37).sin() + (t * 0.011).cos(), (t * 0.13).cos() * 0.5)
            })
            .collect();
        cfl::write(&dir.path().join("x"), &[nx, ny, 1, 2], &data).unwrap();
        common::bart(&["fft", "-u", "3", "x", "k"], dir.path());
        common::bart(&["fft", "-u", "-i", "3", "x", "xi"], dir.path());
        let k_bart = cfl::read(&dir.path().join("k")).unwrap().data;
        let xi_bart = cfl::read(&dir.path().join("xi")).unwrap().data;
        let mut k = data.clone();
        fft::fft2c(&mut k, ny, nx);
        let mut xi = data.clone();
        fft::ifft2c(&mut xi, ny, nx);
        let (ef, ei) = (max_rel_err(&k, &k_bart), max_rel_err(&xi, &xi_bart));
        println!("{ny}x{nx}: forward rel err {ef:.2e}, inverse rel err {ei:.2e}");
        assert!(
            ef <= 1e-5 && ei <= 1e-5,
            "{ny}x{nx}: forward {ef}, inverse {ei}"
        );
    }
}
