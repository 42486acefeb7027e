//! NumPy `.npy` files (format versions 1–3): little-endian float32, float64, complex64, complex128,
//! int64, int32, uint8 and bool arrays in C order, read into f32 / complex64 / i64; float32, complex64
//! and int64 written.

use num_complex::Complex32;
use std::io::{Read, Write};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    C64(Vec<Complex32>),
    /// Integer arrays (int64 and int32), e.g. edge indices.
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

fn parse_header(h: &str) -> anyhow::Result<(String, bool, Vec<usize>)> {
    let field = |key: &str| -> anyhow::Result<&str> {
        let start = h
            .find(&format!("'{key}'"))
            .ok_or_else(|| anyhow::anyhow!("npy header has no '{key}'"))?;
        let rest = &h[start + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| anyhow::anyhow!("malformed npy header"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr = &descr[..descr
        .find(['\'', '"'])
        .ok_or_else(|| anyhow::anyhow!("malformed descr"))?];
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_s = field("shape")?;
    let open = shape_s
        .find('(')
        .ok_or_else(|| anyhow::anyhow!("malformed shape"))?;
    let close = shape_s
        .find(')')
        .ok_or_else(|| anyhow::anyhow!("malformed shape"))?;
    let shape = shape_s[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| anyhow::anyhow!("bad shape entry {s:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((descr.to_string(), fortran, shape))
}

pub fn read(path: &Path) -> anyhow::Result<NpyArray> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?
        .read_to_end(&mut bytes)?;
    parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn parse(bytes: &[u8]) -> anyhow::Result<NpyArray> {
    anyhow::ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "not an .npy file"
    );
    let (hlen, off) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            anyhow::ensure!(bytes.len() >= 12, "truncated npy header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => anyhow::bail!("unsupported npy version {v}"),
    };
    anyhow::ensure!(bytes.len() >= off + hlen, "truncated npy header");
    let header = std::str::from_utf8(&bytes[off..off + hlen])?;
    let (descr, fortran, shape) = parse_header(header)?;
    anyhow::ensure!(
        !fortran,
        "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"
    );
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            anyhow::anyhow!("npy shape {shape:?} has more elements than fit in memory")
        })?;
    let body = &bytes[off + hlen..];
    let need = |size: usize| -> anyhow::Result<()> {
        let bytes = n.checked_mul(size);
        anyhow::ensure!(
            bytes.is_some_and(|b| body.len() >= b),
            "npy body has {} bytes, shape {shape:?} of {descr} needs {}",
            body.len(),
            bytes.map_or("more than fit in memory".to_string(), |b| b.to_string())
        );
        Ok(())
    };
    let data = match descr.as_str() {
        "<f4" => {
            need(4)?;
            NpyData::F32(
                body.chunks_exact(4)
                    .take(n)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        "<f8" => {
            need(8)?;
            NpyData::F32(
                body.chunks_exact(8)
                    .take(n)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            )
        }
        "<i8" => {
            need(8)?;
            NpyData::I64(
                body.chunks_exact(8)
                    .take(n)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        "<i4" => {
            need(4)?;
            NpyData::I64(
                body.chunks_exact(4)
                    .take(n)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect(),
            )
        }
        "|u1" | "|b1" => {
            need(1)?;
            NpyData::F32(body[..n].iter().map(|&b| b as f32).collect())
        }
        "<c8" => {
            need(8)?;
            NpyData::C64(
                body.chunks_exact(8)
                    .take(n)
                    .map(|c| {
                        Complex32::new(
                            f32::from_le_bytes(c[..4].try_into().unwrap()),
                            f32::from_le_bytes(c[4..].try_into().unwrap()),
                        )
                    })
                    .collect(),
            )
        }
        "<c16" => {
            need(16)?;
            NpyData::C64(
                body.chunks_exact(16)
                    .take(n)
                    .map(|c| {
                        Complex32::new(
                            f64::from_le_bytes(c[..8].try_into().unwrap()) as f32,
                            f64::from_le_bytes(c[8..].try_into().unwrap()) as f32,
                        )
                    })
                    .collect(),
            )
        }
        other => {
            anyhow::bail!("unsupported npy dtype {other}; expected <f4, <f8, <c8, <c16, |u1 or |b1")
        }
    };
    Ok(NpyArray { shape, data })
}

/// The bytes of an `.npy` file (format 1.0, C order) holding `body` as `descr` with `shape`.
fn encode_raw(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

fn write_raw(path: &Path, descr: &str, shape: &[usize], body: &[u8]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&encode_raw(descr, shape, body))?;
    f.flush()?;
    Ok(())
}

/// A float32 array as the bytes of an `.npy` file (for sending over the wire).
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape and data disagree"
    );
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode_raw("<f4", shape, &body)
}

pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        shape.iter().product::<usize>() == data.len(),
        "shape {shape:?} does not match {} values",
        data.len()
    );
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, "<f4", shape, &body)
}

pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> anyhow::Result<()> {
    anyhow::ensure!(
        shape.iter().product::<usize>() == data.len(),
        "shape {shape:?} does not match {} values",
        data.len()
    );
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, "<i8", shape, &body)
}

pub fn write_c64(path: &Path, shape: &[usize], data: &[Complex32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        shape.iter().product::<usize>() == data.len(),
        "shape {shape:?} does not match {} values",
        data.len()
    );
    let body: Vec<u8> = data
        .iter()
        .flat_map(|v| v.re.to_le_bytes().into_iter().chain(v.im.to_le_bytes()))
        .collect();
    write_raw(path, "<c8", shape, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_f32(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let q = dir.path().join("c.npy");
        write_c64(
            &q,
            &[2],
            &[Complex32::new(1.0, -1.0), Complex32::new(0.5, 2.0)],
        )
        .unwrap();
        assert_eq!(
            read(&q).unwrap().data,
            NpyData::C64(vec![Complex32::new(1.0, -1.0), Complex32::new(0.5, 2.0)])
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"not numpy at all").is_err());
    }
}
