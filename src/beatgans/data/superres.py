"""Training pairs for upsampling diffusion models (ADM's "ADM-U"): (high-res, low-res) from the same images.

ADM makes the low-res input by area-downsampling the high-res training batch (``F.interpolate(...,
mode="area")``, an average over each block of pixels) after its usual preprocessing (centre crop,
optional flip), so a pair always shows the same, identically flipped image. `SuperResDataset` does
that per example, which equals the batched operation (area resampling never mixes images).
Any data module turns into pairs with ``data.low_res_size=<side>``; batches are then
``(x (B, C, H, W), y (B,), low_res (B, C, h, w))``, all images float32 in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SuperResDataset", "area_downsample", "check_low_res_size", "low_res_examples", "low_res_for_grid"]


def area_downsample(images: Tensor, size: int) -> Tensor:
    """Area (block-average) downsampling, ADM's low-res preprocessing.

    Args:
        images: (C, H, W) or (B, C, H, W) float in [-1, 1].
        size: side of the result; H and W should be multiples of it for exact block averages.
    Returns:
        (C, size, size) or (B, C, size, size), same dtype, still in [-1, 1].
    """
    single = images.ndim == 3
    out = F.interpolate(images[None] if single else images, size=(size, size), mode="area")
    return out[0] if single else out


def check_low_res_size(low_res_size: int | None, image_size: int | None) -> None:
    """Refuse a low-res side that is not a proper divisor of the image side (one sentence, before any work)."""
    if low_res_size is None:
        return
    if image_size is None:
        raise ValueError("data.low_res_size makes super-resolution pairs of images; this data has no image_size.")
    if not 0 < int(low_res_size) < int(image_size) or image_size % low_res_size:
        raise ValueError(f"data.low_res_size={low_res_size} must divide data.image_size={image_size} and be "
                         "smaller (e.g. 64 for 256 px, 8 for 16 px).")


class SuperResDataset(Dataset):
    """Wrap an ``(x, y)`` image dataset into ``(x, y, area_downsample(x, low_res_size))`` triples."""

    def __init__(self, base: Dataset, low_res_size: int):
        self.base = base
        self.low_res_size = int(low_res_size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self.base[i]
        return x, y, area_downsample(x, self.low_res_size)


def low_res_examples(dataset: Dataset, num: int, labels: Sequence[int] | Tensor | None = None) -> Tensor:
    """Low-res inputs for sample grids during training: the first examples of ``dataset`` (a `SuperResDataset`,
    usually the validation split), or, when ``labels`` are given, for each requested label the next example
    of that class (cycling), so a class-conditional upsampler gets an image of the class it is asked for.

    Returns (num, C, h, w) float in [-1, 1].
    """
    if len(dataset) == 0:
        raise ValueError("no examples to take low-res grid inputs from (the dataset is empty).")
    if labels is None:
        return torch.stack([dataset[i % len(dataset)][2] for i in range(num)])
    wanted = [int(v) for v in torch.as_tensor(labels).tolist()[:num]]
    need = {label: wanted.count(label) for label in set(wanted)}
    found: dict[int, list[Tensor]] = {label: [] for label in need}
    for i in range(len(dataset)):  # scan only until every requested class has enough examples
        _, y, low = dataset[i]
        if int(y) in found and len(found[int(y)]) < need[int(y)]:
            found[int(y)].append(low)
            if all(len(found[k]) == need[k] for k in need):
                break
    missing = sorted(k for k, v in found.items() if not v)
    if missing:
        raise ValueError(f"no example of class(es) {missing} to take a low-res grid input from.")
    used = dict.fromkeys(need, 0)
    out = []
    for label in wanted:
        pool = found[label]
        out.append(pool[used[label] % len(pool)])
        used[label] += 1
    return torch.stack(out)


def low_res_for_grid(datamodule, num: int, labels: Sequence[int] | Tensor | None = None) -> Tensor:
    """`low_res_examples` from a pair-making data module's validation split (its training split when it has none)."""
    loader = datamodule.val_dataloader()
    if not loader:
        loader = datamodule.train_dataloader()
    if not isinstance(loader.dataset, SuperResDataset):
        raise ValueError("this model is an upsampler but the data gives no low-res images: set data.low_res_size.")
    return low_res_examples(loader.dataset, num, labels)
