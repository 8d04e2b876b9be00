"""scikit-learn's bundled 8x8 handwritten digits as a tiny image dataset.

1,797 grey-scale images of 10 classes ship inside scikit-learn, so this data works offline and is
the embedded default for demos and tests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

NUM_DIGITS = 1797
NUM_CLASSES = 10


@lru_cache(maxsize=8)
def _load_digits_cached(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # sklearn stores intensities 0..16; map to [-1, 1] before resizing so borders stay at -1.
    images = torch.from_numpy(bunch.images.astype(np.float32)) / 16.0 * 2.0 - 1.0
    images = images[:, None]  # (N, 1, 8, 8)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = images.clamp(-1.0, 1.0)
    return images.numpy(), bunch.target.astype(np.int64)


def load_digits(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the bundled digits.

    Args:
        image_size: side length S of the resized square images (8 keeps the originals).

    Returns:
        images: (1797, 1, S, S) float32 in [-1, 1]; labels: (1797,) int64 in 0..9.
    """
    if image_size < 1:
        raise ValueError(f"digits: image_size must be positive, got {image_size}.")
    images, labels = _load_digits_cached(int(image_size))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
