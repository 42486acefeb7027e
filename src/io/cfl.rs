//! BART `.cfl`/`.hdr` pairs: header `# Dimensions\n<d0> <d1> ...`, data complex64 interleaved,
//! column-major (first dimension fastest). BART's dimension order is READ, PHS1, PHS2, COIL, ...

use num_complex::Complex32;
use std::path::{Path, PathBuf};

pub struct Cfl {
    /// Dimensions in BART order (first fastest).
    pub dims: Vec<usize>,
    pub data: Vec<Complex32>,
}

fn base(path: &Path) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("cfl") | Some("hdr") => path.with_extension(""),
        _ => path.to_path_buf(),
    }
}

pub fn read(path: &Path) -> anyhow::Result<Cfl> {
    let b = base(path);
    let hdr = std::fs::read_to_string(b.with_extension("hdr"))
        .map_err(|e| anyhow::anyhow!("cannot read {}.hdr: {e}", b.display()))?;
    let mut lines = hdr.lines().filter(|l| !l.trim().is_empty());
    anyhow::ensure!(
        lines
            .next()
            .map(|l| l.trim_start().starts_with("# Dimensions"))
            == Some(true),
        "{}.hdr: missing '# Dimensions'",
        b.display()
    );
    let dims = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}.hdr: no dimensions line", b.display()))?
        .split_whitespace()
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| anyhow::anyhow!("bad dimension {s:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n: usize = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}.hdr: dimensions {dims:?} have more elements than fit in memory",
                b.display()
            )
        })?;
    let bytes = std::fs::read(b.with_extension("cfl"))
        .map_err(|e| anyhow::anyhow!("cannot read {}.cfl: {e}", b.display()))?;
    anyhow::ensure!(
        bytes.len() == n * 8,
        "{}.cfl has {} bytes, dimensions {dims:?} need {}",
        b.display(),
        bytes.len(),
        n * 8
    );
    let data = super::le_c64s(&bytes);
    Ok(Cfl { dims, data })
}

pub fn write(path: &Path, dims: &[usize], data: &[Complex32]) -> anyhow::Result<()> {
    let b = base(path);
    anyhow::ensure!(
        dims.iter().product::<usize>() == data.len(),
        "dims {dims:?} do not match {} values",
        data.len()
    );
    let dims_s: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    std::fs::write(
        b.with_extension("hdr"),
        format!("# Dimensions\n{}\n", dims_s.join(" ")),
    )?;
    let body: Vec<u8> = data
        .iter()
        .flat_map(|v| v.re.to_le_bytes().into_iter().chain(v.im.to_le_bytes()))
        .collect();
    std::fs::write(b.with_extension("cfl"), body)?;
    Ok(())
}

/// Reorders BART k-space `[READ, PHS1, PHS2(slices), COIL]` into inferd's row-major
/// `[slices, coils, ky, kx]` (ky = PHS1, kx = READ). Returns `(slices, coils, ny, nx, data)`.
pub fn to_slices(cfl: &Cfl) -> anyhow::Result<(usize, usize, usize, usize, Vec<Complex32>)> {
    let d = |i: usize| cfl.dims.get(i).copied().unwrap_or(1);
    anyhow::ensure!(
        cfl.dims.iter().skip(4).all(|&x| x == 1),
        "only READ, PHS1, PHS2 (slices) and COIL dimensions may exceed 1, got {:?}",
        cfl.dims
    );
    let (nx, ny, ns, nc) = (d(0), d(1), d(2), d(3));
    let mut out = vec![Complex32::default(); cfl.data.len()];
    for s in 0..ns {
        for c in 0..nc {
            for y in 0..ny {
                for x in 0..nx {
                    out[((s * nc + c) * ny + y) * nx + x] =
                        cfl.data[x + nx * (y + ny * (s + ns * c))];
                }
            }
        }
    }
    Ok((ns, nc, ny, nx, out))
}
