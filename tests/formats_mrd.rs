//! Raw-data inputs of `inferd recon`: ISMRMRD / MRD files written by the ISMRMRD tools
//! (`ismrmrd_generate_cartesian_shepp_logan`) and checked against the ISMRMRD reference
//! reconstruction (`ismrmrd_recon_cartesian_2d`) and the generator's ground-truth phantom; fastMRI
//! and NPZ files written by h5py / NumPy from known k-space; malformed files.

mod common;

use common::TestServer;
use inferd::client::recon::{read_input, run, ReconArgs};
use inferd::io::{mrd, npy};
use inferd::mri::{coils, fft, metrics};
use inferd::serve::ServeConfig;
use num_complex::Complex32;
use std::path::{Path, PathBuf};
use std::process::Command;

fn py(script: &str) -> String {
    common::run(common::python().arg("-c").arg(script))
}

/// A float32 NPY written by Python.
fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).unwrap();
    let npy::NpyData::F32(v) = a.data else {
        panic!("{} is not real", path.display())
    };
    (a.shape, v)
}

/// Root-sum-of-squares image of one slice `[coils, ny, nx]`.
fn rss(k: &[Complex32], ny: usize, nx: usize) -> Vec<f32> {
    let mut img = k.to_vec();
    fft::ifft2c(&mut img, ny, nx);
    coils::rss(&img, ny * nx)
}

/// `a` scaled by the least-squares factor that best matches `b`, and that factor.
fn ls_scaled(a: &[f32], b: &[f32]) -> (Vec<f32>, f64) {
    let ab: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let aa: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    let s = ab / aa;
    (a.iter().map(|x| (*x as f64 * s) as f32).collect(), s)
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64 - ma, *y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

/// |/dataset/phantom| of slice 0 as `[ny, nx]`.
fn phantom(file: &Path, npy_out: &Path) -> Vec<f32> {
    py(&format!(
        "import h5py, numpy as np\n\
         p = h5py.File({f:?}, 'r')['/dataset/phantom'][0]\n\
         np.save({o:?}, np.abs(p['real'] + 1j * p['imag']).astype(np.float32))",
        f = file.to_str().unwrap(),
        o = npy_out.to_str().unwrap()
    ));
    read_f32(npy_out).1
}

fn args(server: &str, input: PathBuf, out: PathBuf) -> ReconArgs {
    common::recon_args(server, input, out)
}

#[test]
fn fully_sampled_mrd_matches_the_ismrmrd_reference_recon_and_the_phantom() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = common::shepp_logan_mrd(d, "full.h5", &["-m", "256", "-c", "8"]);
    let input = read_input(&f).unwrap();
    let v = &input.volume;
    // 2× readout oversampling (512 samples) removed: the reconSpace matrix is 256 × 256.
    assert_eq!((v.slices, v.coils, v.ny, v.nx), (1, 8, 256, 256));
    let mask = input.mask.as_ref().unwrap();
    assert!(mask.iter().all(|&m| m == 1.0), "fully sampled");
    assert_eq!(
        input.info.institution.as_deref(),
        Some("ISMRM Synthetic Imaging Lab")
    );
    assert_eq!(input.info.fov_mm, Some([300.0, 300.0]));
    assert_eq!(input.info.slice_thickness_mm, Some(6.0));
    assert!(input.info.recon_matrix.is_none() && !input.info.transpose_output);
    // The generator leaves position and directions at zero: no slice placement is derived.
    assert!(input.info.slices.is_empty());
    let ours = rss(v.slice(0), 256, 256);

    // ISMRMRD's reference: FFT of the oversampled readout, RSS over coils, central 256 columns.
    // It writes /dataset/cpp/data [1, 1, 1, ny, nx] float32, rows along phase encoding like inferd;
    // its FFT is not orthonormal, so images are compared after a least-squares scale.
    common::run(
        Command::new("ismrmrd_recon_cartesian_2d")
            .arg(&f)
            .current_dir(d),
    );
    py(&format!(
        "import h5py, numpy as np\n\
         np.save({o:?}, np.asarray(h5py.File({f:?}, 'r')['/dataset/cpp/data'], dtype=np.float32))",
        f = f.to_str().unwrap(),
        o = d.join("cpp.npy").to_str().unwrap()
    ));
    let (shape, reference) = read_f32(&d.join("cpp.npy"));
    assert_eq!(shape, vec![1, 1, 1, 256, 256]);
    let (scaled, s) = ls_scaled(&ours, &reference);
    let err = metrics::nmse(&reference, &scaled);
    println!("vs ismrmrd_recon_cartesian_2d: NMSE {err:.2e} (scale {s:.4})");
    // Measured: 7.5e-15 with scale 362.04 = sqrt(512 · 256), the unnormalised FFT size.
    assert!(err < 1e-8, "NMSE {err} against the ISMRMRD reference");

    // Ground truth: the phantom weighted by the generator's normalised coil maps, noise 0.05.
    let gt = phantom(&f, &d.join("phantom.npy"));
    let (scaled, _) = ls_scaled(&ours, &gt);
    let (c, e) = (correlation(&ours, &gt), metrics::nmse(&gt, &scaled));
    println!("vs /dataset/phantom: correlation {c:.4}, NMSE {e:.4}");
    // Measured: correlation 0.980, NMSE 0.074 (noise and the RSS of the coil maps remain).
    assert!(c > 0.95 && e < 0.1, "correlation {c}, NMSE {e}");
}

