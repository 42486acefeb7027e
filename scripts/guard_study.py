"""Design study of the spectral guard on training-source MR only (never the validation sources).

Runs the shipped unrolled model (PyTorch twin, tests/reference/unrolled.py) on slices of the training
bank (nilearn MNI T1 and T2-like, dipy S0_10slices and aniso_vox) as they are and reduced to a low
resolution then interpolated back to the matrix size (as a low-resolution series is shown), under 1-D
variable-density masks at 4× and 8× on rows and, through a transposed image, on columns, at 192², 256²
and 320²; caches the last pass's image (before its data consistency) and the final image, then scores
guard variants on the cache with the benchmark's metrics (bench/recon_real_mr.py: SSIM after one
least-squares scale): mean SSIM/PSNR and the per-image change against the zero-filled image.

  python3 scripts/guard_study.py run --bank /var/tmp/inferd-mr --cache /var/tmp/guard-cache.npz
  python3 scripts/guard_study.py score --cache /var/tmp/guard-cache.npz
"""
import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import mr_data as md  # noqa: E402
import unrolled as ur  # noqa: E402
from recon_real_mr import metrics  # noqa: E402

TRAIN_SOURCES = ("nilearn/mni_t1", "nilearn/mni_t2like", "dipy/S0_10slices", "dipy/aniso_vox")


