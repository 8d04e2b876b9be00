"""Conversions at the I/O edge: [-1, 1] float tensors <-> uint8, and PNG grids."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from beatgans.utils.io import atomic_write


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise exactly as ADM: `((x + 1) * 127.5).clamp(0, 255)` then truncate.

    Args:
        x: (B, C, H, W) float in [-1, 1].
    Returns:
        (B, H, W, C) uint8 (NHWC, the ADM `.npz` layout).
    """
    return ((x.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def make_grid_uint8(images_nhwc: np.ndarray, nrow: int | None = None, pad: int = 1, pad_value: int = 128) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (rows*H', nrow*W', C) array with `pad` grey pixels between them."""
    n, h, w, c = images_nhwc.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = images_nhwc[i]
    return grid


def save_grid_png(path: str | os.PathLike, images_nhwc: np.ndarray, nrow: int | None = None, scale: int = 1,
                  overwrite: bool = True) -> Path:
    """Save a grid of uint8 NHWC images as a PNG (nearest-neighbour upscaled by `scale`), atomically
    (`overwrite=False`: never replace an existing file, see `atomic_write`)."""
    from PIL import Image

    grid = make_grid_uint8(images_nhwc, nrow=nrow)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite)
