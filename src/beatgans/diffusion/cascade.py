"""Cascaded diffusion (ADM-G + ADM-U, Dhariwal & Nichol 2021 Table 5): what passes between the stages.

A base model samples at low resolution; an upsampling model (`beatgans.nets.SuperResUNet`) then samples
the high-resolution image conditioned on it. As in ADM, the upsampler does not see the base's float
output but its saved 8-bit image mapped back to [-1, 1] (``uint8 / 127.5 - 1``), so a cascade run from
the base's ``.npz`` and one in a single invocation give the same result.

Seeds: base sample i uses ``seed + i`` (the library's convention); its upsampler pass draws from its
own stream, ``seed + i + UPSAMPLER_SEED_OFFSET``, so the two stages never share noise and sample i of
the cascade depends only on (seed, i), never on batch size or the other samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["UPSAMPLER_SEED_OFFSET", "low_res_from_uint8", "quantize_low_res", "upsampler_seeds"]

# 2**32: far above any base stream seed + index in practice; torch generators take 64-bit seeds.
UPSAMPLER_SEED_OFFSET = 1 << 32


def low_res_from_uint8(images: np.ndarray | Tensor) -> Tensor:
    """ADM's upsampler input from saved samples: (N, h, w, C) uint8 -> (N, C, h, w) float32 in [-1, 1]."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"low-res samples must be (N, h, w, C) uint8 (the .npz layout), got {tuple(images.shape)} "
                         f"{images.dtype}")
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def quantize_low_res(x: Tensor) -> Tensor:
    """A float base output (N, C, h, w) in [-1, 1] quantised as ADM saves it (clamp, truncate to uint8) and
    mapped back: the exact low-res input its upsampler receives. Same shape, float32."""
    return ((x.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8).float() / 127.5 - 1.0


def upsampler_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """Per-sample seeds of the upsampling stage for global sample ``indices`` under base seed ``seed``."""
    return [int(seed) + int(i) + UPSAMPLER_SEED_OFFSET for i in indices]
