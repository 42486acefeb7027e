"""Writes a golden-angle radial MRD file whose k-space BART made: `bart traj -r -G` (halved, as
inferd's radial tests do) and `bart nufft` of an asymmetric test image (an L-shape with a bar and a
gradient: different under every transpose and flip).

usage: mrd_radial.py OUT_DIR N SPOKES

OUT_DIR/radial.h5   the MRD file: header trajectory `radial`, reconstruction matrix N × N, one
                    acquisition per spoke of 2N samples, trajectory normalised to the field of view
                    in ISMRMRD's order (readout coordinate first): (k1 / N, k0 / N), where BART's
                    first coordinate k0 pairs with the image rows; the last spoke is flagged
                    ACQ_LAST_IN_SLICE.
OUT_DIR/truth.npy   the image [N, N] (rows first).
OUT_DIR/traj.npy    [spokes · 2N, 2] float32 (k0, k1) in grid units, spoke after spoke.
OUT_DIR/ksp.npy     [1, spokes · 2N] complex64, in the same order.
"""
import os
import sys
import tempfile

import ismrmrd
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from orientation_client import bart, readcfl, test_image, writecfl  # noqa: E402


def header(n, spokes):
    return f"""<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>
  <acquisitionSystemInformation><receiverChannels>1</receiverChannels></acquisitionSystemInformation>
  <encoding>
    <encodedSpace><matrixSize><x>{2 * n}</x><y>{spokes}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>480</x><y>240</y><z>5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{n}</x><y>{n}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>240</x><y>240</y><z>5</z></fieldOfView_mm></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{spokes - 1}</maximum><center>0</center></kspace_encoding_step_1>
    </encodingLimits>
    <trajectory>radial</trajectory>
  </encoding>
</ismrmrdHeader>"""


def main():
    out, n, spokes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    img = test_image(n).astype(np.complex64)
    with tempfile.TemporaryDirectory() as d:
        writecfl(os.path.join(d, "img"), img)
        bart("traj", "-r", "-G", "-x", str(2 * n), "-y", str(spokes), "t0", cwd=d)
        bart("scale", "0.5", "t0", "t", cwd=d)
        bart("nufft", "t", "img", "ksp", cwd=d)
        traj = readcfl(os.path.join(d, "t")).real  # [3, 2N, S]
        ksp = readcfl(os.path.join(d, "ksp"))[0]  # [2N, S]
    np.save(os.path.join(out, "truth.npy"), np.abs(img).astype(np.float32))
    k01 = traj[:2].transpose(2, 1, 0).astype(np.float32)  # [S, 2N, (k0, k1)]
    np.save(os.path.join(out, "traj.npy"), k01.reshape(-1, 2))
    np.save(os.path.join(out, "ksp.npy"), ksp.T.reshape(1, -1).astype(np.complex64))

    path = os.path.join(out, "radial.h5")
    if os.path.exists(path):
        os.remove(path)
    ds = ismrmrd.Dataset(path, "dataset", True)
    ds.write_xml_header(header(n, spokes).encode())
    for s in range(spokes):
        acq = ismrmrd.Acquisition.from_array(
            ksp[:, s][None].astype(np.complex64),
            # ISMRMRD order: readout coordinate (image columns, k1) first, normalised by N
            np.stack([k01[s, :, 1], k01[s, :, 0]], -1).astype(np.float32) / n,
        )
        acq.idx.kspace_encode_step_1 = s
        acq.center_sample = n
        acq.read_dir[:] = (1.0, 0.0, 0.0)
        acq.phase_dir[:] = (0.0, 1.0, 0.0)
        acq.slice_dir[:] = (0.0, 0.0, 1.0)
        acq.position[:] = (0.0, 0.0, 12.5)
        acq.acquisition_time_stamp = 1000 + s
        acq.measurement_uid = 77
        if s == spokes - 1:
            acq.setFlag(ismrmrd.ACQ_LAST_IN_SLICE)
        ds.append_acquisition(acq)
    ds.close()


if __name__ == "__main__":
    main()
