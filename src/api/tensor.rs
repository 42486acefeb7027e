//! `Tensor` messages ⇄ typed buffers. Little-endian raw bytes, row-major, explicit shape and dtype.

use super::pb::{DataType, Tensor};
use crate::error::Result;
use crate::invalid;
use num_complex::Complex32;

fn dtype_name(d: i32) -> String {
    DataType::try_from(d)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown dtype {d}"))
}

/// Checks dtype and shape of a tensor named `what` and returns its element count.
fn check(t: &Tensor, what: &str, dtype: DataType, shape: &[usize], layout: &str) -> Result<usize> {
    if t.dtype != dtype as i32 {
        return Err(invalid!(
            "{what} has dtype {}, expected {} {layout}",
            dtype_name(t.dtype),
            dtype.as_str_name()
        ));
    }
    let got: Vec<u64> = t.shape.clone();
    let want: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    if got != want {
        return Err(invalid!(
            "{what} has shape {got:?}, expected {want:?} {layout}"
        ));
    }
    let elem = match dtype {
        DataType::Complex64 => 8,
        _ => 4,
    };
    // Sizes are the client's: a product that overflows is refused, never wrapped.
    let (n, bytes) = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| Some((n, n.checked_mul(elem)?)))
        .ok_or_else(|| {
            invalid!("{what} has shape {want:?}, whose element count overflows; expected {layout}")
        })?;
    if n == 0 {
        return Err(invalid!("{what} is empty, expected {want:?} {layout}"));
    }
    if t.data.len() != bytes {
        return Err(invalid!(
            "{what} carries {} bytes, shape {want:?} of {} needs {bytes}",
            t.data.len(),
            dtype.as_str_name(),
        ));
    }
    Ok(n)
}

/// Payloads from this size on are converted off the async runtime's scheduling (about a millisecond of
/// work).
const HEAVY_BYTES: usize = 1 << 20;

/// Runs the conversion of a `bytes`-sized payload (decoding, finiteness scan, encoding). Large ones
/// on a multi-threaded runtime run under `block_in_place`: the runtime hands this thread's other
/// tasks (health checks, other clients' calls) to another thread meanwhile. Small ones, and calls
/// outside a multi-threaded runtime, run inline.
pub fn heavy<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if bytes >= HEAVY_BYTES && multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The flat index of the first NaN or infinity, if any.
pub fn first_non_finite(v: &[f32]) -> Option<usize> {
    v.iter().position(|x| !x.is_finite())
}

fn non_finite(what: &str, i: usize) -> crate::error::Error {
    invalid!("{what} has a non-finite value at flat index {i}; all values must be finite")
}

/// Decodes a FLOAT32 tensor of exactly `shape`, rejecting NaN and infinities.
pub fn decode_f32(t: &Tensor, what: &str, shape: &[usize], layout: &str) -> Result<Vec<f32>> {
    check(t, what, DataType::Float32, shape, layout)?;
    heavy(t.data.len(), || {
        let v: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        match first_non_finite(&v) {
            Some(i) => Err(non_finite(what, i)),
            None => Ok(v),
        }
    })
}

/// Decodes a COMPLEX64 tensor of exactly `shape`, rejecting NaN and infinities.
pub fn decode_c64(t: &Tensor, what: &str, shape: &[usize], layout: &str) -> Result<Vec<Complex32>> {
    check(t, what, DataType::Complex64, shape, layout)?;
    heavy(t.data.len(), || {
        let v: Vec<Complex32> = crate::io::le_c64s(&t.data);
        match v
            .iter()
            .position(|x| !x.re.is_finite() || !x.im.is_finite())
        {
            Some(i) => Err(non_finite(what, i)),
            None => Ok(v),
        }
    })
}

pub fn encode_f32(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor {
        shape: shape.iter().map(|&s| s as u64).collect(),
        dtype: DataType::Float32 as i32,
        data: heavy(4 * data.len(), || {
            data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }),
    }
}

pub fn encode_c64(shape: &[usize], data: &[Complex32]) -> Tensor {
    Tensor {
        shape: shape.iter().map(|&s| s as u64).collect(),
        dtype: DataType::Complex64 as i32,
        data: heavy(8 * data.len(), || {
            data.iter()
                .flat_map(|v| v.re.to_le_bytes().into_iter().chain(v.im.to_le_bytes()))
                .collect()
        }),
    }
}

/// Client-side decoding of a FLOAT32 tensor of any shape: `(shape, values)`.
pub fn to_f32(t: &Tensor) -> Result<(Vec<usize>, Vec<f32>)> {
    let shape: Vec<usize> = t.shape.iter().map(|&s| s as usize).collect();
    let v = decode_f32(t, "tensor", &shape, "")?;
    Ok((shape, v))
}

/// Client-side decoding of a COMPLEX64 tensor of any shape.
pub fn to_c64(t: &Tensor) -> Result<(Vec<usize>, Vec<Complex32>)> {
    let shape: Vec<usize> = t.shape.iter().map(|&s| s as usize).collect();
    let v = decode_c64(t, "tensor", &shape, "")?;
    Ok((shape, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = encode_c64(
            &[1, 2],
            &[Complex32::new(1.0, 2.0), Complex32::new(-3.0, 0.5)],
        );
        assert_eq!(
            decode_c64(&t, "k", &[1, 2], "").unwrap()[1],
            Complex32::new(-3.0, 0.5)
        );
        assert!(decode_c64(&t, "k", &[2, 1], "")
            .unwrap_err()
            .to_string()
            .contains("expected [2, 1]"));
        assert!(decode_f32(&t, "k", &[1, 2], "")
            .unwrap_err()
            .to_string()
            .contains("dtype COMPLEX64"));
        let nan = encode_f32(&[2], &[1.0, f32::NAN]);
        assert!(decode_f32(&nan, "m", &[2], "")
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        // A shape whose product wraps around (2^62 × 2 × 4 bytes = 2^66) with no data is refused.
        let huge = Tensor {
            shape: vec![1 << 62, 2],
            dtype: DataType::Float32 as i32,
            data: Vec::new(),
        };
        assert!(decode_f32(&huge, "x", &[1 << 62, 2], "")
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        let mut short = encode_f32(&[2], &[1.0, 2.0]);
        short.data.pop();
        assert!(decode_f32(&short, "m", &[2], "")
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }
}
