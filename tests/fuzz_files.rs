//! A bounded, seeded fuzz pass over the raw-data readers of `inferd recon --input`: NPY, NPZ (a real
//! NumPy file), BART .cfl/.hdr and ISMRMRD/MRD HDF5 (written by the ISMRMRD tools); and over the DICOM
//! image reader of `inferd train` (a 16-bit grayscale file written by dcmtk's dump2dcm). Inputs that
//! once crashed a reader are kept under `tests/data/fuzz/` and replayed. Each valid file
//! is mutated (bit flips, random bytes, large integers spliced in, truncation, duplicated runs;
//! mostly in the headers and, for archives, the trailing directory) and read; every read must return
//! data or an error, never panic. `INFERD_FUZZ_CASES` sets the cases per reader (default 1000).

mod common;

use inferd::io::{cfl, mrd, npy, npz};
use num_complex::Complex32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;

fn cases() -> usize {
    std::env::var("INFERD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A position: 40 % in the first 512 bytes, 40 % in the last 512, the rest anywhere.
fn position(rng: &mut ChaCha8Rng, len: usize) -> usize {
    let w = len.min(512);
    match rng.random_range(0..5) {
        0 | 1 => rng.random_range(0..w),
        2 | 3 => len - w + rng.random_range(0..w),
        _ => rng.random_range(0..len),
    }
}

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            break;
        }
        let i = position(rng, b.len());
        match rng.random_range(0..5) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b[i] = rng.random(),
            2 => {
                let big: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
                let n = rng.random_range(1..=8).min(b.len() - i);
                b[i..i + n].copy_from_slice(&big[..n]);
            }
            3 => b.truncate(i),
            _ => {
                let j = rng.random_range(i..b.len().min(i + 32));
                let run = b[i..=j].to_vec();
                b.splice(i..i, run);
            }
        }
    }
    b
}

/// Feeds `cases()` mutants of `seed` to `read`; returns the panics (case index and message).
fn fuzz(name: &str, seed: &[u8], mut read: impl FnMut(&[u8]) -> bool) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(name.len() as u64 * 7919 + 2026);
    let (mut panics, mut read_ok) = (Vec::new(), 0);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..cases() {
        let bytes = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&bytes)));
        if let Ok(ok) = r {
            read_ok += ok as usize;
        }
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!("{name} case {case} ({} bytes): {msg}", bytes.len()));
        }
    }
    std::panic::set_hook(hook);
    println!(
        "{name}: {} cases, {read_ok} still read as valid, {} panics",
        cases(),
        panics.len()
    );
    panics
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn mutated_raw_data_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut panics = Vec::new();

    // NPY: complex64 k-space [1, 2, 8, 8]
    let k: Vec<Complex32> = (0..128)
        .map(|i| Complex32::new(i as f32, -(i as f32)))
        .collect();
    npy::write_c64(&d.join("seed.npy"), &[1, 2, 8, 8], &k).unwrap();
    let seed = std::fs::read(d.join("seed.npy")).unwrap();
    panics.extend(fuzz("npy", &seed, |b| npy::parse(b).is_ok()));

    // NPZ: a real NumPy archive (the held-out test slices)
    let seed = std::fs::read(common::repo().join("tests/data/real_mr_heldout.npz")).unwrap();
    let p = d.join("case.npz");
    panics.extend(fuzz("npz", &seed, |b| {
        write(&p, b);
        npz::read(&p).is_ok()
    }));

    // BART .cfl/.hdr: the text header mutated, the data file cut a third of the time
    cfl::write(&d.join("seed"), &[8, 8, 2], &k).unwrap();
    let hdr = std::fs::read(d.join("seed.hdr")).unwrap();
    let data = std::fs::read(d.join("seed.cfl")).unwrap();
    let base = d.join("case");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    panics.extend(fuzz("cfl", &hdr, |b| {
        write(&base.with_extension("hdr"), b);
        let cut = if rng.random_bool(0.3) {
            rng.random_range(0..data.len())
        } else {
            data.len()
        };
        write(&base.with_extension("cfl"), &data[..cut]);
        cfl::read(&base).is_ok_and(|c| cfl::to_slices(&c).is_ok())
    }));

    // ISMRMRD/MRD HDF5 written by the ISMRMRD tools (the ISMRMRD tools are installed by the test
    // command; the case is skipped with a message where they are missing)
    let seed = d.join("seed.h5");
    let made = Command::new("ismrmrd_generate_cartesian_shepp_logan")
        .args(["-m", "16", "-c", "2", "-o"])
        .arg(&seed)
        .current_dir(d)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if made {
        let seed = std::fs::read(&seed).unwrap();
        let p = d.join("case.h5");
        panics.extend(fuzz("mrd", &seed, |b| {
            write(&p, b);
            mrd::read(&p, mrd::Selection::default()).is_ok()
        }));
    } else {
        println!("mrd: ismrmrd_generate_cartesian_shepp_logan not found, skipped");
    }

    // DICOM: 12×16, 16-bit, rescale slope/intercept, written by dcmtk from a text dump
    let pixels: Vec<String> = (0..12 * 16)
        .map(|i| format!("{:04x}", (i * 37) % 4096))
        .collect();
    let dump = format!(
        "(0008,0016) UI =SecondaryCaptureImageStorage\n(0008,0018) UI [1.2.826.0.1.3680043.10.1.1]\n\
         (0028,0002) US 1\n(0028,0004) CS [MONOCHROME2]\n(0028,0010) US 12\n(0028,0011) US 16\n\
         (0028,0100) US 16\n(0028,0101) US 12\n(0028,0102) US 11\n(0028,0103) US 0\n\
         (0028,1052) DS [-5]\n(0028,1053) DS [2]\n(7fe0,0010) OW {}\n",
        pixels.join("\\")
    );
    std::fs::write(d.join("seed.dump"), dump).unwrap();
    let made = Command::new("dump2dcm")
        .arg(d.join("seed.dump"))
        .arg(d.join("seed.dcm"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if made {
        let seed = d.join("seed.dcm");
        let frames = inferd::io::dicom::read_frames(&seed).unwrap();
        assert_eq!((frames.len(), frames[0].1, frames[0].2), (1, 12, 16));
        assert_eq!(
            frames[0].0[1],
            37.0 * 2.0 - 5.0,
            "rescale slope and intercept"
        );
        let seed = std::fs::read(&seed).unwrap();
        let p = d.join("case.dcm");
        panics.extend(fuzz("dicom", &seed, |b| {
            write(&p, b);
            inferd::io::dicom::read_frames(&p).is_ok()
        }));
    } else {
        println!("dicom: dcmtk's dump2dcm not found, skipped");
    }
    assert!(panics.is_empty(), "{panics:#?}");
}

/// Inputs that once crashed a reader, kept as files (`tests/data/fuzz/<reader>/`): each must be
/// refused with an error. DICOM: Rows = 0 (an empty frame size), NumberOfFrames = 2^62 (a pixel
/// count that overflows).
#[test]
fn the_crash_corpus_gives_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/dicom");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let result = inferd::io::dicom::read_frames(&path);
        assert!(result.is_err(), "{}: {result:?}", path.display());
        println!("{}: {}", path.display(), result.unwrap_err());
        seen += 1;
    }
    assert!(seen >= 2, "the DICOM crash corpus is missing");
}
