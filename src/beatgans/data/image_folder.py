"""ImageNet / LSUN-style image trees with ADM's preprocessing.

Labels come from the first-level sub-folder name, or from ADM's file-name prefix (`<class>_<anything>.png`).
Preprocessing is ADM's: halve with a box filter while the short side is at least twice the target, resize
the short side to the target with bicubic, then centre crop; optional random horizontal flip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from beatgans.utils.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


class DataError(UserError):
    """Bad input data: the message names the path and the problem in one sentence."""


def has_class_subfolders(files: list[Path], root: str | os.PathLike) -> bool:
    """True when some image lies in a sub-folder of `root` (a class tree), False for a flat folder."""
    return any(len(f.relative_to(root).parts) > 1 for f in files)


def write_class_index(path: str | os.PathLike, classes: list[str]) -> Path:
    """Save the class-name -> label mapping as JSON at `path` (a run's `class_index.json`).

    An existing file with a different mapping is refused (`DataError`): the run's checkpoints were
    trained with that mapping, so the data must have changed.
    """
    import json

    from beatgans.utils.io import write_json

    path = Path(path)
    mapping = {name: i for i, name in enumerate(classes)}
    if path.is_file():
        old = json.loads(path.read_text())
        if old != mapping:
            raise DataError(f"The data's classes {list(mapping)[:5]}... differ from those this run was trained with "
                            f"({path}: {list(old)[:5]}...); point data.root at the original tree or use a new run.")
        return path
    return write_json(path, mapping)


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root`, sorted; a clear `DataError` when the folder is missing or has none."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"Image folder {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"Image folder {root} is not a directory.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"Image folder {root} contains no images (looked for {sorted(IMAGE_EXTENSIONS)}).")
    return files


def labels_for(files: list[Path], root: str | os.PathLike, source: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels and sorted class names from sub-folders (`source="folder"`) or prefixes (`"prefix"`)."""
    root = Path(root)
    if source == "folder":
        names = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files]
        if any(n is None for n in names):
            loose = next(f for f, n in zip(files, names) if n is None)
            raise DataError(f"Image folder {root} has images outside class sub-folders (e.g. {loose}), "
                            "so labels are missing for a class-conditional model.")
    elif source == "prefix":
        names = [f.name.split("_")[0] if "_" in f.name else None for f in files]
        if any(n is None for n in names):
            bad = next(f for f, n in zip(files, names) if n is None)
            raise DataError(f"File {bad} has no '<class>_' prefix, "
                            "so its label is missing for a class-conditional model.")
    else:
        raise ValueError(f"image_folder: label source must be 'folder' or 'prefix', got {source!r}.")
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


def center_crop_adm(pil_image, image_size: int) -> np.ndarray:
    """ADM's resize + centre crop of a PIL image to (image_size, image_size); returns uint8 HWC."""
    from PIL import Image

    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


class ImageFolderDataset(Dataset):
    """Images under `root` as (x, y): x (C, S, S) float32 in [-1, 1]; y int64 class id (or -1 when unlabelled)."""

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3, labels: str | None = "folder",
                 random_flip: bool = False):
        self.root = Path(root)
        self.files = list_images(self.root)
        self.image_size = int(image_size)
        if channels not in (1, 3):
            raise DataError(f"Image folder {self.root}: channels must be 1 or 3, got {channels}.")
        self.channels = channels
        self.random_flip = random_flip
        if labels:
            self.labels, self.classes = labels_for(self.files, self.root, labels)
        else:
            self.labels, self.classes = np.full(len(self.files), -1, dtype=np.int64), []

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) or None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as img:
                img.load()
                img = img.convert("RGB" if self.channels == 3 else "L")
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"Cannot read image {path}: {err}.") from None
        arr = center_crop_adm(img, self.image_size)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.random_flip and torch.rand(()) < 0.5:
            arr = arr[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1.0
        return x, torch.tensor(self.labels[i])
