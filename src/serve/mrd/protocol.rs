//! The ISMRMRD / MRD streaming protocol on the wire: little-endian messages, each a `u16` id then
//! its body (the `mrd_streaming_protocol` of the ISMRMRD project, `ismrmrd.serialization` in Python).
//!
//! | id | message | body |
//! |---|---|---|
//! | 1 | CONFIG_FILE | 1024 bytes, a NUL-terminated name |
//! | 2 | CONFIG_TEXT | `u32` length, text |
//! | 3 | HEADER | `u32` length, the MRD XML header |
//! | 4 | CLOSE | nothing |
//! | 5 | TEXT | `u32` length, text |
//! | 1008 | ACQUISITION | 340-byte header, trajectory `[samples, dims]` f32, data `[channels, samples]` complex f32 |
//! | 1022 | IMAGE | 198-byte header, `u64` attribute length, meta XML, data `[channels, z, y, x]` |
//! | 1026 | WAVEFORM | 40-byte header, data `[channels, samples]` u32 |
//!
//! Every length a client declares is checked against [`WireLimits`] before anything is allocated.

use crate::io::mrd::{AcqHead, ACQ_HEADER_BYTES};
use num_complex::Complex32;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const CONFIG_FILE: u16 = 1;
pub const CONFIG_TEXT: u16 = 2;
pub const HEADER: u16 = 3;
pub const CLOSE: u16 = 4;
pub const TEXT: u16 = 5;
pub const ACQUISITION: u16 = 1008;
pub const IMAGE: u16 = 1022;
pub const WAVEFORM: u16 = 1026;

const CONFIG_FILE_BYTES: usize = 1024;
const WAVEFORM_HEADER_BYTES: usize = 40;

/// ISMRMRD image data types and image types used here.
pub const DATATYPE_USHORT: u16 = 1;
pub const DATATYPE_FLOAT: u16 = 5;
pub const DATATYPE_CXFLOAT: u16 = 7;
pub const IMTYPE_MAGNITUDE: u16 = 1;
pub const IMTYPE_COMPLEX: u16 = 5;

/// What one connection may declare.
#[derive(Clone, Copy, Debug)]
pub struct WireLimits {
    /// Longest text (CONFIG_TEXT, HEADER, TEXT), bytes.
    pub max_text: usize,
    /// Largest acquisition or waveform body, bytes.
    pub max_body: usize,
    /// Longest wait for the next part of a message (a client that stops mid-scan is dropped).
    pub idle: Duration,
}

/// One message from the client.
#[derive(Debug)]
pub enum Message {
    ConfigFile(String),
    ConfigText(String),
    Header(String),
    Close,
    Text(String),
    Acquisition {
        head: AcqHead,
        trajectory: Vec<f32>,
        data: Vec<Complex32>,
    },
    Waveform,
    Image,
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum WireError {
    /// The connection ended (or failed) between messages or inside one.
    Gone(String),
    /// The client sent something the protocol does not allow; `ERR` goes back with this text.
    Invalid(String),
}

impl WireError {
    pub fn message(&self) -> &str {
        match self {
            WireError::Gone(m) | WireError::Invalid(m) => m,
        }
    }
}

async fn exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    idle: Duration,
    what: &str,
) -> Result<(), WireError> {
    match tokio::time::timeout(idle, r.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(WireError::Gone(format!(
            "connection ended inside {what}: {e}"
        ))),
        Err(_) => Err(WireError::Gone(format!(
            "no data for {} s inside {what}",
            idle.as_secs()
        ))),
    }
}

async fn bytes<R: AsyncRead + Unpin>(
    r: &mut R,
    n: usize,
    idle: Duration,
    what: &str,
) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; n];
    exact(r, &mut buf, idle, what).await?;
    Ok(buf)
}

