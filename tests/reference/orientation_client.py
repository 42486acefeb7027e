"""Orientation conventions checked the way a user meets them: an asymmetric image (an L with a bar and a
gradient, different under every transpose and flip) is made into k-space by BART 0.8 itself (`bart fft -u`
for Cartesian data, `bart traj -r -G` + `bart nufft` for golden-angle radial data), read back as BART's
own Python `cfl.readcfl` reads it (NumPy axis 0 = BART's first dimension), and sent to inferd's KServe
models with NVIDIA's tritonclient:

* `recon` with lines along the rows (phase encoding along H) and along the columns (along W);
* `recon-radial` with BART's trajectory as `traj` (coordinate 0 pairs with the image's first axis).

Each reconstruction must be the image itself, not one of its 7 other transposes/flips, and better than
the zero-filled (gridded) image. Prints "ok: orientation" on success.

Usage: python3 orientation_client.py HOST:PORT
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import tritonclient.grpc as g


def writecfl(name, array):
    """BART's python/cfl.py writecfl: header with the dimensions, complex64 data in Fortran order."""
    with open(name + ".hdr", "w") as h:
        h.write("# Dimensions\n")
        h.write(" ".join(str(d) for d in array.shape) + " \n")
    with open(name + ".cfl", "w") as d:
        array.T.astype(np.complex64).tofile(d)


def readcfl(name):
    """BART's python/cfl.py readcfl."""
    with open(name + ".hdr") as h:
        h.readline()
        dims = [int(i) for i in h.readline().split()]
    n = int(np.prod(dims))
    dims_prod = np.cumprod(dims)
    dims = dims[: int(np.searchsorted(dims_prod, n)) + 1]
    with open(name + ".cfl") as d:
        a = np.fromfile(d, dtype=np.complex64, count=n)
    return a.reshape(dims, order="F")


def bart(*args, cwd):
    subprocess.run(["bart", *args], cwd=cwd, check=True, capture_output=True)


def test_image(n):
    img = np.zeros((n, n), np.float32)
    img[int(0.15 * n):int(0.75 * n), int(0.2 * n):int(0.32 * n)] = 1.0   # vertical stroke of the L
    img[int(0.63 * n):int(0.75 * n), int(0.2 * n):int(0.62 * n)] = 1.0   # its foot, to the right
    img[int(0.2 * n):int(0.28 * n), int(0.55 * n):int(0.85 * n)] = 0.6   # a bar top right
    yy, xx = np.mgrid[0:n, 0:n] / n
    return img + 0.15 * xx * (yy < 0.9) + 0.05


def views(img):
    """The 8 transposes/flips of a square image (index 0 = itself)."""
    out = []
    for t in (img, img.T):
        for fy in (False, True):
            for fx in (False, True):
                v = t[::-1] if fy else t
                out.append(v[:, ::-1] if fx else v)
    return out


def nmse(a, ref):
    return float(np.sum((a - ref) ** 2) / np.sum(ref ** 2))


def check(name, rec, zf, img):
    errs = [nmse(rec, v) for v in views(img)]
    best = int(np.argmin(errs))
    print(f"{name}: NMSE vs image {errs[0]:.4f} (zero-filled {nmse(zf, img):.4f}); best of the 8 views: {best}")
    assert best == 0, f"{name}: the reconstruction matches view {best}, not the image"
    assert errs[0] < 0.5 * min(errs[1:]), f"{name}: orientation not clearly determined {errs}"
    assert errs[0] < nmse(zf, img), f"{name}: worse than zero-filled"


def main():
    url = sys.argv[1]
    c = g.InferenceServerClient(url)
    n = 128
    img = test_image(n)
    with tempfile.TemporaryDirectory() as d:
        writecfl(os.path.join(d, "img"), img.astype(np.complex64))
        # Cartesian: BART's centred orthonormal FFT over both dimensions
        bart("fft", "-u", "3", "img", "ksp", cwd=d)
        ksp = readcfl(os.path.join(d, "ksp"))
        rng = np.random.default_rng(5)
        lines = np.zeros(n, bool)
        lines[n // 2 - 6:n // 2 + 6] = True
        lines[rng.choice(n, n // 4, replace=False)] = True
        for name, mask in [("cartesian rows", np.repeat(lines[:, None], n, 1)),
                           ("cartesian columns", np.repeat(lines[None, :], n, 0))]:
            k = np.where(mask, ksp, 0)
            kin = g.InferInput("kspace", [1, 1, n, n, 2], "FP32")
            kin.set_data_from_numpy(np.stack([k.real, k.imag], -1)[None, None].astype(np.float32))
            min_ = g.InferInput("mask", [1, n, n], "FP32")
            min_.set_data_from_numpy(mask[None].astype(np.float32))
            rec = c.infer("recon", [kin, min_]).as_numpy("image")[0]
            zf = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho")))
            check(name, rec, zf, img)
        # Radial: BART's golden-angle trajectory and NUFFT
        spokes = 48
        bart("traj", "-r", "-G", "-x", str(2 * n), "-y", str(spokes), "t0", cwd=d)
        bart("scale", "0.5", "t0", "t", cwd=d)
        bart("nufft", "t", "img", "ksp_r", cwd=d)
        traj = readcfl(os.path.join(d, "t")).real  # [3, 2N, S]
        kr = readcfl(os.path.join(d, "ksp_r"))      # [1, 2N, S]
        # gridding with a ramp density compensation, by BART's adjoint NUFFT
        ramp = np.hypot(traj[0], traj[1])[None]
        writecfl(os.path.join(d, "kw"), (kr * ramp).astype(np.complex64))
        bart("nufft", "-a", "t", "kw", "grid", cwd=d)
        grid = np.abs(readcfl(os.path.join(d, "grid")))
    # inferd's NUFFT is orthonormal (1/N); BART's nufft is not normalised: scale does not matter for the
    # orientation, and the comparison below fits each image's scale.
    t = np.ascontiguousarray(traj[:2].transpose(2, 1, 0))[None].astype(np.float32)   # [1, S, 2N, 2]
    k = kr[0].T                                                                          # [S, 2N]
    kin = g.InferInput("kspace", [1, 1, spokes, 2 * n, 2], "FP32")
    kin.set_data_from_numpy(np.stack([k.real, k.imag], -1)[None, None].astype(np.float32))
    tin = g.InferInput("traj", [1, spokes, 2 * n, 2], "FP32")
    tin.set_data_from_numpy(t)
    rec = c.infer("recon-radial", [kin, tin], parameters={"image_size": n}).as_numpy("image")[0]
    fit = lambda a: a * float(np.sum(a * img) / np.sum(a * a))
    # BART's own gridding is oriented as BART sees the image (a check of this script's conventions)
    gv = [nmse(fit(grid), v) for v in views(img)]
    assert int(np.argmin(gv)) == 0, f"BART's own adjoint is not in the image's orientation: {gv}"
    check("radial (BART traj -r -G, bart nufft)", fit(rec), fit(grid), img)
    print("ok: orientation")


if __name__ == "__main__":
    main()
