"""Reconstruction quality on real MR that no inferd model trained on, side by side in one run:
zero-filled / gridding, BART 0.8 `pics` (l1-wavelet compressed sensing) and inferd's served models (over
KServe with NVIDIA's tritonclient, as a client would call them).

Images: the held-out validation slices of scripts/mr_data.py (nipy's anatomical T1 volume, dipy's
t1_coronal_slice and test_piesno), resampled to each size, magnitude (real, non-negative) as clinical
DICOM images are; none of them was used for training, tuning or choosing a model. Never pydicom's or
pydicom-data's images.

Samplings:
  * Cartesian 4× and 8×: 1-D variable-density line masks (inferd's vd1d density, centre 0.32/R), the
    lines along the rows (phase encoding along H) and along the columns (along W);
  * radial: 30, 60 and 120 golden-angle spokes of 2N samples (`bart traj -r -G -x 2N -y S`, scaled 0.5).
Baselines: zero-filled = |IFFT| of the masked k-space; gridding = the adjoint NUFFT with inferd's ramp
density compensation; BART `pics -S -R W:3:0:0.01` (Cartesian, all-ones sensitivities) and
`pics -e -R W:3:0:0.005 -t traj` (radial). BART and inferd get the same k-space.
Metrics (fastMRI convention, magnitude images, 7×7 window, data range = the reference's maximum): SSIM,
PSNR, NMSE; each reconstruction is first fitted to the reference by one least-squares scale (BART's
radial NUFFT is not orthonormal). Time: wall clock per slice (BART: one process per slice, as a script
would call it; inferd: one ModelInfer round trip).

Usage: python3 bench/recon_real_mr.py HOST:PORT --models recon,recon-lite --radial-models recon-radial
          [--sizes 192,256,320] [--bank /var/tmp/inferd-mr] [--out results.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import mr_data as md  # noqa: E402
from orientation_client import readcfl, writecfl  # noqa: E402


def ssim(x, y, data_range):
    from scipy.ndimage import uniform_filter
    f = lambda a: uniform_filter(a, 7, mode="constant")[3:-3, 3:-3]
    mx, my = f(x), f(y)
    vx = (f(x * x) - mx * mx) * 49 / 48
    vy = (f(y * y) - my * my) * 49 / 48
    cxy = (f(x * y) - mx * my) * 49 / 48
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())


def metrics(rec, ref):
    rec = np.abs(rec).astype(np.float64)
    a = float(np.sum(rec * ref) / max(np.sum(rec * rec), 1e-30))
    rec = rec * a
    mse = float(np.mean((rec - ref) ** 2))
    return {"ssim": ssim(rec, ref, ref.max()), "psnr": 10 * np.log10(ref.max() ** 2 / mse),
            "nmse": float(np.sum((rec - ref) ** 2) / np.sum(ref ** 2))}


def bart(*args, cwd):
    t = time.perf_counter()
    subprocess.run(["bart", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def images(bank, sizes, per_source):
    from skimage.transform import resize
    val = md.load_bank(os.path.join(bank, "val.npz"))
    by_source = {}
    for k in sorted(val):
        src = "/".join(k.split("/")[:2])
        by_source.setdefault(src, []).append(k)
    out = []
    for src, keys in sorted(by_source.items()):
        step = max(1, len(keys) // per_source)
        for k in keys[::step][:per_source]:
            for n in sizes:
                img = resize(val[k], (n, n), anti_aliasing=True, order=3)
                img = np.clip(img, 0, None)
                out.append((src, k, n, img / img.max()))
    return out


def infer_cartesian(client, model, k, mask):
    import tritonclient.grpc as g
    n0, n1 = k.shape
    kin = g.InferInput("kspace", [1, 1, n0, n1, 2], "FP32")
    kin.set_data_from_numpy(np.stack([k.real, k.imag], -1)[None, None].astype(np.float32))
    m = g.InferInput("mask", [1, n0, n1], "FP32")
    m.set_data_from_numpy(mask[None].astype(np.float32))
    t = time.perf_counter()
    out = client.infer(model, [kin, m]).as_numpy("image")[0]
    return out, time.perf_counter() - t


def infer_radial(client, model, y, traj, n):
    import tritonclient.grpc as g
    s, r = traj.shape[:2]
    kin = g.InferInput("kspace", [1, 1, s, r, 2], "FP32")
    kin.set_data_from_numpy(np.stack([y.real, y.imag], -1).reshape(1, 1, s, r, 2).astype(np.float32))
    tin = g.InferInput("traj", [1, s, r, 2], "FP32")
    tin.set_data_from_numpy(traj[None].astype(np.float32))
    t = time.perf_counter()
    out = client.infer(model, [kin, tin], parameters={"image_size": n}).as_numpy("image")[0]
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--models", default="recon")
    ap.add_argument("--radial-models", default="recon-radial")
    ap.add_argument("--sizes", default="192,256,320")
    ap.add_argument("--bank", default="/var/tmp/inferd-mr")
    ap.add_argument("--per-source", type=int, default=6)
    ap.add_argument("--accelerations", default="4,8")
    ap.add_argument("--spokes", default="30,60,120")
    ap.add_argument("--out")
    args = ap.parse_args()
    import tritonclient.grpc as g
    client = g.InferenceServerClient(args.url)
    models = [m for m in args.models.split(",") if m]
    rmodels = [m for m in args.radial_models.split(",") if m]
    rows = []
    data = images(args.bank, [int(s) for s in args.sizes.split(",")], args.per_source)
    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory() as d:
        writecfl(os.path.join(d, "sens1"), np.ones((1, 1), np.complex64))
        for src, key, n, img in data:
            writecfl(os.path.join(d, "sens"), np.ones((n, n), np.complex64))
            k_full = md.fft2c(img)
            for r in [float(a) for a in args.accelerations.split(",") if a]:
                lines = md.mask_lines(rng, n, r, "vd")
                for axis in ("rows", "columns"):
                    mask = np.repeat(lines[:, None], n, 1) if axis == "rows" else np.repeat(lines[None, :], n, 0)
                    k = k_full * mask
                    setting = f"cartesian {r:g}x {axis}"
                    res = {"zero-filled": (metrics(md.ifft2c(k), img), 0.0)}
                    writecfl(os.path.join(d, "ksp"), k.astype(np.complex64))
                    tb = bart("pics", "-S", "-R", "W:3:0:0.01", "ksp", "sens", "rec", cwd=d)
                    res["BART"] = (metrics(readcfl(os.path.join(d, "rec")), img), tb)
                    for m in models:
                        rec, ti = infer_cartesian(client, m, k, mask)
                        res[m] = (metrics(rec, img), ti)
                    rows.append({"source": src, "image": key, "size": n, "setting": setting, "results": res})
            for s in [int(v) for v in args.spokes.split(",") if v]:
                kx, ky = md.radial_coords(n, s)
                w = md.radial_ramp(n, s)
                y = md.nufft_forward(img.astype(np.complex128), kx, ky)
                grid = md.nufft_adjoint(w * y, kx, ky, n)
                # BART's order: k0 along the image's first axis = the NUFFT's ky
                traj = np.stack([ky, kx], -1).reshape(s, 2 * n, 2)
                t3 = np.zeros((3, 2 * n, s), np.complex64)
                t3[0], t3[1] = traj[..., 0].T, traj[..., 1].T
                writecfl(os.path.join(d, "traj"), t3)
                writecfl(os.path.join(d, "kr"), y.reshape(s, 2 * n).T[None].astype(np.complex64))
                setting = f"radial {s} spokes"
                res = {"gridding": (metrics(grid, img), 0.0)}
                tb = bart("pics", "-S", "-e", "-R", "W:3:0:0.005", "-t", "traj", "kr", "sens", "rec", cwd=d)
                res["BART"] = (metrics(readcfl(os.path.join(d, "rec")), img), tb)
                for m in rmodels:
                    rec, ti = infer_radial(client, m, y.reshape(s, 2 * n), traj, n)
                    res[m] = (metrics(rec, img), ti)
                rows.append({"source": src, "image": key, "size": n, "setting": setting, "results": res})
            print(f"{key} {n}²: done", file=sys.stderr, flush=True)
    report(rows, models, rmodels)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, default=float)
    throughput(client, models, data)


def throughput(client, models, data, n=256, batch=8):
    """Time per slice when a client sends a stack of slices in one request (the server batches them
    through the network), next to one slice per request; Cartesian 4× rows."""
    imgs = [img for _, _, size, img in data if size == n][:batch]
    if len(imgs) < batch:
        return
    rng = np.random.default_rng(9)
    mask = np.repeat(md.mask_lines(rng, n, 4.0, "vd")[:, None], n, 1)
    k = np.stack([md.fft2c(i) * mask for i in imgs])
    import tritonclient.grpc as g
    print()
    print(f"| model ({n}², Cartesian 4×) | s / slice, one slice per request | s / slice, {batch} slices in one request |")
    print("|---|---|---|")
    for m in models:
        single = np.median([infer_cartesian(client, m, k[0], mask)[1] for _ in range(3)])
        kin = g.InferInput("kspace", [batch, 1, n, n, 2], "FP32")
        kin.set_data_from_numpy(np.stack([k.real, k.imag], -1)[:, None].astype(np.float32))
        min_ = g.InferInput("mask", [batch, n, n], "FP32")
        min_.set_data_from_numpy(np.repeat(mask[None], batch, 0).astype(np.float32))
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            client.infer(m, [kin, min_])
            ts.append(time.perf_counter() - t)
        print(f"| {m} | {single:.3f} | {min(ts) / batch:.3f} |")


def report(rows, models, rmodels):
    settings = []
    for r in rows:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    print("| sampling | method | SSIM | PSNR (dB) | NMSE | time / slice (s) | beats BART (SSIM) | worst ΔSSIM vs zero-filled | worst ΔPSNR vs zero-filled |")
    print("|---|---|---|---|---|---|---|---|---|")
    for st in settings:
        rs = [r for r in rows if r["setting"] == st]
        base = "gridding" if st.startswith("radial") else "zero-filled"
        methods = [base, "BART"] + (rmodels if st.startswith("radial") else models)
        for m in methods:
            ms = [r["results"][m][0] for r in rs]
            ts = [r["results"][m][1] for r in rs]
            ssim_m = np.mean([v["ssim"] for v in ms])
            psnr_m = np.mean([v["psnr"] for v in ms])
            nmse_m = np.mean([v["nmse"] for v in ms])
            extra = ["", "", ""]
            if m not in (base, "BART"):
                wins = np.mean([r["results"][m][0]["ssim"] > r["results"]["BART"][0]["ssim"] for r in rs])
                dz = min(r["results"][m][0]["ssim"] - r["results"][base][0]["ssim"] for r in rs)
                dp = min(r["results"][m][0]["psnr"] - r["results"][base][0]["psnr"] for r in rs)
                extra = [f"{100 * wins:.0f} %", f"{dz:+.4f}", f"{dp:+.2f}"]
            t = f"{np.median(ts):.3f}" if m != base else "–"
            print(f"| {st} | {m} | {ssim_m:.4f} | {psnr_m:.2f} | {nmse_m:.4f} | {t} | " + " | ".join(extra) + " |")
    # per source, per method: mean SSIM over all Cartesian / radial settings
    print()
    print("| source | sampling | " + " | ".join(["zero-filled/gridding", "BART"] + [f"{m}" for m in models]) + " |")
    print("|---|---|" + "---|" * (2 + len(models)))
    for src in sorted({r["source"] for r in rows}):
        for kind, ms in (("cartesian", models), ("radial", rmodels)):
            rs = [r for r in rows if r["source"] == src and r["setting"].startswith(kind)]
            if not rs:
                continue
            base = "gridding" if kind == "radial" else "zero-filled"
            vals = [np.mean([r["results"][m][0]["ssim"] for r in rs]) for m in [base, "BART"] + ms]
            print(f"| {src} | {kind} | " + " | ".join(f"{v:.4f}" for v in vals) + (" |" * 1) + ("" if len(ms) == len(models) else " – |" * (len(models) - len(ms))))


if __name__ == "__main__":
    main()
