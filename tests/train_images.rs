//! Training-image folders: DICOM written by pydicom (16-bit, rescaled, and 8-bit MONOCHROME1) and NPY
//! written by NumPy load with the expected pixel values.

mod common;

use inferd::train::data::load_folder;

const WRITE: &str = r#"
import sys, numpy as np, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
out = sys.argv[1]
def write(name, arr, bits, signed, photometric, slope=None, intercept=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(); ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage; ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits; ds.BitsStored = bits; ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None: ds.RescaleSlope = slope; ds.RescaleIntercept = intercept
    ds.PixelData = arr.tobytes()
    ds.save_as(f"{out}/{name}", enforce_file_format=True)
g = (np.arange(12 * 16).reshape(12, 16) * 3).astype(np.uint16)
write("a.dcm", g, 16, False, "MONOCHROME2", "2", "-5")
write("b", (np.arange(10 * 10).reshape(10, 10)).astype(np.uint8), 8, False, "MONOCHROME1")
np.save(f"{out}/c.npy", np.stack([np.full((9, 8), 0.5, np.float32), np.eye(9, 8, dtype=np.float32)]))
"#;

#[test]
fn loads_dicom_and_npy_written_by_pydicom_and_numpy() {
    let dir = tempfile::tempdir().unwrap();
    common::run(common::python().args(["-c", WRITE]).arg(dir.path()));
    let imgs = load_folder(dir.path()).unwrap();
    // a.dcm (1 frame), b (DICOM without extension), c.npy (2 images)
    assert_eq!(imgs.len(), 4);
    let (a, h, w) = &imgs[0];
    assert_eq!((*h, *w), (12, 16));
    assert_eq!(
        a[5],
        5.0 * 3.0 * 2.0 - 5.0,
        "RescaleSlope 2, RescaleIntercept -5 applied"
    );
    let (b, h, w) = &imgs[1];
    assert_eq!((*h, *w), (10, 10));
    assert_eq!((b[0], b[99]), (99.0, 0.0), "MONOCHROME1 is inverted");
    assert_eq!((imgs[2].1, imgs[2].2), (9, 8));
    assert_eq!(imgs[3].0[8 + 1], 1.0);
}