#[test]
fn undersampled_mrd_with_noise_and_repetitions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = common::shepp_logan_mrd(
        d,
        "us.h5",
        &[
            "-m", "128", "-c", "8", "-a", "2", "-w", "32", "-C", "-r", "2",
        ],
    );
    let input = read_input(&f).unwrap();
    let v = &input.volume;
    assert_eq!((v.slices, v.coils, v.ny, v.nx), (1, 8, 128, 128));
    // Every 2nd line plus the 32 central lines (64 − 16 .. 64 + 16), the odd ones of which are
    // calibration-only acquisitions (flag 20) kept as measured data.
    let mask = input.mask.as_ref().unwrap();
    let plane = 128 * 128;
    for row in 0..128 {
        let want = row % 2 == 0 || (48..80).contains(&row);
        assert!(
            mask[row * 128..(row + 1) * 128]
                .iter()
                .all(|&m| (m == 1.0) == want),
            "row {row}"
        );
        let energy: f32 = (0..8)
            .map(|c| {
                v.slice(0)[c * plane + row * 128..][..128]
                    .iter()
                    .map(|z| z.norm_sqr())
                    .sum::<f32>()
            })
            .sum();
        assert_eq!(energy > 0.0, want, "row {row} data");
    }

    // Noise pre-whitening runs: the same file without its noise acquisition reads differently, but
    // the generator's noise is white and equal across coils, so the RSS image barely changes.
    py(&format!(
        "import h5py, numpy as np\n\
         src = h5py.File({f:?}, 'r')\n\
         d = src['/dataset/data']\n\
         keep = [i for i in range(d.shape[0]) if not (int(d[i]['head']['flags']) >> 18) & 1]\n\
         with h5py.File({o:?}, 'w') as dst:\n\
         \x20   dst.create_dataset('/dataset/data', data=d[keep], dtype=d.dtype)\n\
         \x20   dst.create_dataset('/dataset/xml', data=src['/dataset/xml'][()], dtype=src['/dataset/xml'].dtype)",
        f = f.to_str().unwrap(),
        o = d.join("nonoise.h5").to_str().unwrap()
    ));
    let plain = read_input(&d.join("nonoise.h5")).unwrap();
    let (a, b) = (
        rss(v.slice(0), 128, 128),
        rss(plain.volume.slice(0), 128, 128),
    );
    let kdiff: f64 = v
        .data
        .iter()
        .zip(&plain.volume.data)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum::<f64>()
        / plain
            .volume
            .data
            .iter()
            .map(|x| x.norm_sqr() as f64)
            .sum::<f64>();
    let idiff = metrics::nmse(&b, &a);
    println!(
        "whitened vs unwhitened: k-space relative difference {kdiff:.2e}, RSS NMSE {idiff:.2e}"
    );
    assert!(kdiff > 1e-6, "whitening changed nothing");
    assert!(idiff < 1e-2, "whitening changed the image: NMSE {idiff}");

    // Repetitions: the file holds 4 (index 0..=3 in the header); the same image in each.
    let rep1 = mrd::read(
        &f,
        mrd::Selection {
            repetition: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let r1 = rss(&rep1.data, 128, 128);
    let e = metrics::nmse(&a, &r1);
    println!("repetition 1 vs 0: NMSE {e:.2e}");
    assert!(e < 0.05, "{e}");
    let err = mrd::read(
        &f,
        mrd::Selection {
            repetition: 9,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("repetition 9 is out of range"),
        "{err}"
    );
    let err = mrd::read(
        &f,
        mrd::Selection {
            contrast: 1,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("contrast 1"), "{err}");

    // Through a real server with the shipped Cartesian model, sampling from the file's mask.
    let gt = phantom(&f, &d.join("phantom.npy"));
    let rt = runtime();
    // The same phantom fully sampled (another noise draw): the best the undersampled data can give.
    let full = read_input(&common::shepp_logan_mrd(
        d,
        "full.h5",
        &["-m", "128", "-c", "8"],
    ))
    .unwrap();
    let gt_full = rss(full.volume.slice(0), 128, 128);
    rt.block_on(async {
        let server = TestServer::start(ServeConfig::for_tests()).await;
        for dc in ["hard", "sense"] {
            let mut a = args(&server.url, f.clone(), d.join(dc));
            a.dc = dc.into();
            run(a).await.unwrap();
        }
        server.stop().await;
    });
    let nmse = |g: &[f32], x: &[f32]| metrics::nmse(g, &ls_scaled(x, g).0);
    let (_, zf) = read_f32(&d.join("hard/zero_filled.npy"));
    let (ez, fz) = (nmse(&gt, &zf), nmse(&gt_full, &zf));
    let mut results = Vec::new();
    for dc in ["hard", "sense"] {
        let (shape, recon) = read_f32(&d.join(dc).join("recon.npy"));
        assert_eq!(shape, vec![1, 128, 128]);
        let (er, fr) = (nmse(&gt, &recon), nmse(&gt_full, &recon));
        println!(
            "{dc}: NMSE (least-squares scale) vs phantom: zero-filled {ez:.4}, inferd {er:.4}; vs \
             the fully sampled image: zero-filled {fz:.4}, inferd {fr:.4}"
        );
        results.push((er, fr));
    }
    // Measured (128², 8 coils, 2× equispaced + 32 calibration lines, noise 0.05, noise
    // calibration, 2 repetitions), shipped recon-unrolled: vs phantom zero-filled 0.106, hard final
    // DC 0.067, SENSE final DC (λ 10, 10 iterations) 0.040; vs the fully sampled image 0.040, 0.014
    // and 0.033. The unrolled passes already combine the coils with SENSE data consistency, so
    // both final rules undo the equispaced aliasing; hard DC keeps the measured lines exactly and
    // is closest to the fully sampled image, SENSE also denoises them and is closest to the
    // noiseless phantom.
    let (hard, sense) = (results[0], results[1]);
    assert!(
        hard.0 < 0.8 * ez && hard.1 < 0.8 * fz,
        "hard {hard:?} vs zero-filled ({ez}, {fz})"
    );
    assert!(
        sense.0 < 0.8 * ez && sense.1 < fz,
        "SENSE {sense:?} vs zero-filled ({ez}, {fz})"
    );
}

#[test]
fn mrd_through_the_cli_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = common::shepp_logan_mrd(
        d,
        "cli.mrd",
        &["-m", "64", "-c", "4", "-a", "2", "-w", "16"],
    );
    let rt = runtime();
    let server = rt.block_on(TestServer::start(ServeConfig::for_tests()));
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_inferd"))
            .args(["recon", "--server", &server.url, "--input"])
            .arg(&f)
            .arg("--out")
            .arg(d.join("out")),
    );
    assert!(out.contains("wrote 1 slices"), "{out}");
    rt.block_on(server.stop());
    let (shape, recon) = read_f32(&d.join("out/recon.npy"));
    assert_eq!(shape, vec![1, 64, 64]);
    assert!(recon.iter().all(|v| v.is_finite()) && recon.iter().any(|&v| v > 0.0));
    assert!(d.join("out/slice_000.png").exists());
}

/// A k-space `[slices, coils, h, w]` in fastMRI's orientation and what inferd must make of it,
/// computed by NumPy: transposed to `[.., w, h]`, readout oversampling removed by a centred
/// orthonormal inverse FFT along the readout, a crop to the central `h/2` samples and a forward FFT.
/// A runtime for the tests that drive the async client from synchronous code.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes the fastMRI and NPZ files of [`FASTMRI`] into `d`.
fn write_fastmri_files(d: &Path) {
    common::run(
        common::python()
            .arg("-c")
            .arg(FASTMRI)
            .arg(d.to_str().unwrap()),
    );
}

const FASTMRI: &str = r#"
import h5py, numpy as np, sys
out = sys.argv[1]
rng = np.random.default_rng(7)
h, w = 32, 20
def fftc(x, axis):
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x, axes=axis), axis=axis, norm='ortho'), axes=axis)
def ifftc(x, axis):
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(x, axes=axis), axis=axis, norm='ortho'), axes=axis)
header = '''<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
 <subjectInformation><patientID>KNEE-1</patientID></subjectInformation>
 <encoding>
  <encodedSpace><matrixSize><x>32</x><y>20</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>280</x><y>140</y><z>3</z></fieldOfView_mm></encodedSpace>
  <reconSpace><matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
   <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
  <trajectory>cartesian</trajectory>
 </encoding>
</ismrmrdHeader>'''
for name, shape in [('multi', (2, 3, h, w)), ('single', (2, h, w))]:
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    line = np.zeros(w, bool); line[::3] = True; line[w//2 - 2:w//2 + 2] = True
    k[..., ~line] = 0
    with h5py.File(f'{out}/{name}.h5', 'w') as f:
        f.create_dataset('kspace', data=k, chunks=(1,) + shape[1:], compression='gzip')
        if name == 'multi':
            f['mask'] = line  # h5py stores bool as an int8 enumeration
        else:
            f['mask'] = np.broadcast_to(line, (h, w)).astype(np.uint8)
        f['ismrmrd_header'] = header.encode()
        f['reconstruction_rss'] = np.zeros((2, 16, 16), np.float32)
    t = np.swapaxes(k, -1, -2)
    img = ifftc(t, -1)
    img = img[..., h//2 - 8:h//2 + 8]
    e = fftc(img, -1).astype(np.complex64)
    if name == 'single':
        e = e[:, None]
    np.save(f'{out}/{name}_expected.npy', e)
    np.save(f'{out}/{name}_mask.npy', np.broadcast_to(line[:, None], (w, 16)).astype(np.float32))
k = (rng.standard_normal((2, 3, 8, 6)) + 1j * rng.standard_normal((2, 3, 8, 6))).astype(np.complex64)
m = (rng.random((8, 6)) > 0.5).astype(np.float32)
np.savez_compressed(f'{out}/deflated.npz', kspace=k, mask=m)
np.savez(f'{out}/stored.npz', kspace=k)
np.save(f'{out}/npz_kspace.npy', k)
np.save(f'{out}/npz_mask.npy', m)
"#;

#[test]
fn fastmri_and_npz_inputs_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fastmri_files(d);
    let close = |got: &[Complex32], want: &[Complex32]| {
        assert_eq!(got.len(), want.len());
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).norm_sqr() as f64)
            .sum();
        let den: f64 = want.iter().map(|b| b.norm_sqr() as f64).sum();
        let rel = (num / den).sqrt();
        assert!(rel < 1e-5, "relative error {rel}");
        rel
    };
    for (name, coils) in [("multi", 3), ("single", 1)] {
        let input = read_input(&d.join(format!("{name}.h5"))).unwrap();
        let v = &input.volume;
        // h = 32 readout samples (2× oversampled) along axis −2, w = 20 phase-encoding lines last.
        assert_eq!(
            (v.slices, v.coils, v.ny, v.nx),
            (2, coils, 20, 16),
            "{name}"
        );
        let e = npy::read(&d.join(format!("{name}_expected.npy"))).unwrap();
        assert_eq!(e.shape, vec![2, coils, 20, 16]);
        let npy::NpyData::C64(want) = e.data else {
            panic!()
        };
        let rel = close(&v.data, &want);
        println!("fastMRI {name}-coil: relative k-space error {rel:.1e}");
        let (_, m) = read_f32(&d.join(format!("{name}_mask.npy")));
        assert_eq!(input.mask.as_deref(), Some(&m[..]), "{name} mask");
        assert_eq!(input.info.patient_id.as_deref(), Some("KNEE-1"));
        // reconSpace 16 × 16: 16 of the 20 phase-encoding rows, all 16 readout columns.
        assert_eq!(input.info.recon_matrix, Some([16, 16]));
        assert!(input.info.transpose_output);
    }

    let (_, m) = read_f32(&d.join("npz_mask.npy"));
    let k = npy::read(&d.join("npz_kspace.npy")).unwrap();
    let npy::NpyData::C64(k) = k.data else {
        panic!()
    };
    let deflated = read_input(&d.join("deflated.npz")).unwrap();
    assert_eq!(deflated.volume.data, k);
    assert_eq!(
        (
            deflated.volume.slices,
            deflated.volume.coils,
            deflated.volume.ny,
            deflated.volume.nx
        ),
        (2, 3, 8, 6)
    );
    assert_eq!(deflated.mask.as_deref(), Some(&m[..]));
    let stored = read_input(&d.join("stored.npz")).unwrap();
    assert_eq!(stored.volume.data, k);
    assert!(stored.mask.is_none());
}