async fn text<R: AsyncRead + Unpin>(
    r: &mut R,
    l: &WireLimits,
    what: &str,
) -> Result<String, WireError> {
    let mut len = [0u8; 4];
    exact(r, &mut len, l.idle, what).await?;
    let n = u32::from_le_bytes(len) as usize;
    if n > l.max_text {
        return Err(WireError::Invalid(format!(
            "{what} declares {n} bytes; at most {} are accepted",
            l.max_text
        )));
    }
    let b = bytes(r, n, l.idle, what).await?;
    String::from_utf8(b).map_err(|_| WireError::Invalid(format!("{what} is not UTF-8 text")))
}

/// Reads the next message. Between messages the wait is unbounded only while `idle` allows:
/// a connection with nothing to say for that long is treated as gone.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    l: &WireLimits,
) -> Result<Message, WireError> {
    let mut id = [0u8; 2];
    exact(r, &mut id, l.idle, "a message id").await?;
    match u16::from_le_bytes(id) {
        CONFIG_FILE => {
            let b = bytes(r, CONFIG_FILE_BYTES, l.idle, "CONFIG_FILE").await?;
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            let name = std::str::from_utf8(&b[..end])
                .map_err(|_| WireError::Invalid("CONFIG_FILE name is not UTF-8".into()))?;
            Ok(Message::ConfigFile(name.trim().to_string()))
        }
        CONFIG_TEXT => Ok(Message::ConfigText(text(r, l, "CONFIG_TEXT").await?)),
        HEADER => Ok(Message::Header(text(r, l, "HEADER").await?)),
        CLOSE => Ok(Message::Close),
        TEXT => Ok(Message::Text(text(r, l, "TEXT").await?)),
        ACQUISITION => {
            let mut h = [0u8; ACQ_HEADER_BYTES];
            exact(r, &mut h, l.idle, "an ACQUISITION header").await?;
            let head = AcqHead::parse(&h);
            let traj = head.samples.checked_mul(head.trajectory_dimensions);
            let values = head.samples.checked_mul(head.channels);
            let body = traj
                .and_then(|t| t.checked_mul(4))
                .zip(values.and_then(|v| v.checked_mul(8)))
                .and_then(|(t, d)| t.checked_add(d));
            match body {
                Some(b) if b <= l.max_body => {}
                _ => {
                    return Err(WireError::Invalid(format!(
                        "ACQUISITION declares {} samples × {} channels with {} trajectory \
                         dimensions; at most {} bytes per acquisition are accepted",
                        head.samples, head.channels, head.trajectory_dimensions, l.max_body
                    )))
                }
            }
            let tb = bytes(
                r,
                traj.unwrap_or(0) * 4,
                l.idle,
                "an ACQUISITION trajectory",
            )
            .await?;
            let db = bytes(r, values.unwrap_or(0) * 8, l.idle, "ACQUISITION data").await?;
            let (trajectory, data) = (crate::io::le_f32s(&tb), crate::io::le_c64s(&db));
            Ok(Message::Acquisition {
                head,
                trajectory,
                data,
            })
        }
        WAVEFORM => {
            let h = bytes(r, WAVEFORM_HEADER_BYTES, l.idle, "a WAVEFORM header").await?;
            let samples = u16::from_le_bytes([h[28], h[29]]) as usize;
            let channels = u16::from_le_bytes([h[30], h[31]]) as usize;
            let n = samples * channels * 4; // at most 2^34: no overflow
            if n > l.max_body {
                return Err(WireError::Invalid(format!(
                    "WAVEFORM declares {channels} channels × {samples} samples; at most {} bytes \
                     are accepted",
                    l.max_body
                )));
            }
            skip(r, n, l.idle, "WAVEFORM data").await?;
            Ok(Message::Waveform)
        }
        IMAGE => Ok(Message::Image),
        other => Err(WireError::Invalid(format!(
            "unknown message id {other}; expected CONFIG_FILE (1), CONFIG_TEXT (2), HEADER (3), \
             CLOSE (4), TEXT (5), ACQUISITION (1008) or WAVEFORM (1026)"
        ))),
    }
}

