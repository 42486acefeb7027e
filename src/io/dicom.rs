//! Reading grayscale images from DICOM files (for training from a folder): uncompressed transfer
//! syntaxes, one sample per pixel, 8/16-bit signed or unsigned, every frame, Rescale Slope/Intercept
//! applied, MONOCHROME1 inverted. Compressed pixel data is refused with a clear error.

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use std::path::Path;

const UNCOMPRESSED: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
];

fn int(obj: &DefaultDicomObject, tag: dicom_object::Tag, name: &str) -> anyhow::Result<i64> {
    obj.element(tag)
        .map_err(|_| anyhow::anyhow!("missing {name}"))?
        .to_int::<i64>()
        .map_err(|e| anyhow::anyhow!("bad {name}: {e}"))
}

fn float_or(obj: &DefaultDicomObject, tag: dicom_object::Tag, default: f64) -> f64 {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_float64().ok())
        .unwrap_or(default)
}

/// True when the file carries the DICOM magic at byte 128.
pub fn is_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
        && &buf[128..] == b"DICM"
}

/// Every frame of a DICOM image as `(pixels, rows, cols)`, in the stored value's physical scale.
pub fn read_frames(path: &Path) -> anyhow::Result<Vec<(Vec<f32>, usize, usize)>> {
    let ctx = |e: anyhow::Error| anyhow::anyhow!("{}: {e}", path.display());
    let obj = open_file(path)
        .map_err(|e| anyhow::anyhow!("{}: not readable as DICOM: {e}", path.display()))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if !UNCOMPRESSED.contains(&ts.as_str()) {
        return Err(ctx(anyhow::anyhow!(
            "transfer syntax {ts} is compressed; convert to an uncompressed syntax first"
        )));
    }
    let dim = |tag, name| -> anyhow::Result<usize> {
        let v = int(&obj, tag, name).map_err(ctx)?;
        usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            anyhow::anyhow!("{}: {name} is {v}, expected at least 1", path.display())
        })
    };
    let (rows, cols) = (dim(tags::ROWS, "Rows")?, dim(tags::COLUMNS, "Columns")?);
    let spp = int(&obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel").unwrap_or(1);
    anyhow::ensure!(
        spp == 1,
        "{}: {spp} samples per pixel; only grayscale is supported",
        path.display()
    );
    let bits = int(&obj, tags::BITS_ALLOCATED, "BitsAllocated").map_err(ctx)?;
    let signed = int(&obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation").unwrap_or(0) == 1;
    let frames = usize::try_from(int(&obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames").unwrap_or(1))
        .unwrap_or(0)
        .max(1);
    let slope = float_or(&obj, tags::RESCALE_SLOPE, 1.0) as f32;
    let intercept = float_or(&obj, tags::RESCALE_INTERCEPT, 0.0) as f32;
    let mono1 = obj
        .element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .is_some_and(|s| s == "MONOCHROME1");
    let bytes = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| ctx(anyhow::anyhow!("no PixelData")))?
        .to_bytes()?;
    // the header's sizes are the file's: a product that overflows is refused, never wrapped
    let n = rows
        .checked_mul(cols)
        .and_then(|p| p.checked_mul(frames))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: {frames} frame(s) of {rows}x{cols} overflow the pixel count",
                path.display()
            )
        })?;
    let values: Vec<f32> = match (bits, signed) {
        (8, false) => bytes.iter().take(n).map(|&b| b as f32).collect(),
        (8, true) => bytes.iter().take(n).map(|&b| b as i8 as f32).collect(),
        (16, false) => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        (16, true) => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        _ => {
            return Err(ctx(anyhow::anyhow!(
                "BitsAllocated {bits} is not supported (8 or 16)"
            )))
        }
    };
    anyhow::ensure!(
        values.len() == n,
        "{}: PixelData holds {} values, {frames} frame(s) of {rows}x{cols} need {n}",
        path.display(),
        values.len()
    );
    let mut values: Vec<f32> = values.iter().map(|v| v * slope + intercept).collect();
    if mono1 {
        let max = values.iter().cloned().fold(f32::MIN, f32::max);
        values.iter_mut().for_each(|v| *v = max - *v);
    }
    Ok(values
        .chunks_exact(rows * cols)
        .map(|f| (f.to_vec(), rows, cols))
        .collect())
}
