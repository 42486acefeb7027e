"""FINUFFT speed on the workload of bench/nufft_speed.rs: golden-angle radial k-space (2N-sample
spokes, the trajectory of inferd's `Radial::oversampled(256, S, GoldenAngle)`), 256² image, 8 coils
transformed as one vectorised plan (n_trans = 8), single precision (complex64, as inferd), 2 threads.
Plan creation (makeplan + setpts) is timed separately from execute. FINUFFT chooses its own grid
oversampling (upsampfac 1.25 or 2, by tolerance and point density) as it does by default; its FFTs are
planned with FFTW_MEASURE rather than the default FFTW_ESTIMATE, whose 512² single-precision plans run
about 13× slower on the reference machine (the one-off measuring is part of the first plan only; FFTW
keeps the result for the later plans of the process, and the median plan time excludes it).

Prints CSV: transform,spokes,tolerance,width,plan_ms,exec_ms (medians; width is not reported by
FINUFFT's Python interface and left empty).

python3 bench/nufft_finufft.py [--reps 7] [--threads 2]
"""

import argparse
import time

import finufft
import numpy as np

FFTW_MEASURE = 0


def radial_golden(n: int, spokes: int) -> tuple[np.ndarray, np.ndarray]:
    """(kx, ky) in grid units, spoke after spoke, readout fastest."""
    readout = 2 * n
    r = (np.arange(readout) + 0.5 - readout / 2) * (n / readout)
    theta = np.arange(spokes) * np.pi / ((1 + np.sqrt(5)) / 2)
    kx = (np.sin(theta)[:, None] * r[None, :]).ravel()
    ky = (np.cos(theta)[:, None] * r[None, :]).ravel()
    return kx, ky


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    n, coils = 256, 8
    rng = np.random.default_rng(0)
    print("transform,spokes,tolerance,width,plan_ms,exec_ms")
    for spokes in (60, 402):
        kx, ky = radial_golden(n, spokes)
        # FINUFFT's first coordinate runs along the first array axis (rows, ky), in radians
        x = (2 * np.pi * ky / n).astype(np.float32)
        y = (2 * np.pi * kx / n).astype(np.float32)
        m = x.size
        images = (rng.standard_normal((coils, n, n)) + 1j * rng.standard_normal((coils, n, n))).astype(np.complex64)
        data = (rng.standard_normal((coils, m)) + 1j * rng.standard_normal((coils, m))).astype(np.complex64)
        for tol in (1e-4, 1e-6):
            for kind, isign in ((2, -1), (1, +1)):
                plan_ms, exec_ms = [], []
                for _ in range(max(a.reps, 3)):
                    t = time.perf_counter()
                    p = finufft.Plan(
                        kind, (n, n), n_trans=coils, eps=tol, isign=isign, dtype="complex64", nthreads=a.threads, fftw=FFTW_MEASURE
                    )
                    p.setpts(x, y)
                    plan_ms.append((time.perf_counter() - t) * 1e3)
                src = images if kind == 2 else data
                p.execute(src)  # warm-up
                for _ in range(a.reps):
                    t = time.perf_counter()
                    p.execute(src)
                    exec_ms.append((time.perf_counter() - t) * 1e3)
                print(f"type {kind},{spokes},{tol:.0e},,{np.median(plan_ms):.2f},{np.median(exec_ms):.2f}", flush=True)


if __name__ == "__main__":
    main()
