//! `inferd recon` against a running server: BART .cfl input written by BART itself, NPY input with a
//! mask file, outputs written as NPY and PNG.

mod common;

use common::TestServer;
use inferd::client::recon::{run, ReconArgs};
use inferd::io::{cfl, npy};
use inferd::mri::{coils, fft, masks, metrics};
use inferd::serve::ServeConfig;
use std::path::PathBuf;

fn args(server: &str, input: PathBuf, out: PathBuf) -> ReconArgs {
    common::recon_args(server, input, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconstructs_bart_cfl_and_npy_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // BART writes a 4-coil 96² phantom k-space: [READ, PHS1, 1, COIL]
    common::bart(&["phantom", "-k", "-s", "4", "-x", "96", "ksp"], d);
    let server = TestServer::start(ServeConfig::for_tests()).await;

    // .cfl input, server-generated mask
    let mut a = args(&server.url, d.join("ksp.cfl"), d.join("out_cfl"));
    a.pattern = Some(masks::Pattern::VariableDensity1d);
    run(a).await.unwrap();
    let rec = npy::read(&d.join("out_cfl/recon.npy")).unwrap();
    assert_eq!(rec.shape, vec![1, 96, 96]);
    assert!(d.join("out_cfl/slice_000.png").exists());

    // the same k-space as NPY [slices, coils, ky, kx] with an explicit mask file
    let c = cfl::read(&d.join("ksp")).unwrap();
    let (_, nc, ny, nx, k) = cfl::to_slices(&c).unwrap();
    let mut two = k.clone();
    two.extend_from_slice(&k);
    npy::write_c64(&d.join("ksp.npy"), &[2, nc, ny, nx], &two).unwrap();
    let mask = masks::MaskSpec::new(masks::Pattern::Equispaced1d, 4.0, 1)
        .generate(ny, nx)
        .unwrap();
    npy::write_f32(&d.join("mask.npy"), &[ny, nx], &mask).unwrap();
    let mut a = args(&server.url, d.join("ksp.npy"), d.join("out_npy"));
    a.mask = Some(d.join("mask.npy"));
    run(a).await.unwrap();
    let rec = npy::read(&d.join("out_npy/recon.npy")).unwrap();
    let zf = npy::read(&d.join("out_npy/zero_filled.npy")).unwrap();
    assert_eq!(rec.shape, vec![2, 96, 96]);
    let (npy::NpyData::F32(rec), npy::NpyData::F32(zf)) = (rec.data, zf.data) else {
        panic!()
    };
    let mut img = k.clone();
    fft::ifft2c(&mut img, ny, nx);
    let gt = coils::rss(&img, ny * nx);
    for s in 0..2 {
        let r = &rec[s * ny * nx..(s + 1) * ny * nx];
        let z = &zf[s * ny * nx..(s + 1) * ny * nx];
        let (ez, er) = (metrics::nmse(&gt, z), metrics::nmse(&gt, r));
        println!("slice {s}: NMSE zero-filled {ez:.4} → inferd {er:.4}");
        assert!(er < ez);
    }
    assert!(d.join("out_npy/slice_001.png").exists());
    server.stop().await;
}
