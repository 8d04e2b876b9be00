"""Evaluate generated images against reference statistics: the function the CLI, the sample script
and the training callback share.

Under DDP each process passes only its own shard (contiguous, no padding: `shard_bounds`); the
torchmetrics states are synced inside `compute()`, so every process returns the same numbers,
equal to a single process evaluating all images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from beatgans.metrics.extractors import DigitsExtractor, FeatureExtractor, build_extractor
from beatgans.metrics.feature_metrics import FrechetDistance, InceptionScore, KernelDistance, PrecisionRecall
from beatgans.metrics.reference import ReferenceStats, compute_reference_stats, iter_batches_nchw
from beatgans.utils.errors import UserError
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

METRIC_NAMES = ("fid", "sfid", "is", "pr", "kid")
_ALIASES = {"precision": "pr", "recall": "pr", "precision_recall": "pr", "inception_score": "is"}


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous shard [start, end) of n items for `rank`; sizes differ by at most one, no padding."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def normalise_metric_names(names: Sequence[str]) -> list[str]:
    """Map user names (fid, sfid, is, precision, recall, pr, kid) to unique canonical names, in order."""
    out: list[str] = []
    for name in names:
        canon = _ALIASES.get(str(name).lower(), str(name).lower())
        if canon not in METRIC_NAMES:
            raise UserError(f"Unknown metric {name!r}; choose from fid, sfid, is, precision, recall, kid.")
        if canon not in out:
            out.append(canon)
    return out


def build_metrics(names: Sequence[str], extractor: FeatureExtractor, reference: ReferenceStats,
                  is_split_size: int = 5000, pr_k: int = 3, pr_block_size: int = 10000,
                  kid_subsets: int = 100, kid_subset_size: int = 1000) -> list[Metric]:
    """torchmetrics objects for `names`, their reference side set. sFID is skipped (with a warning)
    when the extractor or the reference has no spatial features."""
    metrics: list[Metric] = []
    for name in normalise_metric_names(names):
        if name == "fid":
            m = FrechetDistance(extractor.dims["pool"], "pool", "fid")
            m.set_reference(reference.mu, reference.sigma)
        elif name == "sfid":
            if "spatial" not in extractor.dims or reference.mu_s is None:
                log.warning("sFID skipped: the %s extractor or the reference has no spatial features.", extractor.name)
                continue
            m = FrechetDistance(extractor.dims["spatial"], "spatial", "sfid")
            m.set_reference(reference.mu_s, reference.sigma_s)
        elif name == "is":
            m = InceptionScore(is_split_size)
        elif name == "pr":
            m = PrecisionRecall(pr_k, pr_block_size)
            m.set_reference(reference.ensure_features(extractor))
        else:
            m = KernelDistance(kid_subsets, kid_subset_size)
            m.set_reference(reference.ensure_features(extractor))
        metrics.append(m)
    return metrics


def evaluate_samples(images_uint8_nhwc: np.ndarray | torch.Tensor, reference: ReferenceStats | str | os.PathLike,
                     metrics: Sequence[str] = ("fid",), extractor: FeatureExtractor | str = "inception",
                     batch_size: int = 100, progress: bool = False, inception_weights: str | None = None,
                     device: str | torch.device = "cpu", **metric_kwargs) -> dict[str, float]:
    """Compute `metrics` for generated images (this process's shard under DDP).

    Args:
        images_uint8_nhwc: (N, H, W, C) uint8, ADM-quantised.
        reference: `ReferenceStats`, the path of a reference `.npz` (ours or ADM's), or None for the
            digits extractor (statistics of the 1,797 clean digits, cached).
        metrics: names among fid, sfid, is, precision/recall (pr), kid.
        extractor: a built `FeatureExtractor`, or a name: inception, digits, random, or auto (digits
            for one-channel images, else inception), built on `device`.
        metric_kwargs: forwarded to `build_metrics` (is_split_size, pr_k, kid_subset_size, ...).
    Returns:
        {"fid": ..., "is": ..., "is_std": ..., "precision": ..., "recall": ..., ...} as floats, plus
        "num_samples" (the total over all processes).
    """
    images = images_uint8_nhwc
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"evaluate_samples: expected uint8 (N, H, W, C) images, "
                         f"got {images.dtype} {tuple(images.shape)}.")
    extractor = resolve_extractor(extractor, images, inception_weights, device)
    reference = resolve_reference(reference, extractor)
    device = next(extractor.parameters()).device
    # Metrics live with the extractor: NCCL can only sync tensors on the GPU.
    objs = [m.to(device) for m in build_metrics(metrics, extractor, reference, **metric_kwargs)]
    count = torch.tensor(float(len(images)), dtype=torch.float64, device=device)
    if objs:
        from tqdm.auto import tqdm

        total = (len(images) + batch_size - 1) // batch_size
        for batch in tqdm(iter_batches_nchw(images, batch_size), total=total, disable=not progress, desc="evaluating"):
            feats = extractor(batch.to(device))
            for m in objs:
                m.update(feats[m.feature_key])
    results: dict[str, float] = {}
    for m in objs:
        results.update({k: float(v) for k, v in m.compute().items()})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
    results["num_samples"] = int(count)
    return results


def resolve_extractor(extractor: FeatureExtractor | str | None, images: np.ndarray | torch.Tensor,
                      inception_weights: str | None = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """A built extractor, or build one by name for (N, H, W, C) `images` ("auto": digits for one channel)."""
    if isinstance(extractor, FeatureExtractor):
        return extractor
    name = extractor or "auto"
    if name == "auto":
        name = "digits" if int(images.shape[3]) == 1 else "inception"
    return build_extractor(name, image_size=int(images.shape[1]), channels=int(images.shape[3]),
                           inception_weights=inception_weights, device=device)


def resolve_reference(reference: ReferenceStats | str | os.PathLike | None,
                      extractor: FeatureExtractor) -> ReferenceStats:
    """Reference statistics from an object, a file (checked against the extractor) or, for digits, the cache."""
    if isinstance(reference, ReferenceStats):
        return reference
    if reference is None:
        if isinstance(extractor, DigitsExtractor):
            return digits_reference(extractor)
        raise UserError("No reference statistics: pass metrics.reference=<.npz> (ours or ADM's VIRTUAL_*.npz), "
                         "or run beatgans-eval with data=<dataset>, which computes and caches them.")
    return ReferenceStats.load(reference, {"extractor": extractor.name, "weights_hash": extractor.weights_hash})


def digits_reference(extractor: DigitsExtractor) -> ReferenceStats:
    """Statistics of all 1,797 clean digits at the extractor's resolution, cached next to its weights."""
    from beatgans.data.digits import load_digits
    from beatgans.metrics.digits import cache_dir
    from beatgans.metrics.extractors import quantize_uint8

    expected = {"extractor": "digits", "weights_hash": extractor.weights_hash, "dataset": "digits", "split": "all"}
    path = cache_dir() / f"reference_digits_{extractor.image_size}px_{extractor.weights_hash}.npz"
    if path.is_file():
        return ReferenceStats.load(path, expected)
    images, _ = load_digits(extractor.image_size)
    stats = compute_reference_stats(quantize_uint8(images).permute(0, 2, 3, 1), extractor,
                                    {"dataset": "digits", "split": "all"})
    stats.save(path)
    return stats


def read_samples_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and labels of an ADM samples file: `arr_0` uint8 (N, H, W, C) with C in {1, 3}, optional `arr_1`.

    Anything else (not a zip, pickled objects, truncated, NCHW, wrong dtype) is a `UserError` naming the file.
    """
    path = Path(path)
    try:
        with np.load(path) as data:
            if "arr_0" not in data.files:
                raise UserError(f"Samples file {path} has no arr_0 array (it holds {data.files[:4]}); ADM's "
                                "format is arr_0 = uint8 (N, H, W, C) images, arr_1 = labels.")
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data.files else None
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, pickle and EOF errors all mean "not a samples file"
        raise UserError(f"Samples file {path} could not be read as an .npz ({type(err).__name__}); it is "
                        "truncated or not a numpy archive.") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UserError(f"Samples file {path}: arr_0 must be uint8 (N, H, W, C) images, got {images.dtype} "
                        f"{tuple(images.shape)}.")
    if images.shape[3] not in (1, 3):
        hint = (" it looks like NCHW: save arr_0.transpose(0, 2, 3, 1)" if images.shape[1] in (1, 3) else "")
        raise UserError(f"Samples file {path}: arr_0 has shape {tuple(images.shape)} but must be NHWC with 1 or 3 "
                        f"channels last;{hint or ' fix the layout'}.")
    return images, labels


def _sample_files(folder: Path) -> list[Path]:
    """The samples `.npz` files of one run directory (beside it or under samples/), oldest first."""
    files = list(folder.glob("*.npz")) + list(folder.glob("samples/**/*.npz"))
    files = [p for p in files if not p.name.startswith(("reference", ".shard_", "."))]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def _is_run_dir(folder: Path) -> bool:
    return (folder / ".hydra").is_dir() or (folder / "multirun.yaml").is_file()


def find_sample_sets(path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(samples file, directory for its metrics.json) for every sample set `path` designates.

    An `.npz` file: itself. A run directory: its newest samples `.npz`. A multirun sweep directory
    (`multirun.yaml`, or job sub-directories holding samples): one entry per job, in job order. An image
    folder (no `.npz`, not a run directory): `[(folder, folder)]`. Only `.npz` files are read from run and
    sweep directories (never their PNG grids); anything else is a `UserError` saying what is expected.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".npz":
            raise UserError(f"Samples {path} is not an .npz file; pass an ADM .npz, a run or sweep directory, or "
                            "an image folder.")
        return [(path, path.parent)]
    if not path.is_dir():
        raise FileNotFoundError(f"Samples {path} is neither an .npz file nor a directory.")
    own = _sample_files(path)
    if own:
        if len(own) > 1:
            log.info("Run directory %s has %d sample files; evaluating the newest, %s.", path, len(own), own[-1])
        return [(own[-1], path)]
    jobs = sorted((d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    sets = [(_sample_files(d)[-1], d) for d in jobs if _sample_files(d)]
    if sets:
        return sets
    if _is_run_dir(path):
        raise UserError(f"{path} is a run or sweep directory without samples .npz files; expected "
                        "<run>/samples_*.npz or <sweep>/<job>/samples_*.npz (written by beatgans-sample).")
    return [(path, path)]


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """Generated images from an ADM `.npz`, an image folder or a run directory (its newest samples `.npz`).

    Returns (images uint8 (N, H, W, C), labels int64 (N,) or None, the directory for metrics.json).
    A sweep directory holds several sample sets: use `find_sample_sets` (this raises `UserError` for it).
    """
    sets = find_sample_sets(path)
    if len(sets) > 1:
        raise UserError(f"{path} is a sweep with {len(sets)} sample sets; evaluate them one by one "
                        "(beatgans-eval does) or pass one job directory.")
    source, out_dir = sets[0]
    if source.is_file():
        images, labels = read_samples_npz(source)
        return images, labels, out_dir
    return _load_image_folder(source), None, out_dir


def _load_image_folder(path: Path) -> np.ndarray:
    from PIL import Image

    from beatgans.data.image_folder import DataError, list_images

    files = list_images(path)
    arrays = []
    for f in files:
        try:
            with Image.open(f) as img:
                arrays.append(np.asarray(img.convert("L" if img.mode in ("L", "1", "P") else "RGB")))
        except OSError as err:
            raise DataError(f"Image {f} could not be read ({err}).") from err
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"Image folder {path} holds images of different sizes {sorted(shapes)[:3]}; resize them first.")
    images = np.stack(arrays)
    return images[..., None] if images.ndim == 3 else images
