//! fastMRI HDF5 files: `kspace` `(slices, coils, h, w)` complex64 (multi-coil) or `(slices, h, w)`
//! (single-coil), an optional `mask` and the `ismrmrd_header` XML; `reconstruction_rss` and
//! `reconstruction_esc` are ignored.
//!
//! fastMRI stores the readout along `h` (axis −2, oversampled 2×, e.g. 640) and phase encoding along
//! `w` (the last axis). The reader transposes each plane into inferd's convention (ky = phase
//! encoding = rows, kx = readout = columns) and removes the readout oversampling (encodedSpace x /
//! reconSpace x from the header; 2× when there is no header), so a knee volume of `(s, c, 640, 368)`
//! becomes `[s, c, 368, 320]`. fastMRI's reference images (`reconstruction_rss`, 320 × 320) are
//! the centre crop of the images in the file's orientation, rows along the readout: the returned
//! [`AcquisitionInfo`](super::acquisition::AcquisitionInfo) says so with `recon_matrix` (in inferd's orientation) and `transpose_output`.
//!
//! The mask is 1-D over `w` (sampled phase-encoding lines) or 2-D `(h, w)`; values ≠ 0 are sampled.

use super::h5::H5File;
use super::kspace::{crop_readout, transpose_planes, RawKspace};
use super::mrd;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub fn read(path: &Path) -> Result<RawKspace> {
    let f = H5File::open(path)?;
    read_file(&f, &path.display().to_string())
}

pub fn read_file(f: &H5File, name: &str) -> Result<RawKspace> {
    let ds = f.dataset("kspace")?;
    let (slices, coils, h, w) = match *ds.shape() {
        [s, c, h, w] => (s, c, h, w),
        [s, h, w] => (s, 1, h, w),
        ref other => bail!(
            "{name}: kspace has shape {other:?}, expected (slices, coils, h, w) or (slices, h, w)"
        ),
    };
    if slices * coils * h * w == 0 {
        bail!("{name}: kspace is empty");
    }
    let k = ds.read_c64().with_context(|| format!("{name}: kspace"))?;
    let header = if f.has_dataset("ismrmrd_header") {
        let xml = f.dataset("ismrmrd_header")?.read_string()?;
        Some(mrd::parse_header(&xml).with_context(|| format!("{name}: ismrmrd_header"))?)
    } else {
        None
    };
    // Readout length after removing oversampling.
    let nx = match &header {
        Some(hd) if hd.encoded_matrix[0] == h && hd.recon_matrix[0] <= h => {
            hd.recon_matrix[0].max(1)
        }
        Some(hd) if hd.encoded_matrix[0] != h => bail!(
            "{name}: kspace has {h} readout samples (axis -2) but ismrmrd_header encodes {}",
            hd.encoded_matrix[0]
        ),
        _ if h % 2 == 0 => h / 2,
        _ => h,
    };
    let ny = w;
    let t = transpose_planes(&k, h, w); // [.., w, h]: rows = phase encoding, columns = readout
    let data = crop_readout(&t, h, nx);

    let mask = if f.has_dataset("mask") {
        let m = f.dataset("mask")?;
        let v = m.read_f32().with_context(|| format!("{name}: mask"))?;
        let lines: Vec<bool> = match *m.shape() {
            [n] if n == w => v.iter().map(|&x| x != 0.0).collect(),
            [mh, mw] if mh == h && mw == w => {
                // Removing oversampling mixes a line's readout samples: each line must be measured
                // completely or not at all.
                (0..w)
                    .map(|c| {
                        let n = (0..h).filter(|&r| v[r * w + c] != 0.0).count();
                        if n != 0 && n != h && nx != h {
                            bail!(
                                "{name}: the 2-D mask samples part of the readout of line {c}; \
                                 readout oversampling cannot be removed from such data"
                            );
                        }
                        Ok(n != 0)
                    })
                    .collect::<Result<_>>()?
            }
            ref other => bail!(
                "{name}: mask has shape {other:?}, expected ({w},) over the last axis or ({h}, {w})"
            ),
        };
        let mut mask = vec![0f32; ny * nx];
        for (row, _) in lines.iter().enumerate().filter(|(_, &on)| on) {
            mask[row * nx..(row + 1) * nx].fill(1.0);
        }
        Some(mask)
    } else {
        None
    };

    // fastMRI's reference images are the reconSpace crop (320 × 320) in the file's orientation.
    let recon = header
        .as_ref()
        .map(|hd| [hd.recon_matrix[1], hd.recon_matrix[0]]); // [rows = phase, cols = readout]
    let mut info = header.map(|hd| hd.info).unwrap_or_default();
    if let Some([ry, rx]) = recon {
        if (ry > 0 && ry < ny) || (rx > 0 && rx < nx) {
            info.recon_matrix = Some([ry.clamp(1, ny), rx.clamp(1, nx)]);
        }
    }
    info.transpose_output = true;
    Ok(RawKspace {
        slices,
        coils,
        ny,
        nx,
        data,
        mask,
        info,
    })
}
