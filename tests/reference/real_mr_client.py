"""The served default models on real MR slices that no inferd model trained on (tests/data/
real_mr_heldout.npz: dipy's t1_coronal_slice at 256², three slices of nipy's anatomical T1 volume and two
of dipy's noisy test_piesno volume at 128²; held out by package, see scripts/mr_data.py), against
zero-filled / gridding and BART 0.8 `pics`, called with NVIDIA's tritonclient as a client would.

Samplings: Cartesian variable-density lines at 4× along the rows and at 8× along the columns (`recon`), and
60 golden-angle radial spokes (`recon-radial`). Asserted: on every slice the served reconstruction beats
the zero-filled / gridded image in SSIM and PSNR (the model never harms an image), and its mean SSIM beats
BART's. Prints the table and "ok: real MR" on success.

Usage: python3 real_mr_client.py HOST:PORT
"""
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import mr_data as md  # noqa: E402
from recon_real_mr import bart, infer_cartesian, infer_radial, metrics  # noqa: E402
from orientation_client import readcfl, writecfl  # noqa: E402


def main():
    import tritonclient.grpc as g
    client = g.InferenceServerClient(sys.argv[1])
    data = np.load(os.path.join(HERE, "..", "data", "real_mr_heldout.npz"))
    rng = np.random.default_rng(7)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in sorted(data.files):
            img = data[name].astype(np.float64) / 65535.0
            n = img.shape[0]
            writecfl(os.path.join(d, "sens"), np.ones((n, n), np.complex64))
            k_full = md.fft2c(img)
            for accel, axis in ((4.0, "rows"), (8.0, "columns")):
                lines = md.mask_lines(rng, n, accel, "vd")
                mask = np.repeat(lines[:, None], n, 1) if axis == "rows" else np.repeat(lines[None, :], n, 0)
                k = k_full * mask
                writecfl(os.path.join(d, "ksp"), k.astype(np.complex64))
                bart("pics", "-S", "-R", "W:3:0:0.01", "ksp", "sens", "rec", cwd=d)
                rec, _ = infer_cartesian(client, "recon", k, mask)
                rows.append((name, f"cartesian {accel:g}x {axis}", metrics(md.ifft2c(k), img),
                             metrics(readcfl(os.path.join(d, "rec")), img), metrics(rec, img)))
            s = 60
            kx, ky = md.radial_coords(n, s)
            y = md.nufft_forward(img.astype(np.complex128), kx, ky)
            grid = md.nufft_adjoint(md.radial_ramp(n, s) * y, kx, ky, n)
            traj = np.stack([ky, kx], -1).reshape(s, 2 * n, 2)
            t3 = np.zeros((3, 2 * n, s), np.complex64)
            t3[0], t3[1] = traj[..., 0].T, traj[..., 1].T
            writecfl(os.path.join(d, "traj"), t3)
            writecfl(os.path.join(d, "kr"), y.reshape(s, 2 * n).T[None].astype(np.complex64))
            bart("pics", "-S", "-e", "-R", "W:3:0:0.005", "-t", "traj", "kr", "sens", "rec", cwd=d)
            rec, _ = infer_radial(client, "recon-radial", y.reshape(s, 2 * n), traj, n)
            rows.append((name, "radial 60 spokes", metrics(grid, img), metrics(readcfl(os.path.join(d, "rec")), img),
                         metrics(rec, img)))
    print("| slice | sampling | zero-filled / gridding SSIM, PSNR | BART | inferd |")
    for name, setting, z, b, r in rows:
        print(f"| {name} | {setting} | {z['ssim']:.4f}, {z['psnr']:.2f} | {b['ssim']:.4f}, {b['psnr']:.2f} | "
              f"{r['ssim']:.4f}, {r['psnr']:.2f} |")
    failures = []
    for name, setting, z, b, r in rows:
        if not (r["ssim"] > z["ssim"] and r["psnr"] > z["psnr"]):
            failures.append(f"{name} {setting}: inferd {r} vs zero-filled {z}")
    for setting in sorted({r[1] for r in rows}):
        sel = [r for r in rows if r[1] == setting]
        mb, mi = np.mean([r[3]["ssim"] for r in sel]), np.mean([r[4]["ssim"] for r in sel])
        print(f"{setting}: mean SSIM BART {mb:.4f}, inferd {mi:.4f}")
        if not mi > mb:
            failures.append(f"{setting}: mean SSIM {mi:.4f} does not beat BART's {mb:.4f}")
    assert not failures, "\n".join(failures)
    print("ok: real MR")


if __name__ == "__main__":
    main()
