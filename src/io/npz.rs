//! NumPy `.npz` archives (`np.savez`, stored members, or `np.savez_compressed`, deflated members):
//! the members named by [`read`] as `.npy` arrays.

use super::npy::{self, NpyArray};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Every member of the archive, by array name (the member name without `.npy`).
pub fn read(path: &Path) -> Result<BTreeMap<String, NpyArray>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a readable .npz (zip) archive", path.display()))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut m = zip
            .by_index(i)
            .with_context(|| format!("{}: member {i}", path.display()))?;
        let name = m
            .name()
            .with_context(|| format!("{}: member {i} has no readable name", path.display()))?
            .trim_end_matches(".npy")
            .to_string();
        let mut bytes = Vec::with_capacity(m.size() as usize);
        m.read_to_end(&mut bytes)
            .with_context(|| format!("{}: cannot read member {name}", path.display()))?;
        let a = npy::parse(&bytes).with_context(|| format!("{}: member {name}", path.display()))?;
        out.insert(name, a);
    }
    Ok(out)
}
