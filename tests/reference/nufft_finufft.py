"""FINUFFT reference for inferd's NUFFT (tests/nufft.rs).

Usage: nufft_finufft.py DIR

Reads DIR/coords.npy ([n, 2] float32, (kx, ky) in grid units, -N/2 <= k < N/2), DIR/images.npy
([B, ny, nx] complex64) and DIR/samples.npy ([B, n] complex64); writes DIR/forward_ref.npy ([B, n]) and
DIR/adjoint_ref.npy ([B, ny, nx]) computed by FINUFFT in double precision at tolerance 1e-9, in inferd's
convention: forward = sum_x f(x) exp(-2 pi i (kx x / nx + ky y / ny)) / sqrt(nx ny), with x, y the pixel
indices measured from the image centre, and the adjoint with the opposite sign and the same scale.
FINUFFT takes coordinates in radians (2 pi k / N) with the first coordinate along the first array axis
(here y, the rows) and centred mode order (index i is frequency i - N // 2), which is inferd's centring.
"""

import sys
from pathlib import Path

import finufft
import numpy as np

EPS = 1e-9


def main() -> None:
    d = Path(sys.argv[1])
    coords = np.load(d / "coords.npy").astype(np.float64)
    images = np.load(d / "images.npy").astype(np.complex128)
    samples = np.load(d / "samples.npy").astype(np.complex128)
    _, ny, nx = images.shape
    kx, ky = coords[:, 0], coords[:, 1]
    # first FINUFFT coordinate goes with the first array axis (rows, y)
    xr = np.ascontiguousarray(2 * np.pi * ky / ny)
    yr = np.ascontiguousarray(2 * np.pi * kx / nx)
    scale = 1.0 / np.sqrt(nx * ny)
    fwd = finufft.nufft2d2(xr, yr, images, isign=-1, eps=EPS) * scale
    adj = finufft.nufft2d1(xr, yr, samples, (ny, nx), isign=+1, eps=EPS) * scale
    np.save(d / "forward_ref.npy", np.asarray(fwd, dtype=np.complex64).reshape(images.shape[0], -1))
    np.save(d / "adjoint_ref.npy", np.asarray(adj, dtype=np.complex64).reshape(images.shape))


if __name__ == "__main__":
    main()
