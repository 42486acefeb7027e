//! Reading HDF5 files without the HDF5 C library.
//!
//! A thin layer over the pure-Rust `hdf5-pure` crate, which parses the file structure (superblock,
//! groups, object headers, chunked and deflated storage) and returns a dataset's raw bytes and
//! datatype. On top of it this module decodes what the raw-data readers need: numeric arrays of any
//! integer or float type, complex arrays stored as a compound of two floats (h5py's `{r, i}`,
//! ISMRMRD's `{real, imag}`), fixed and variable-length strings, and records of a compound type whose
//! members are read by dotted name (`head.idx.slice`). Variable-length sequences inside records (the
//! ISMRMRD acquisition's `data` and `traj`) are resolved here through the global heap: each element
//! stores `(length: u32, collection address, object index: u32)`, and the global heap collection
//! (`GCOL`) at that address holds the objects' bytes. The rest of the crate sees only this API.

use anyhow::{anyhow, bail, Context, Result};
use hdf5_pure::{Datatype, DatatypeByteOrder};
use num_complex::Complex32;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

/// A global heap collection's objects: object index → byte range in the file.
type HeapObjects = HashMap<u32, (usize, usize)>;

/// An HDF5 file read into memory.
pub struct H5File {
    file: hdf5_pure::File,
    name: String,
    offset_size: usize,
    length_size: usize,
    base_address: u64,
    /// Parsed global heap collections by file address.
    heaps: RefCell<HashMap<u64, HeapObjects>>,
}

impl H5File {
    pub fn open(path: &Path) -> Result<H5File> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_bytes(bytes, &path.display().to_string())
    }

    /// `name` is used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<H5File> {
        if !hdf5_pure::is_hdf5_bytes(&bytes) {
            bail!("{name}: not an HDF5 file (no HDF5 signature)");
        }
        let file = hdf5_pure::File::from_bytes(bytes)
            .map_err(|e| anyhow!("{name}: malformed or truncated HDF5 file: {e}"))?;
        let sb = file.superblock();
        let size = file.as_bytes().len() as u64;
        let eof = sb.eof_address.saturating_add(sb.base_address.get());
        if eof != u64::MAX && size < eof {
            bail!("{name}: truncated HDF5 file: {size} bytes, its superblock says {eof}");
        }
        let (offset_size, length_size, base_address) = (
            sb.offset_size as usize,
            sb.length_size as usize,
            sb.base_address.get(),
        );
        Ok(H5File {
            file,
            name: name.to_string(),
            offset_size,
            length_size,
            base_address,
            heaps: RefCell::new(HashMap::new()),
        })
    }

    /// Whether `path` names a dataset.
    pub fn has_dataset(&self, path: &str) -> bool {
        self.file.dataset(path).is_ok()
    }

    /// The root group's members: datasets by name, groups with a trailing `/`.
    pub fn top_level(&self) -> Vec<String> {
        let root = self.file.root();
        let mut names = root.datasets().unwrap_or_default();
        names.extend(
            root.groups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| format!("{g}/")),
        );
        names.sort();
        names
    }

    pub fn dataset(&self, path: &str) -> Result<H5Dataset<'_>> {
        let ds = self
            .file
            .dataset(path)
            .map_err(|e| anyhow!("{}: no dataset {path} ({e})", self.name))?;
        let dtype = ds
            .datatype()
            .map_err(|e| anyhow!("{}: {path}: unreadable datatype: {e}", self.name))?;
        let shape = ds
            .shape()
            .map_err(|e| anyhow!("{}: {path}: unreadable dataspace: {e}", self.name))?
            .into_iter()
            .map(|d| d as usize)
            .collect();
        Ok(H5Dataset {
            file: self,
            ds,
            dtype,
            shape,
            path: path.to_string(),
        })
    }

    /// The bytes of one variable-length element, from its global heap reference.
    fn vlen_bytes(&self, reference: &[u8]) -> Result<&[u8]> {
        let (o, l) = (self.offset_size, self.length_size);
        if reference.len() < 8 + o {
            bail!("{}: variable-length reference too short", self.name);
        }
        let addr = uint_le(&reference[4..4 + o]) + self.base_address;
        let index = u32::from_le_bytes(reference[4 + o..8 + o].try_into().unwrap());
        if index == 0 {
            return Ok(&[]); // the null reference: an empty sequence
        }
        let bytes = self.file.as_bytes();
        let mut heaps = self.heaps.borrow_mut();
        let heap = match heaps.entry(addr) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                parse_global_heap(bytes, addr as usize, l)
                    .with_context(|| format!("{}: global heap collection at {addr}", self.name))?,
            ),
        };
        let &(start, len) = heap.get(&index).ok_or_else(|| {
            anyhow!(
                "{}: global heap object {index} missing at {addr}",
                self.name
            )
        })?;
        Ok(&bytes[start..start + len])
    }
}

