//! 8-bit grayscale PNG: previews written by the client, training images read from folders.

use std::path::Path;

/// Writes `[ny, nx]` values as 8-bit grayscale, mapping `[0, max]` to `[0, 255]`.
pub fn write_gray(path: &Path, img: &[f32], ny: usize, nx: usize, max: f32) -> anyhow::Result<()> {
    let scale = if max > 0.0 { 255.0 / max } else { 0.0 };
    let bytes: Vec<u8> = img
        .iter()
        .map(|v| (v * scale).round().clamp(0.0, 255.0) as u8)
        .collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, nx as u32, ny as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&bytes)?;
    Ok(())
}

/// Reads a PNG as grayscale `[ny, nx]` in [0, 1] (colour is converted with Rec. 601 luma weights).
pub fn read_gray(path: &Path) -> anyhow::Result<(Vec<f32>, usize, usize)> {
    let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info()?;
    let mut buf = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| anyhow::anyhow!("image too large"))?
    ];
    let info = reader.next_frame(&mut buf)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let img = (0..w * h)
        .map(|i| {
            let p = &px[i * ch..(i + 1) * ch];
            let v = match ch {
                1 | 2 => p[0] as f32,
                _ => 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32,
            };
            v / 255.0
        })
        .collect();
    Ok((img, h, w))
}