fn error_of(path: &Path) -> String {
    match read_input(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = common::shepp_logan_mrd(d, "ok.h5", &["-m", "32", "-c", "2"]);
    let bytes = std::fs::read(&f).unwrap();

    std::fs::write(d.join("garbage.h5"), b"this is not HDF5 at all").unwrap();
    let e = error_of(&d.join("garbage.h5"));
    assert!(e.contains("not an HDF5 file"), "{e}");

    std::fs::write(d.join("truncated.h5"), &bytes[..bytes.len() / 3]).unwrap();
    let e = error_of(&d.join("truncated.h5"));
    assert!(
        e.contains("truncated.h5") && e.contains("truncated HDF5 file"),
        "{e}"
    );

    let edit = |name: &str, body: &str| -> PathBuf {
        let out = d.join(name);
        std::fs::copy(&f, &out).unwrap();
        py(&format!(
            "import h5py, numpy as np\nf = h5py.File({o:?}, 'a')\n{body}",
            o = out.to_str().unwrap()
        ));
        out
    };
    let e = error_of(&edit("noxml.h5", "del f['/dataset/xml']"));
    assert!(e.contains("/dataset/xml"), "{e}");

    let e = error_of(&edit(
        "names.h5",
        "del f['/dataset']\nf['images'] = np.zeros(3)\nf['raw'] = np.zeros(3)",
    ));
    assert!(
        e.contains("neither MRD") && e.contains("\"images\"") && e.contains("\"raw\""),
        "{e}"
    );

    let set_xml = |name: &str, from: &str, to: &str| -> PathBuf {
        edit(
            name,
            &format!(
                "x = f['/dataset/xml'][0]\nx = (x.decode() if isinstance(x, bytes) else x).replace({from:?}, {to:?})\n\
                 del f['/dataset/xml']\n\
                 f.create_dataset('/dataset/xml', data=[x], dtype=h5py.string_dtype('ascii'))"
            ),
        )
    };
    let e = error_of(&set_xml(
        "radial.h5",
        "<trajectory>cartesian",
        "<trajectory>radial",
    ));
    assert!(e.contains("radial trajectory is not supported"), "{e}");

    // The header's encoded readout (64 samples, 2× oversampled) shrunk to 32: the acquisitions'
    // 64 samples no longer fit.
    let e = error_of(&set_xml("samples.h5", "<x>64</x>", "<x>32</x>"));
    assert!(e.contains("mismatched sample counts"), "{e}");

    // An acquisition claiming more samples than its data holds.
    let e = error_of(&edit(
        "count.h5",
        "d = f['/dataset/data']\nr = d[3]\nr['head']['number_of_samples'] = 50\nd[3] = r",
    ));
    assert!(
        e.contains("acquisition 3") && e.contains("mismatched sample counts"),
        "{e}"
    );

    let e = error_of(&d.join("missing.h5"));
    assert!(e.contains("cannot read"), "{e}");
}

/// `inferd recon` on a fastMRI file answers in the file's own orientation and reconstruction
/// matrix: the zero-filled output equals NumPy's root-sum-of-squares of the file's k-space
/// (centred orthonormal inverse FFT over the file's axes), centre-cropped to reconSpace (16 × 16 of
/// the 32 × 20 readout-oversampled grid).
#[test]
fn fastmri_outputs_come_back_in_the_file_orientation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fastmri_files(d);
    common::run(
        common::python()
            .arg("-c")
            .arg(
                r#"
import sys, h5py, numpy as np
d = sys.argv[1]
k = np.array(h5py.File(f"{d}/multi.h5")["kspace"])
img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
img = img[..., 16 - 8:16 + 8, 10 - 8:10 + 8]
np.save(f"{d}/zf_expected.npy", np.sqrt((np.abs(img) ** 2).sum(1)).astype(np.float32))
"#,
            )
            .arg(d.to_str().unwrap()),
    );
    let rt = runtime();
    rt.block_on(async {
        let server = TestServer::start(ServeConfig::for_tests()).await;
        run(args(&server.url, d.join("multi.h5"), d.join("out")))
            .await
            .unwrap();
        server.stop().await;
    });
    let (shape, zf) = read_f32(&d.join("out/zero_filled.npy"));
    let (want_shape, want) = read_f32(&d.join("zf_expected.npy"));
    assert_eq!(shape, vec![2, 16, 16]);
    assert_eq!(shape, want_shape);
    let num: f32 = zf.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f32 = want.iter().map(|b| b * b).sum();
    let rel = (num / den).sqrt();
    assert!(
        rel < 1e-4,
        "zero-filled vs NumPy in the file's orientation: {rel}"
    );
    let (recon_shape, _) = read_f32(&d.join("out/recon.npy"));
    assert_eq!(recon_shape, vec![2, 16, 16]);
}
