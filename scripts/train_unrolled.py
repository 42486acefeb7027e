"""Trains inferd's unrolled ReconResNet (tests/reference/unrolled.py) on simulated undersampling of real MR
slices, natural images and synthetic phantoms (scripts/mr_data.py), and writes the weights inferd serves.

Every step draws a fresh batch: a source image, a random view of it (rotation, flips, transposes, zoom,
contrast, bias field), a smooth random phase half of the time, complex noise half of the time, then either
a Cartesian line mask (variable density, fastMRI random, equispaced or Gaussian; 2.5-10×; lines along the
rows, the orientation inferd runs the network in) or golden-angle radial spokes (`--radial`). Loss: L1 +
(1 − SSIM) of the magnitude after the last data consistency, plus a small weight on the last pass's misfit
to the measured data (what inferd's guard checks). Adam with cosine decay to 5 %.

Validation (printed every --val-every steps, on slices no model trains on: nipy's anatomical volume, dipy's
t1_coronal_slice and test_piesno): SSIM/PSNR of zero-filled (gridded) and reconstructed images, per image
minimum improvement included.

  python3 scripts/mr_data.py bank --out /var/tmp/inferd-mr --phantoms /var/tmp/inferd-phantoms
  python3 scripts/train_unrolled.py --bank /var/tmp/inferd-mr --out models/recon-unrolled.safetensors \
      --width 32 --blocks 2 --iterations 5 --minutes 120
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
sys.path.insert(0, HERE)
import mr_data as md  # noqa: E402
from unrolled import CartesianOp, ToeplitzOp, Unrolled  # noqa: E402


def ssim_map(x, y, data_range):
    """SSIM with a 7×7 uniform window (fastMRI's constants), per image mean. x, y: [B, H, W]."""
    x, y = x[:, None], y[:, None]
    win = torch.ones(1, 1, 7, 7, dtype=x.dtype) / 49.0
    f = lambda t: F.conv2d(t, win)
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def psnr(x, y):
    mse = ((x - y) ** 2).mean(dim=(-2, -1))
    return 10 * torch.log10(y.amax(dim=(-2, -1)) ** 2 / mse)


class Sampler:
    """Draws source images with the given source weights."""

    def __init__(self, bank, weights, rng):
        self.rng = rng
        self.groups = {}
        for k, v in bank.items():
            src = k.split("/")[0]
            self.groups.setdefault(src, []).append(v)
        self.names = [g for g in weights if g in self.groups]
        w = np.array([weights[g] for g in self.names], float)
        self.p = w / w.sum()

    def image(self, n):
        while True:
            g = self.groups[self.names[self.rng.choice(len(self.names), p=self.p)]]
            a = md.augment(self.rng, g[self.rng.integers(len(g))], n)
            if a is not None and (a > 0.1).mean() > 0.03:
                return a


def cartesian_batch(sampler, rng, n, batch):
    xs, ys, ms, ts = [], [], [], []
    for _ in range(batch):
        mask = md.random_mask(rng, n)
        x0, y, t = md.cartesian_example(rng, sampler.image(n), mask)
        xs.append(x0), ys.append(y), ms.append(mask), ts.append(t)
    c = lambda a: torch.from_numpy(np.stack(a).astype(np.complex64))
    return c(xs), CartesianOp(c(ys), torch.from_numpy(np.stack(ms))), torch.from_numpy(np.stack(ts).astype(np.float32))


def radial_batch(sampler, rng, n, batch, spokes):
    kx, ky = md.radial_coords(n, spokes, first=0.0 if rng.random() < 0.7 else rng.uniform(0, np.pi))
    w = md.radial_ramp(n, spokes)
    kern = torch.from_numpy(md.toeplitz_kernel(kx, ky, w, n).astype(np.complex64))[None]
    xs, aty, ts, ywy = [], [], [], []
    for _ in range(batch):
        x0, a, t, e = md.radial_example(rng, sampler.image(n), kx, ky, w)
        xs.append(x0), aty.append(a), ts.append(t), ywy.append(e)
    c = lambda a: torch.from_numpy(np.stack(a).astype(np.complex64))
    return c(xs), ToeplitzOp(kern, c(aty), torch.tensor(ywy)), torch.from_numpy(np.stack(ts).astype(np.float32))


def validation_set(bank, radial, n=160, seed=1234):
    """Fixed held-out examples: each validation slice at 4× and 8× (vd lines) or 30 and 60 spokes."""
    rng = np.random.default_rng(seed)
    sets = []
    keys = sorted(bank)
    for setting in ([30, 60] if radial else [4.0, 8.0]):
        items = []
        for k in keys:
            from skimage.transform import resize
            mag = resize(bank[k], (n, n), anti_aliasing=True)
            mag = np.clip(mag, 0, None) / max(mag.max(), 1e-9)
            if radial:
                items.append((k, mag))
            else:
                lines = md.mask_lines(rng, n, setting, "vd")
                items.append((k, mag, np.repeat(lines[:, None], n, 1).astype(np.float32)))
        sets.append((setting, items))
    return sets


def evaluate(model, sets, radial):
    model.eval()
    out = []
    with torch.no_grad():
        for setting, items in sets:
            if radial:
                n = items[0][1].shape[0]
                kx, ky = md.radial_coords(n, setting)
                w = md.radial_ramp(n, setting)
                kern = torch.from_numpy(md.toeplitz_kernel(kx, ky, w, n).astype(np.complex64))[None]
            zs, rs, zp, rp, misfits = [], [], [], [], []
            for it in items:
                rng = np.random.default_rng(0)
                mag = it[1]
                if radial:
                    y = md.nufft_forward(mag.astype(np.complex128), kx, ky)
                    x0 = md.nufft_adjoint(w * y, kx, ky, n)
                    s = np.abs(x0).max() / md.NET_INPUT_PEAK
                    op = ToeplitzOp(kern, torch.from_numpy((x0 / s).astype(np.complex64))[None],
                                    torch.tensor([np.sum(w * np.abs(y) ** 2) / s ** 2]))
                else:
                    k = md.fft2c(mag) * it[2]
                    x0 = md.ifft2c(k)
                    s = np.abs(x0).max() / md.NET_INPUT_PEAK
                    op = CartesianOp(torch.from_numpy((k / s).astype(np.complex64))[None], torch.from_numpy(it[2])[None])
                xin = torch.from_numpy((x0 / s).astype(np.complex64))[None]
                t = torch.from_numpy((mag / s).astype(np.float32))[None]
                pred, last = model(xin, op, final_hard=not radial, with_last=True)
                pred = pred.abs()
                misfits.append(op.misfit(last).item())
                dr = t.amax().item()
                zs.append(ssim_map(xin.abs(), t, dr).item()), rs.append(ssim_map(pred, t, dr).item())
                zp.append(psnr(xin.abs(), t).item()), rp.append(psnr(pred, t).item())
            zs, rs, zp, rp = map(np.array, (zs, rs, zp, rp))
            worst = items[int(np.argmin(rs - zs))][0]
            out.append(f"{setting}: SSIM {zs.mean():.4f}->{rs.mean():.4f} (min gain {np.min(rs - zs):+.4f} {worst}) "
                       f"PSNR {zp.mean():.2f}->{rp.mean():.2f} (min gain {np.min(rp - zp):+.2f}) "
                       f"misfit max {max(misfits):.3g}")
    model.train()
    return " | ".join(out)


def calibrate_guard(model, sampler, rng, args, sizes, smin, smax, batches=40):
    """inferd's guard threshold: 3 × the largest misfit of the last pass's image to the measured data
    over fresh examples of the training distribution (the guard then never touches what the model was
    trained for, and catches networks that contradict their data by an order of magnitude)."""
    model.eval()
    m = []
    with torch.no_grad():
        for _ in range(batches):
            n = int(rng.choice(sizes))
            if args.radial:
                x0, op, _ = radial_batch(sampler, rng, n, args.batch, int(rng.integers(smin, smax + 1)))
            else:
                x0, op, _ = cartesian_batch(sampler, rng, n, args.batch)
            _, last = model(x0, op, final_hard=not args.radial, with_last=True)
            m.extend(op.misfit(last).tolist())
    model.train()
    m = np.array(m)
    print(f"guard: misfit over {len(m)} training-distribution examples: median {np.median(m):.3g}, "
          f"99th percentile {np.percentile(m, 99):.3g}, max {m.max():.3g}; threshold {3 * m.max():.3g}", flush=True)
    return float(3 * m.max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--cg-iterations", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--sizes", default="96,128,160")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from these inferd weights")
    ap.add_argument("--radial", action="store_true", help="train on golden-angle radial sampling")
    ap.add_argument("--spokes", default="24,160")
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--misfit-weight", type=float, default=0.05,
                    help="weight of the last pass's misfit to the measurements in the loss")
    ap.add_argument("--sources", default="nilearn=0.45,dipy=0.1,natural=0.3,phantom=0.15")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    bank = md.load_bank(os.path.join(args.bank, "train.npz"))
    weights = {kv.split("=")[0]: float(kv.split("=")[1]) for kv in args.sources.split(",")}
    sampler = Sampler(bank, weights, rng)
    print("sources", {g: len(sampler.groups[g]) for g in sampler.names}, flush=True)
    val = validation_set(md.load_bank(os.path.join(args.bank, "val.npz")), args.radial)
    model = Unrolled(args.width, args.blocks, args.iterations, args.cg_iterations)
    if args.init:
        st = load_file(args.init)
        if "unrolled.lambda" in st and st["unrolled.lambda"].numel() == args.iterations:
            model.load_inferd_state_dict(st)
            model.cg_iterations = args.cg_iterations
        else:
            model.denoiser.load_state_dict({k: v for k, v in st.items() if k.startswith("model.")})
            # A denoiser trained for fewer passes, now applied K times: each pass starts by making a
            # 1/K share of the correction it learned (its last layer scaled), so the unrolled model
            # starts close to the shorter one instead of over-correcting K times.
            old_passes = st["unrolled.lambda"].numel() if "unrolled.lambda" in st else 1
            with torch.no_grad():
                tail = model.denoiser.model[-1]
                tail.weight.mul_(old_passes / args.iterations)
                tail.bias.mul_(old_passes / args.iterations)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sizes = [int(s) for s in args.sizes.split(",")]
    smin, smax = (int(s) for s in args.spokes.split(","))
    budget = args.minutes * 60.0
    t0 = time.time()
    step, avg = 0, None
    print("validation at start:", evaluate(model, val, args.radial), flush=True)
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        n = int(rng.choice(sizes))
        if args.radial:
            spokes = int(rng.integers(smin, smax + 1))
            x0, op, t = radial_batch(sampler, rng, n, args.batch, spokes)
        else:
            x0, op, t = cartesian_batch(sampler, rng, n, args.batch)
        pred, last = model(x0, op, final_hard=not args.radial, with_last=True)
        pred = pred.abs()
        dr = t.amax(dim=(-2, -1))
        loss = ((pred - t).abs().mean(dim=(-2, -1)) / dr).mean() + (1 - ssim_map(pred / dr[:, None, None], t / dr[:, None, None], 1.0)).mean()
        if args.misfit_weight > 0:
            # keeps the last pass's image consistent with the measurements, so that inferd's guard
            # (which checks that misfit) means something
            loss = loss + args.misfit_weight * op.misfit(last).float().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 20 == 0:
            lam = ", ".join(f"{v:.3g}" for v in model.log_lambda.exp().tolist())
            print(f"step {step} {(time.time()-t0)/60:.1f} min lr {opt.param_groups[0]['lr']:.2e} loss {avg:.4f} "
                  f"lambda [{lam}]", flush=True)
        if step % args.val_every == 0:
            print(f"validation step {step}:", evaluate(model, val, args.radial), flush=True)
            save_file(model.inferd_state_dict(args.radial), args.out + ".ckpt")
    print(f"validation final ({step} steps, {(time.time()-t0)/60:.1f} min):", evaluate(model, val, args.radial), flush=True)
    model.guard_misfit = calibrate_guard(model, sampler, rng, args, sizes, smin, smax)
    save_file(model.inferd_state_dict(args.radial), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