/// Parses a global heap collection: `"GCOL"`, version 1, 3 reserved bytes, the collection size,
/// then objects `(index: u16, references: u16, reserved: u32, size, data padded to 8 bytes)` until
/// the free-space object (index 0).
fn parse_global_heap(bytes: &[u8], addr: usize, length_size: usize) -> Result<HeapObjects> {
    let head = 8 + length_size;
    let header = bytes
        .get(addr..addr + head)
        .ok_or_else(|| anyhow!("past the end of the file"))?;
    if &header[..4] != b"GCOL" {
        bail!("no GCOL signature");
    }
    let size = uint_le(&header[8..]) as usize;
    let end = addr
        .checked_add(size)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| anyhow!("collection of {size} bytes runs past the end of the file"))?;
    let mut objects = HashMap::new();
    let mut pos = addr + head;
    while pos + 8 + length_size <= end {
        let index = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) as u32;
        if index == 0 {
            break;
        }
        let len = uint_le(&bytes[pos + 8..pos + 8 + length_size]) as usize;
        let start = pos + 8 + length_size;
        if start + len > end {
            bail!("object {index} of {len} bytes runs past its collection");
        }
        objects.insert(index, (start, len));
        pos = start + len.div_ceil(8) * 8;
    }
    Ok(objects)
}

fn uint_le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

/// One dataset of an [`H5File`].
pub struct H5Dataset<'a> {
    file: &'a H5File,
    ds: hdf5_pure::Dataset,
    dtype: Datatype,
    shape: Vec<usize>,
    path: String,
}

impl<'a> H5Dataset<'a> {
    /// Dimensions; empty for a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn raw(&self) -> Result<Vec<u8>> {
        let raw = self
            .ds
            .read_raw()
            .map_err(|e| anyhow!("{}: {}: cannot read data: {e}", self.file.name, self.path))?;
        let n: usize = self.shape.iter().product();
        let size = self
            .dtype
            .element_size()
            .map(|s| s.get() as usize)
            .unwrap_or(0);
        if raw.len() < n * size {
            bail!(
                "{}: {}: {} bytes of data for {n} elements of {size} bytes (truncated?)",
                self.file.name,
                self.path,
                raw.len()
            );
        }
        Ok(raw)
    }

    fn err(&self, what: &str) -> anyhow::Error {
        anyhow!("{}: {}: {what}", self.file.name, self.path)
    }

    /// A numeric dataset (any integer or float type) as f32, row-major.
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        let raw = self.raw()?;
        let size = self
            .dtype
            .element_size()
            .map_err(|e| self.err(&e.to_string()))?;
        let n: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let v = scalar(&self.dtype, &raw[i * size.get() as usize..])
                .ok_or_else(|| self.err("expected a numeric dataset"))?;
            out.push(v as f32);
        }
        Ok(out)
    }

    /// A complex dataset stored as a compound of two floats (real first), row-major.
    pub fn read_c64(&self) -> Result<Vec<Complex32>> {
        let Datatype::Compound { size, members } = &self.dtype else {
            return Err(self.err("expected complex values (a compound of two floats)"));
        };
        let [re, im] = &members[..] else {
            return Err(self.err("expected complex values (a compound of two floats)"));
        };
        let raw = self.raw()?;
        let n: usize = self.shape.iter().product();
        let size = *size as usize;
        (0..n)
            .map(|i| {
                let e = &raw[i * size..];
                let r = scalar(&re.datatype, &e[re.byte_offset as usize..]);
                let m = scalar(&im.datatype, &e[im.byte_offset as usize..]);
                match (r, m) {
                    (Some(r), Some(m)) => Ok(Complex32::new(r as f32, m as f32)),
                    _ => Err(self.err("complex members must be numeric")),
                }
            })
            .collect()
    }

    /// The first (or only) string of a fixed-length or variable-length string dataset.
    pub fn read_string(&self) -> Result<String> {
        let raw = self.raw()?;
        let bytes = match &self.dtype {
            Datatype::String { size, .. } => &raw[..(*size as usize).min(raw.len())],
            Datatype::VariableLength { .. } => self.file.vlen_bytes(&raw)?,
            _ => return Err(self.err("expected a string")),
        };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8(bytes[..end].to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    /// The records of a 1-D compound dataset.
    pub fn read_records(&self) -> Result<Records<'a>> {
        let Datatype::Compound { size, .. } = &self.dtype else {
            return Err(self.err("expected a compound (record) dataset"));
        };
        let mut fields = HashMap::new();
        flatten("", &self.dtype, 0, &mut fields);
        Ok(Records {
            file: self.file,
            path: self.path.clone(),
            count: self.shape.iter().product(),
            size: *size as usize,
            bytes: self.raw()?,
            fields,
        })
    }
}