/// Reads and drops `n` bytes in bounded chunks.
async fn skip<R: AsyncRead + Unpin>(
    r: &mut R,
    mut n: usize,
    idle: Duration,
    what: &str,
) -> Result<(), WireError> {
    let mut buf = vec![0u8; n.min(1 << 16)];
    while n > 0 {
        let k = n.min(buf.len());
        exact(r, &mut buf[..k], idle, what).await?;
        n -= k;
    }
    Ok(())
}

/// A TEXT message.
pub fn text_message(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + s.len());
    out.extend_from_slice(&TEXT.to_le_bytes());
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// A CLOSE message.
pub fn close_message() -> Vec<u8> {
    CLOSE.to_le_bytes().to_vec()
}

/// Pixel data of an image going back.
pub enum Pixels<'a> {
    Float(&'a [f32]),
    Ushort(Vec<u16>),
    Complex(&'a [Complex32]),
}

/// The ISMRMRD `ImageHeader` members inferd sets (others are zero).
#[derive(Clone, Debug, Default)]
pub struct ImageHead {
    pub measurement_uid: u32,
    /// Columns (readout), rows (phase encoding).
    pub matrix: [u16; 2],
    pub field_of_view: [f32; 3],
    pub position: [f32; 3],
    pub read_dir: [f32; 3],
    pub phase_dir: [f32; 3],
    pub slice_dir: [f32; 3],
    pub patient_table_position: [f32; 3],
    /// average, slice, contrast, phase, repetition, set.
    pub counters: [u16; 6],
    pub acquisition_time_stamp: u32,
    pub physiology_time_stamp: [u32; 3],
    pub image_index: u16,
    pub image_series_index: u16,
}

/// An IMAGE message: the 198-byte header (offsets of ISMRMRD's `ImageHeader`), the attribute length,
/// the meta XML and the pixels `[y, x]` (one channel, one partition).
pub fn image_message(h: &ImageHead, meta: &str, pixels: Pixels) -> Vec<u8> {
    let (data_type, image_type) = match pixels {
        Pixels::Float(_) => (DATATYPE_FLOAT, IMTYPE_MAGNITUDE),
        Pixels::Ushort(_) => (DATATYPE_USHORT, IMTYPE_MAGNITUDE),
        Pixels::Complex(_) => (DATATYPE_CXFLOAT, IMTYPE_COMPLEX),
    };
    let mut b = Vec::with_capacity(210 + meta.len());
    b.extend_from_slice(&IMAGE.to_le_bytes());
    let f3 = |b: &mut Vec<u8>, v: &[f32; 3]| {
        v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()))
    };
    b.extend_from_slice(&1u16.to_le_bytes()); // version
    b.extend_from_slice(&data_type.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // flags
    b.extend_from_slice(&h.measurement_uid.to_le_bytes());
    for m in [h.matrix[0], h.matrix[1], 1] {
        b.extend_from_slice(&m.to_le_bytes());
    }
    f3(&mut b, &h.field_of_view);
    b.extend_from_slice(&1u16.to_le_bytes()); // channels
    for v in [
        &h.position,
        &h.read_dir,
        &h.phase_dir,
        &h.slice_dir,
        &h.patient_table_position,
    ] {
        f3(&mut b, v);
    }
    for c in h.counters {
        b.extend_from_slice(&c.to_le_bytes());
    }
    b.extend_from_slice(&h.acquisition_time_stamp.to_le_bytes());
    for t in h.physiology_time_stamp {
        b.extend_from_slice(&t.to_le_bytes());
    }
    for v in [image_type, h.image_index, h.image_series_index] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 64]); // user_int, user_float
    b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    debug_assert_eq!(b.len(), 2 + 198);
    b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    b.extend_from_slice(meta.as_bytes());
    match pixels {
        Pixels::Float(p) => p.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
        Pixels::Ushort(p) => p.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
        Pixels::Complex(p) => p.iter().for_each(|v| {
            b.extend_from_slice(&v.re.to_le_bytes());
            b.extend_from_slice(&v.im.to_le_bytes());
        }),
    }
    b
}