def study_images(bank, count, sizes, seed):
    """(key, size, low-resolution size or 0, image in [0, 1]) of training-source slices."""
    from skimage.transform import resize
    train = md.load_bank(os.path.join(bank, "train.npz"))
    rng = np.random.default_rng(seed)
    by_source = [rng.permutation(sorted(k for k in train if k.startswith(src))) for src in TRAIN_SOURCES]
    out = []
    for i in range(count):
        keys = by_source[i % len(by_source)]
        key = keys[(i // len(by_source)) % len(keys)]
        img = train[key]
        n = int(rng.choice(sizes))
        low = 0
        if rng.random() < 0.5:
            # a low-resolution series (12 to 80 pixels across) shown at the matrix size
            low = int(rng.integers(12, 81))
            shape = (low, max(8, int(round(low * img.shape[1] / img.shape[0]))))
            img = resize(img, shape, anti_aliasing=True)
        img = np.clip(resize(img, (n, n), anti_aliasing=True, order=3), 0, None)
        if rng.random() < 0.5:
            img = img.T
        out.append((key, n, low, img / img.max()))
    return out


def run(args):
    torch.set_num_threads(os.cpu_count() or 1)
    from safetensors.torch import load_file
    state = load_file(args.weights)
    model = ur.Unrolled(width=32, res_blocks=2, iterations=len(state["unrolled.lambda"]))
    model.load_inferd_state_dict(state)
    model.eval()
    rng = np.random.default_rng(args.seed)
    cache = {}
    for i, (key, n, low, img) in enumerate(study_images(args.bank, args.images, args.sizes, args.seed)):
        for r in (4.0, 8.0):
            lines = md.mask_lines(rng, n, r, "vd")
            mask = np.repeat(lines[:, None], n, 1).astype(np.float32)
            k = md.fft2c(img) * mask
            x0 = md.ifft2c(k)
            s = np.abs(x0).max() / md.NET_INPUT_PEAK
            y = torch.from_numpy((k / s).astype(np.complex64))[None]
            op = ur.CartesianOp(y, torch.from_numpy(mask)[None])
            with torch.no_grad():
                x, last = model.forward(torch.from_numpy((x0 / s).astype(np.complex64))[None], op, with_last=True)
            tag = f"{i}|{key.replace('/', ':')}|{n}|{low}|{r:g}"
            cache[tag + "|truth"] = img.astype(np.float32)
            cache[tag + "|mask"] = lines
            cache[tag + "|y"] = (k / s).astype(np.complex64)
            cache[tag + "|last"] = last[0].numpy()
            cache[tag + "|final"] = x[0].numpy()
        print(f"{i + 1}/{args.images} {key} {n}² low {low}", file=sys.stderr, flush=True)
    np.savez(args.cache, **cache)


def served_gains(last, y, mask, lines=ur.DEFAULT_GUARD_LINES):
    """The guard as inferd serves it (tests/reference/unrolled.py's `band_gains`)."""
    g = ur.band_gains(torch.from_numpy(md.fft2c(last))[None], torch.from_numpy(y)[None],
                      torch.from_numpy(np.repeat(mask[:, None], y.shape[1], 1).astype(np.float32)), lines)
    return None if g is None else g.numpy()


def line_coords(mask):
    n = mask.shape[0]
    return np.abs(np.arange(n) - n // 2) / (n / 2)


def fit(num, den):
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else None


def line_stats(pred, ref, mask):
    """Per line: Re<pred, ref> and ‖pred‖² (rows of [n, n] k-space)."""
    return (pred.conj() * ref).real.sum(axis=1), (np.abs(pred) ** 2).sum(axis=1)


def groups_gains(groups, num, den, mask):
    """Gains per line from groups of line indices (each group's unmeasured lines take the fit over its
    measured lines; a group without measured lines takes the previous group's gain)."""
    g_line = np.ones(mask.shape[0])
    g = 1.0
    for grp in groups:
        meas = [i for i in grp if mask[i]]
        if meas:
            f = fit(num[meas].sum(), den[meas].sum())
            g = f if f is not None else g
        for i in grp:
            if not mask[i]:
                g_line[i] = g
    return g_line[:, None]


def rings(mask, bands, edges=None):
    c = line_coords(mask)
    r0, r1 = c[~mask].min(), c.max()
    if edges is None:
        edges = np.linspace(r0, r1, bands + 1)
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, len(edges) - 2)
    return [[i for i in range(len(mask)) if c[i] >= r0 and idx[i] == b] for b in range(len(edges) - 1)]


def ring_gains(c, bands=8, pred="last", quantile=False, oracle=False):
    """Per-ring gains: the 2026-12-05 guard (equal-width rings), rings holding equal numbers of measured
    lines (`quantile`), or with `oracle` the best factor per ring computed from the truth (a bound no
    served guard can reach)."""
    mask = c["mask"]
    k = md.fft2c(c[pred])
    if oracle:
        # truth in the network's scale: least-squares factor over the measured samples
        t = md.fft2c(c["truth"].astype(np.complex128))
        a = (t[mask].conj() * c["y"][mask]).sum().real / (np.abs(t[mask]) ** 2).sum()
        ref = t * a
        num, den = line_stats(md.fft2c(c["final"]), ref, mask)
        lines = ~mask
        cm = line_coords(mask)
        r0 = cm[~mask].min()
        edges = np.linspace(r0, cm.max(), bands + 1)
        idx = np.clip(np.searchsorted(edges, cm, side="right") - 1, 0, bands - 1)
        g = np.ones(len(mask))
        for b in range(bands):
            sel = lines & (idx == b) & (cm >= r0)
            f = fit(num[sel].sum(), den[sel].sum())
            g[sel] = 1.0 if f is None else f
        return g[:, None]
    num, den = line_stats(k, c["y"], mask)
    edges = None
    if quantile:
        cm = line_coords(mask)
        r0 = cm[~mask].min()
        meas = np.sort(cm[mask & (cm >= r0)])
        edges = np.concatenate([[r0], np.quantile(meas, np.linspace(0, 1, bands + 1))[1:-1], [cm.max()]]) if len(meas) else None
    return groups_gains(rings(mask, bands, edges), num, den, mask)


def local_gains(c, half=2):
    """Per unmeasured line: the fit over the 2·`half` measured lines nearest in distance from the centre."""
    mask = c["mask"]
    num, den = line_stats(md.fft2c(c["last"]), c["y"], mask)
    cm = line_coords(mask)
    r0 = cm[~mask].min()
    outer = [i for i in range(len(mask)) if mask[i] and cm[i] >= r0]
    g = np.ones(len(mask))
    for i in range(len(mask)):
        if mask[i]:
            continue
        near = sorted(outer, key=lambda j: abs(cm[j] - cm[i]))[: 2 * half]
        f = fit(num[near].sum(), den[near].sum()) if near else None
        g[i] = 1.0 if f is None else f
    return g[:, None]


def capped_gains(c, lines=2.0):
    """The served gains, then each unmeasured line's kept energy capped at the mean energy of the
    measured lines of the same neighbourhood (the spectrum the measurements show there)."""
    mask = c["mask"]
    n = len(mask)
    g = served_gains(c["last"], c["y"], mask)[:, 0].astype(np.float64)
    kf = md.fft2c(c["final"])
    e_pred = (np.abs(kf) ** 2).sum(axis=1)
    e_meas = (np.abs(c["y"]) ** 2).sum(axis=1)
    cm = np.abs(np.arange(n) - n // 2)
    c0 = cm[~mask].min()
    outer = [i for i in range(n) if mask[i] and cm[i] >= c0]
    for i in range(n):
        if mask[i] or not outer:
            continue
        near = sorted(outer, key=lambda j: (abs(cm[j] - cm[i]), cm[j]))[: int(lines)]
        cap = np.mean(e_meas[near])
        kept = g[i] ** 2 * e_pred[i]
        if kept > cap:
            g[i] *= np.sqrt(cap / kept)
    return g[:, None]


VARIANTS = {
    "capped": capped_gains,
    "pow1.5": lambda c: served_gains(c["last"], c["y"], c["mask"]) ** 1.5,
    "near1": lambda c: served_gains(c["last"], c["y"], c["mask"], 1),
    "near4": lambda c: served_gains(c["last"], c["y"], c["mask"], 4),
    "none": lambda c: None,
    "served": lambda c: served_gains(c["last"], c["y"], c["mask"]),
    "rings8": lambda c: ring_gains(c, 8),
    "rings4": lambda c: ring_gains(c, 4),
    "rings16": lambda c: ring_gains(c, 16),
    "quantile8": lambda c: ring_gains(c, 8, quantile=True),
    "squared": lambda c: ring_gains(c, 8) ** 2,
    "local1": lambda c: local_gains(c, 1),
    "local2": lambda c: local_gains(c, 2),
    "local3": lambda c: local_gains(c, 3),
    "local4": lambda c: local_gains(c, 4),
    "oracle8": lambda c: ring_gains(c, 8, oracle=True),
    "oracle32": lambda c: ring_gains(c, 32, oracle=True),
}


def guarded(c, gains):
    k = md.fft2c(c["final"])
    if gains is not None:
        k = np.where(c["mask"][:, None], k, k * np.broadcast_to(gains, k.shape))
    return md.ifft2c(k)


def load_cache(path):
    z = np.load(path)
    items = {}
    for name in z.files:
        tag, field = name.rsplit("|", 1)
        items.setdefault(tag, {})[field] = z[name]
    return items


def score(args):
    items = load_cache(args.cache)
    rows = {v: [] for v in args.variants}
    for tag, c in sorted(items.items()):
        truth = c["truth"].astype(np.float64)
        zf = metrics(md.ifft2c(c["y"]), truth)
        for v in args.variants:
            m = metrics(guarded(c, VARIANTS[v](c)), truth)
            rows[v].append((tag, m["ssim"] - zf["ssim"], m["psnr"] - zf["psnr"], m["ssim"], m["psnr"]))
    for v, r in rows.items():
        ds = np.array([x[1] for x in r])
        dp = np.array([x[2] for x in r])
        worst = min(r, key=lambda x: x[1])
        print(f"{v:>12}: mean SSIM {np.mean([x[3] for x in r]):.4f} PSNR {np.mean([x[4] for x in r]):.2f} | "
              f"below zero-filled: SSIM {int((ds < 0).sum())}/{len(r)} PSNR {int((dp < 0).sum())} | "
              f"worst ΔSSIM {ds.min():+.4f} ({worst[0]}) worst ΔPSNR {dp.min():+.2f}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bank", default="/var/tmp/inferd-mr")
    r.add_argument("--weights", default=os.path.join(HERE, "..", "models", "recon-unrolled.safetensors"))
    r.add_argument("--cache", required=True)
    r.add_argument("--images", type=int, default=48)
    r.add_argument("--sizes", type=int, nargs="+", default=[192, 256, 320])
    r.add_argument("--seed", type=int, default=7)
    s = sub.add_parser("score")
    s.add_argument("--cache", required=True)
    s.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    run(args) if args.cmd == "run" else score(args)


if __name__ == "__main__":
    main()