/// Member offsets and types of a compound, nested members joined with dots.
fn flatten(
    prefix: &str,
    t: &Datatype,
    offset: usize,
    out: &mut HashMap<String, (usize, Datatype)>,
) {
    if let Datatype::Compound { members, .. } = t {
        for m in members {
            let name = if prefix.is_empty() {
                m.name.clone()
            } else {
                format!("{prefix}.{}", m.name)
            };
            let off = offset + m.byte_offset as usize;
            flatten(&name, &m.datatype, off, out);
            out.insert(name, (off, m.datatype.clone()));
        }
    }
}

/// One integer or float value at the start of `b` (an enumeration, e.g. h5py's bool, as its
/// integer value).
fn scalar(t: &Datatype, b: &[u8]) -> Option<f64> {
    if let Datatype::Enumeration { base_type, .. } = t {
        return scalar(base_type, b);
    }
    let (size, order) = match t {
        Datatype::FixedPoint {
            size, byte_order, ..
        }
        | Datatype::FloatingPoint {
            size, byte_order, ..
        } => (*size as usize, byte_order),
        _ => return None,
    };
    let mut v = b.get(..size)?.to_vec();
    if matches!(order, DatatypeByteOrder::BigEndian) {
        v.reverse();
    }
    Some(match t {
        Datatype::FloatingPoint { .. } => match size {
            4 => f32::from_le_bytes(v.try_into().ok()?) as f64,
            8 => f64::from_le_bytes(v.try_into().ok()?),
            _ => return None,
        },
        Datatype::FixedPoint { layout, .. } => {
            let u = uint_le(&v);
            if layout.signed && size < 8 && u >> (size * 8 - 1) & 1 == 1 {
                (u as i64 - (1i64 << (size * 8))) as f64
            } else if layout.signed {
                u as i64 as f64
            } else {
                u as f64
            }
        }
        _ => return None,
    })
}

/// The records of a compound dataset, with members read by dotted name.
pub struct Records<'a> {
    file: &'a H5File,
    path: String,
    count: usize,
    size: usize,
    bytes: Vec<u8>,
    fields: HashMap<String, (usize, Datatype)>,
}

