"""Writes the natural (non-medical) sample images bundled with scikit-image as grayscale PNGs, as an
optional extra source of texture for `inferd train recon --images DIR`.

Usage: python3 scripts/natural_images.py OUT_DIR
"""
import os
import sys

import numpy as np
import skimage.data as data
from skimage.color import rgb2gray
from skimage.io import imsave

# Natural scenes, textures and microscopy only: no MR or other medical cross-sectional images.
NAMES = ["camera", "astronaut", "coffee", "chelsea", "coins", "moon", "rocket", "cat", "horse",
         "immunohistochemistry", "hubble_deep_field", "grass", "gravel", "brick", "clock", "cell",
         "page", "text"]

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name in NAMES:
    img = np.asarray(getattr(data, name)(), dtype=np.float64)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
    img = img - img.min()
    img = (255 * img / max(img.max(), 1e-9)).astype(np.uint8)
    imsave(os.path.join(out, f"{name}.png"), img, check_contrast=False)
print(f"wrote {len(NAMES)} images to {out}")
