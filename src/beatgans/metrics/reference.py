"""Reference statistics: Gaussian statistics and features of the real data, cached in an `.npz`.

File layout (our files): `mu, sigma` (pool features), optional `mu_s, sigma_s` (spatial features),
`features` (pool rows, float32, for precision/recall and KID) and `metadata` (a JSON string: extractor,
weights_hash, dataset, split, resolution, count, quantisation). ADM's reference batches
(`VIRTUAL_*.npz`: `arr_0` uint8 NHWC images, `mu, sigma, mu_s, sigma_s`) load as they are; their
pool rows are computed from `arr_0` on demand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from beatgans.metrics.extractors import FeatureExtractor
from beatgans.metrics.feature_metrics import FrechetDistance
from beatgans.utils.io import atomic_write
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

QUANTISATION = "adm: ((x+1)*127.5).clamp(0,255) -> uint8 (truncate)"
# Metadata keys that must agree between a cached file and a request; the others are informative.
CHECKED_KEYS = ("extractor", "weights_hash", "dataset", "split", "resolution", "count", "quantisation")


@dataclass
class ReferenceStats:
    """Statistics of the reference images.

    mu (D,), sigma (D, D) float64 over pool features; mu_s, sigma_s over spatial features (or None);
    features (N, D) float32 pool rows (or None); images (N, H, W, C) uint8 (ADM files only, else None).
    """

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    features: np.ndarray | None = None
    images: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def check(self, expected: dict, path: str | os.PathLike = "<memory>") -> None:
        """Refuse statistics whose metadata disagree with `expected` on any key both define."""
        bad = [f"{k}={self.metadata[k]!r} (wanted {expected[k]!r})" for k in CHECKED_KEYS
               if k in expected and k in self.metadata and expected[k] is not None
               and str(self.metadata[k]) != str(expected[k])]
        if bad:
            raise ValueError(f"Reference statistics {path} do not match this evaluation: {', '.join(bad)}; "
                             "delete the file or point reference= at statistics made for this setting.")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename)."""
        arrays = {"mu": self.mu, "sigma": self.sigma, "metadata": np.array(json.dumps(self.metadata, sort_keys=True))}
        for key in ("mu_s", "sigma_s", "features"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)

        def _write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        return atomic_write(path, _write)

    @classmethod
    def load(cls, path: str | os.PathLike, expected: dict | None = None) -> "ReferenceStats":
        """Load our file or an ADM reference batch; check metadata against `expected` when given."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Reference statistics file {path} does not exist.")
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"mu", "sigma"} <= keys:
                raise ValueError(f"Reference file {path} has no mu/sigma arrays (found {sorted(keys)}).")
            get = lambda k: data[k] if k in keys else None  # noqa: E731
            images = get("arr_0")
            if "metadata" in keys:
                metadata = json.loads(str(data["metadata"]))
            else:  # ADM's reference batch: statistics from the TF Inception graph
                metadata = {"extractor": "inception", "source": "adm-reference-batch"}
                if images is not None:
                    metadata.update(count=int(images.shape[0]), resolution=int(images.shape[1]))
            stats = cls(mu=get("mu"), sigma=get("sigma"), mu_s=get("mu_s"), sigma_s=get("sigma_s"),
                        features=get("features"), images=images, metadata=metadata)
        if expected:
            stats.check(expected, path)
        return stats

    def ensure_features(self, extractor: FeatureExtractor, batch_size: int = 100) -> np.ndarray:
        """Pool rows for precision/recall and KID, computed from `images` when the file had none."""
        if self.features is None:
            if self.images is None:
                raise ValueError("Reference statistics hold neither features nor images, so precision/recall "
                                 "and KID cannot be computed; rebuild them with features.")
            self.features = extract_features(self.images, extractor, batch_size, keys=("pool",))["pool"]
        return self.features


def iter_batches_nchw(images_nhwc: np.ndarray | torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    """Yield (B, C, H, W) uint8 tensors from (N, H, W, C) uint8 images."""
    for start in range(0, len(images_nhwc), batch_size):
        batch = torch.as_tensor(np.asarray(images_nhwc[start : start + batch_size]))
        if batch.dtype != torch.uint8:
            raise ValueError(f"Expected uint8 NHWC images, got dtype {batch.dtype}.")
        yield batch.permute(0, 3, 1, 2)


def extract_features(images_nhwc: np.ndarray | torch.Tensor, extractor: FeatureExtractor, batch_size: int = 100,
                     keys: Iterable[str] = ("pool",), progress: bool = False) -> dict[str, np.ndarray]:
    """Run `extractor` over uint8 NHWC images; returns {key: (N, D) float32} for the requested keys."""
    from tqdm.auto import tqdm

    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    batches = iter_batches_nchw(images_nhwc, batch_size)
    total = (len(images_nhwc) + batch_size - 1) // batch_size
    for batch in tqdm(batches, total=total, disable=not progress, desc=f"{extractor.name} features"):
        feats = extractor(batch)
        for k in keys:
            out[k].append(feats[k].float().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def compute_reference_stats(images_nhwc: np.ndarray | torch.Tensor, extractor: FeatureExtractor,
                            metadata: dict, batch_size: int = 100, progress: bool = False) -> ReferenceStats:
    """Statistics of real uint8 NHWC images (already ADM-quantised) with `extractor`.

    `metadata` (dataset, split, ...) is completed with extractor, weights hash, resolution, count and
    quantisation.
    """
    from tqdm.auto import tqdm

    pool_stats = FrechetDistance(extractor.dims["pool"], sync_on_compute=False)
    spatial_stats = FrechetDistance(extractor.dims["spatial"], "spatial", "sfid", sync_on_compute=False) \
        if "spatial" in extractor.dims else None
    pool_rows = []
    total = (len(images_nhwc) + batch_size - 1) // batch_size
    for batch in tqdm(iter_batches_nchw(images_nhwc, batch_size), total=total, disable=not progress,
                      desc="reference features"):
        feats = extractor(batch)
        pool_stats.update(feats["pool"].cpu())
        pool_rows.append(feats["pool"].float().cpu())
        if spatial_stats is not None:
            spatial_stats.update(feats["spatial"].cpu())
    mu, sigma = pool_stats.generated_statistics()
    mu_s, sigma_s = spatial_stats.generated_statistics() if spatial_stats is not None else (None, None)
    meta = {**metadata, "extractor": extractor.name, "weights_hash": extractor.weights_hash,
            "resolution": int(images_nhwc.shape[1]), "count": int(len(images_nhwc)), "quantisation": QUANTISATION}
    return ReferenceStats(mu, sigma, mu_s, sigma_s, torch.cat(pool_rows).numpy(), metadata=meta)