impl Records<'_> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn field(&self, name: &str) -> Result<&(usize, Datatype)> {
        self.fields.get(name).ok_or_else(|| {
            anyhow!(
                "{}: {}: records have no member {name}",
                self.file.name,
                self.path
            )
        })
    }

    /// A numeric member of record `i`: a scalar gives one value, an array all of its elements.
    pub fn values(&self, i: usize, name: &str) -> Result<Vec<f64>> {
        let (off, t) = self.field(name)?;
        let rec = &self.bytes[i * self.size..(i + 1) * self.size];
        let (base, n) = match t {
            Datatype::Array {
                base_type,
                dimensions,
            } => (
                base_type.as_ref(),
                dimensions.iter().map(|&d| d as usize).product(),
            ),
            t => (t, 1),
        };
        let esize = base.element_size().map(|s| s.get() as usize).unwrap_or(0);
        (0..n)
            .map(|k| {
                rec.get(off + k * esize..)
                    .and_then(|b| scalar(base, b))
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: {}: member {name} is not numeric",
                            self.file.name,
                            self.path
                        )
                    })
            })
            .collect()
    }

    /// A scalar numeric member of record `i`.
    pub fn value(&self, i: usize, name: &str) -> Result<f64> {
        Ok(self.values(i, name)?[0])
    }

    /// A variable-length sequence of little-endian f32 in record `i`.
    pub fn vlen_f32(&self, i: usize, name: &str) -> Result<Vec<f32>> {
        let (off, t) = self.field(name)?;
        let Datatype::VariableLength { base_type, .. } = t else {
            bail!(
                "{}: {}: member {name} is not a variable-length sequence",
                self.file.name,
                self.path
            );
        };
        let rec = &self.bytes[i * self.size..(i + 1) * self.size];
        let reference = &rec[*off..];
        let n = u32::from_le_bytes(reference[..4].try_into().unwrap()) as usize;
        let bytes = self.file.vlen_bytes(reference)?;
        if !matches!(**base_type, Datatype::FloatingPoint { size: 4, .. }) {
            bail!(
                "{}: {}: member {name} must hold float32 values",
                self.file.name,
                self.path
            );
        }
        if bytes.len() < 4 * n {
            bail!(
                "{}: {}: record {i}: {name} holds {} bytes for {n} values",
                self.file.name,
                self.path,
                bytes.len()
            );
        }
        Ok(bytes[..4 * n]
            .chunks_exact(4)
            .map(|c| scalar(base_type, c).unwrap_or(0.0) as f32)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_heap_objects_are_found_by_index() {
        // A collection at offset 8 with two objects (5 and 8 bytes of data), lengths of 8 bytes.
        let mut b = vec![0u8; 8];
        let start = b.len();
        b.extend_from_slice(b"GCOL\x01\0\0\0");
        b.extend_from_slice(&0u64.to_le_bytes()); // size, patched below
        for (idx, data) in [(1u16, &b"hello"[..]), (2, &b"12345678"[..])] {
            b.extend_from_slice(&idx.to_le_bytes());
            b.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
            b.extend_from_slice(&(data.len() as u64).to_le_bytes());
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        b.extend_from_slice(&[0u8; 16]); // free space object
        let size = (b.len() - start) as u64;
        b[start + 8..start + 16].copy_from_slice(&size.to_le_bytes());
        let h = parse_global_heap(&b, start, 8).unwrap();
        let (s, l) = h[&1];
        assert_eq!(&b[s..s + l], b"hello");
        let (s, l) = h[&2];
        assert_eq!(&b[s..s + l], b"12345678");
        assert!(parse_global_heap(&b, 0, 8).is_err());
        assert!(parse_global_heap(&b[..start + 20], start, 8).is_err());
    }

    #[test]
    fn scalars_decode_every_width_and_sign() {
        let t = |size, signed| Datatype::FixedPoint {
            size,
            byte_order: DatatypeByteOrder::LittleEndian,
            layout: hdf5_pure::FixedPointLayout {
                signed,
                bit_offset: 0,
                bit_precision: (size * 8) as u16,
            },
        };
        assert_eq!(scalar(&t(2, false), &[0xff, 0xff]), Some(65535.0));
        assert_eq!(scalar(&t(2, true), &[0xff, 0xff]), Some(-1.0));
        assert_eq!(scalar(&t(4, true), &(-7i32).to_le_bytes()), Some(-7.0));
        assert_eq!(
            scalar(&t(8, false), &(1u64 << 40).to_le_bytes()),
            Some((1u64 << 40) as f64)
        );
        assert_eq!(uint_le(&[1, 2]), 0x0201);
    }

    #[test]
    fn garbage_is_not_hdf5() {
        let e = H5File::from_bytes(b"not an hdf5 file at all".to_vec(), "x.h5")
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an HDF5 file"), "{e}");
    }
}