/// ISMRMRD meta attributes as XML (`<ismrmrdMeta><meta><name>…</name><value>…</value></meta>…`).
pub fn meta_xml(attributes: &[(&str, String)]) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut x = String::from("<?xml version=\"1.0\"?><ismrmrdMeta>");
    for (name, value) in attributes {
        x.push_str(&format!(
            "<meta><name>{}</name><value>{}</value></meta>",
            escape(name),
            escape(value)
        ));
    }
    x.push_str("</ismrmrdMeta>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WireLimits {
        WireLimits {
            max_text: 1024,
            max_body: 1 << 20,
            idle: Duration::from_secs(1),
        }
    }

    fn acquisition(samples: u16, channels: u16, dims: u16, slice: u16) -> Vec<u8> {
        let mut h = vec![0u8; ACQ_HEADER_BYTES];
        h[34..36].copy_from_slice(&samples.to_le_bytes());
        h[38..40].copy_from_slice(&channels.to_le_bytes());
        h[176..178].copy_from_slice(&dims.to_le_bytes());
        h[242 + 6..242 + 8].copy_from_slice(&slice.to_le_bytes());
        let mut m = ACQUISITION.to_le_bytes().to_vec();
        m.extend(h);
        m
    }

    #[tokio::test]
    async fn reads_an_acquisition_and_its_counters() {
        let mut m = acquisition(3, 2, 2, 7);
        m.extend((0..6).flat_map(|k| (k as f32 * 0.1).to_le_bytes()));
        m.extend((0..12).flat_map(|k| (k as f32).to_le_bytes()));
        let Message::Acquisition {
            head,
            trajectory,
            data,
        } = read_message(&mut m.as_slice(), &limits()).await.unwrap()
        else {
            panic!("not an acquisition")
        };
        assert_eq!((head.samples, head.channels, head.slice), (3, 2, 7));
        assert_eq!(trajectory.len(), 6);
        assert_eq!(data[5], Complex32::new(10.0, 11.0));
    }

    #[tokio::test]
    async fn refuses_declared_sizes_over_the_limits_before_reading_them() {
        let m = acquisition(65535, 65535, 0, 0);
        let e = read_message(&mut m.as_slice(), &limits())
            .await
            .unwrap_err();
        assert!(
            matches!(e, WireError::Invalid(ref s) if s.contains("at most")),
            "{e:?}"
        );
        let mut t = TEXT.to_le_bytes().to_vec();
        t.extend(u32::MAX.to_le_bytes());
        let e = read_message(&mut t.as_slice(), &limits())
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Invalid(_)), "{e:?}");
        let e = read_message(&mut [9u8, 9].as_slice(), &limits())
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Invalid(ref s) if s.contains("unknown message id 2313")));
        // truncated inside a message: gone, not invalid
        let m = acquisition(4, 1, 0, 0);
        let e = read_message(&mut m.as_slice(), &limits())
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Gone(_)), "{e:?}");
    }

    #[test]
    fn image_header_has_ismrmrd_layout() {
        let h = ImageHead {
            matrix: [4, 2],
            image_index: 3,
            image_series_index: 9,
            counters: [0, 5, 0, 0, 1, 0],
            ..Default::default()
        };
        let b = image_message(&h, "<x/>", Pixels::Float(&[0.5; 8]));
        let head = &b[2..];
        assert_eq!(u16::from_le_bytes([head[2], head[3]]), DATATYPE_FLOAT);
        assert_eq!(u16::from_le_bytes([head[16], head[17]]), 4);
        assert_eq!(u16::from_le_bytes([head[18], head[19]]), 2);
        assert_eq!(u16::from_le_bytes([head[98], head[99]]), 5); // slice
        assert_eq!(u16::from_le_bytes([head[104], head[105]]), 1); // repetition
        assert_eq!(u16::from_le_bytes([head[126], head[127]]), 3);
        assert_eq!(u16::from_le_bytes([head[128], head[129]]), 9);
        assert_eq!(u32::from_le_bytes(head[194..198].try_into().unwrap()), 4);
        assert_eq!(b.len(), 2 + 198 + 8 + 4 + 8 * 4);
    }
}
