"""Writes the provenance of every shipped model into its safetensors metadata (`__metadata__`), where
inferd reads it (`sha256` and `provenance.*` in ModelConfig parameters, ListModels' `provenance`).
The tensors are rewritten unchanged (checked bit for bit). The texts summarise models/README.md, which
has the full recipes.

    python3 scripts/stamp_provenance.py [models/]
"""
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

RECON_DATA = (
    "nilearn MNI ICBM152 2009a T1 template and a T2-like contrast from its tissue maps, dipy b0 and "
    "anisotropic volumes, scikit-image natural images, inferd's synthetic head phantoms; MR-realistic "
    "simulation (phase, coils, noise, bias, contrast, views). Validation only: dipy t1_coronal_slice, "
    "test_piesno, nipy anatomical. No pydicom or pydicom-data image."
)
SYNTHETIC_DATA = (
    "inferd's synthetic head-like images (70 %) and scikit-image natural images (30 %) through the "
    "serving pipeline; no real MR image"
)
BSD = "weights: same licence as inferd; data licences in models/README.md (BSD-3 packages, MNI template with attribution)"

MODELS = {
    "recon-unrolled": {
        "model": "unrolled ReconResNet, 5 passes, width 32, 2 residual blocks, learned data consistency, spectral guard",
        "training_data": RECON_DATA,
        "recipe": "scripts/train_unrolled.py, phases 0-2 (models/README.md, 'How recon-unrolled and recon-radial were trained'), 2-core CPU, 2026-12-04",
        "validation": "held-out real MR (dipy, nipy), Cartesian 4x vd lines: SSIM 0.875 -> 0.916, PSNR 30.72 -> 33.56 dB over zero-filled",
        "licence": BSD,
    },
    "recon-radial": {
        "model": "unrolled ReconResNet as recon-unrolled, golden-angle radial, CG data consistency",
        "training_data": RECON_DATA + " Radial: golden-angle spokes, CG data consistency.",
        "recipe": "fine-tuned from recon-unrolled (models/README.md), 2-core CPU, 2026-12-04",
        "validation": "held-out real MR, 60 spokes: SSIM 0.809 -> 0.965 over gridding",
        "licence": BSD,
    },
    "recon-lite": {
        "model": "single-pass magnitude ReconResNet, width 32, 6 residual blocks",
        "training_data": SYNTHETIC_DATA + ", Cartesian 4x/8x 1D variable density",
        "recipe": "inferd train recon-data + scripts/train_recon_torch.py, 3 phases (models/README.md, 'How recon-lite was trained'), 2026-11-30",
        "validation": "held-out synthetic pairs of the training distribution",
        "licence": BSD,
    },
    "recon-radial-v1": {
        "model": "recon-lite fine-tuned on gridded golden-angle radial data",
        "training_data": SYNTHETIC_DATA + ", 30/60 spokes at 256^2",
        "recipe": "scripts/train_recon_torch.py --radial from recon-lite, 25 min (models/README.md), 2026-11-30",
        "validation": "64 held-out pairs: SSIM 0.773 gridded -> 0.925",
        "licence": BSD,
    },
    "lightsb": {
        "model": "LightSB, D = 2, K = 50, epsilon = 0.1: standard Gaussian -> Swiss roll",
        "training_data": "20 000 unpaired samples of each distribution (generated)",
        "recipe": "inferd train bridge --toy gaussian-swissroll --epsilon 0.1 --components 50, 10 000 steps, seed 0, 2026-11-30",
        "validation": "mean distance of a draw to the nearest Swiss-roll sample 0.030 (two roll sample sets: 0.015)",
        "licence": "same licence as inferd",
    },
}
for agg, what in [
    ("lcm", "LCM aggregator, sort-MLP operator"),
    ("lcm-symgru", "LCM aggregator, symmetrised-GRU operator"),
    ("lcm-sum", "sum aggregator"),
    ("lcm-max", "max aggregator"),
    ("lcm-gru", "GRU (recurrent) aggregator"),
]:
    MODELS[agg] = {
        "model": f"set model 8 -> 128 -> 8, {what}",
        "training_data": "fresh random multisets of 2-16 8-bit integers every step (second-minimum task)",
        "recipe": f"scripts/train_graph_torch.py --aggregator {agg.removeprefix('lcm-') if agg != 'lcm' else 'lcm'} (models/README.md, 'How lcm and its baselines were trained')",
        "validation": "second-minimum accuracy by set size: BENCHMARKS.md, 'LCM: second-minimum accuracy by set size'",
        "licence": "same licence as inferd",
    }


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for name, meta in MODELS.items():
        path = root / f"{name}.safetensors"
        tensors = load_file(path)
        save_file(tensors, path, metadata=meta)
        again = load_file(path)
        assert again.keys() == tensors.keys()
        for k, v in tensors.items():
            assert again[k].dtype == v.dtype and np.array_equal(again[k], v), (path, k)
        print(f"{path}: {len(meta)} provenance entries")


if __name__ == "__main__":
    main()
