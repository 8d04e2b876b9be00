"""torchmetrics `Metric`s over extractor features: FID / sFID, IS, precision/recall, KID.

Each metric consumes one extractor output (`feature_key`: "pool", "spatial" or "logits"), accumulates
only the GENERATED side in synced states and holds the reference side as plain attributes, so under
DDP the reference is never summed once per rank. `compute()` returns a dict of float64 scalars.

FID keeps float64 sums (count, sum x, sum x x^T) reduced by "sum": the synced statistics equal the
single-process ones up to float64 summation order, whatever the shard sizes. IS, precision/recall and
KID need the rows themselves ("cat" states); with contiguous shards the gathered order is the
original order, so even order-dependent IS splits and KID subsets match one process.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from beatgans.metrics import functional as MF


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Detach; keep float32/float64 as given (tests compare in float64), widen anything narrower."""
    x = x.detach()
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class FrechetDistance(Metric):
    """Frechet distance between generated features and fixed reference (mu, sigma).

    Args:
        num_features: D of the feature rows (2048 pool3, 2023 spatial, digits: 128).
        feature_key: extractor output consumed ("pool" -> FID, "spatial" -> sFID).
        name: key of the result ("fid" or "sfid").
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, num_features: int, feature_key: str = "pool", name: str = "fid", **kwargs):
        super().__init__(**kwargs)
        self.feature_key = feature_key
        self.name = name
        self.num_features = num_features
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("feat_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer_sum", torch.zeros(num_features, num_features, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.ref_mu: np.ndarray | None = None
        self.ref_sigma: np.ndarray | None = None

    def set_reference(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        """Fix the reference Gaussian: mu (D,), sigma (D, D)."""
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        if mu.shape != (self.num_features,) or sigma.shape != (self.num_features,) * 2:
            raise ValueError(f"{self.name}: reference statistics have shape {mu.shape}/{sigma.shape}, "
                             f"the features have {self.num_features} dimensions.")
        self.ref_mu, self.ref_sigma = mu, sigma

    def update(self, features: torch.Tensor) -> None:
        """features: (B, D) float."""
        f = features.detach().to(torch.float64).reshape(features.shape[0], -1)
        self.count += f.shape[0]
        self.feat_sum += f.sum(dim=0)
        self.outer_sum += f.T @ f

    def generated_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), unbiased covariance (D, D)) of the features seen so far (synced if distributed)."""
        n = float(self.count)
        if n < 2:
            raise ValueError(f"{self.name}: need at least 2 generated images, got {int(n)}.")
        mu = self.feat_sum / n
        cov = (self.outer_sum - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), cov.cpu().numpy()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.ref_mu is None:
            raise RuntimeError(f"{self.name}: call set_reference(mu, sigma) before compute().")
        mu, sigma = self.generated_statistics()
        value = MF.frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma)
        return {self.name: torch.tensor(value, dtype=torch.float64)}


class InceptionScore(Metric):
    """Inception Score on logits, ADM convention (consecutive splits of `split_size`, no shuffle)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, split_size: int = 5000, feature_key: str = "logits", **kwargs):
        super().__init__(**kwargs)
        self.split_size = split_size
        self.feature_key = feature_key
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor) -> None:
        """logits: (B, K) unnormalised class scores."""
        self.logits.append(_as_float(logits))

    def compute(self) -> dict[str, torch.Tensor]:
        mean, std = MF.inception_score(dim_zero_cat(self.logits), self.split_size)
        return {"is": torch.tensor(mean, dtype=torch.float64), "is_std": torch.tensor(std, dtype=torch.float64)}


class _ReferenceFeatureMetric(Metric):
    """Shared part of metrics that compare generated rows with reference rows."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, feature_key: str = "pool", **kwargs):
        super().__init__(**kwargs)
        self.feature_key = feature_key
        self.add_state("features", [], dist_reduce_fx="cat")
        self.ref_features: torch.Tensor | None = None

    def set_reference(self, features: torch.Tensor | np.ndarray) -> None:
        """Fix the reference rows: (N_ref, D)."""
        self.ref_features = torch.as_tensor(np.asarray(features))

    def update(self, features: torch.Tensor) -> None:
        """features: (B, D) float."""
        self.features.append(_as_float(features).reshape(features.shape[0], -1))

    def _both(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ref_features is None:
            raise RuntimeError(f"{type(self).__name__}: call set_reference(features) before compute().")
        gen = dim_zero_cat(self.features)
        return gen, self.ref_features.to(gen.device, gen.dtype)


class PrecisionRecall(_ReferenceFeatureMetric):
    """Improved precision and recall, k-NN manifolds (k = 3), computed over block_size x block_size tiles."""

    higher_is_better = True

    def __init__(self, k: int = 3, block_size: int = 10000, feature_key: str = "pool", **kwargs):
        super().__init__(feature_key=feature_key, **kwargs)
        self.k = k
        self.block_size = block_size

    def compute(self) -> dict[str, torch.Tensor]:
        gen, ref = self._both()
        precision, recall = MF.precision_recall(gen, ref, self.k, self.block_size)
        return {"precision": torch.tensor(precision, dtype=torch.float64),
                "recall": torch.tensor(recall, dtype=torch.float64)}


class KernelDistance(_ReferenceFeatureMetric):
    """KID: unbiased polynomial-kernel MMD^2 over random subsets (torch-fidelity's sampling)."""

    higher_is_better = False

    def __init__(self, subsets: int = 100, subset_size: int = 1000, seed: int = 2020, feature_key: str = "pool",
                 **kwargs):
        super().__init__(feature_key=feature_key, **kwargs)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed

    def compute(self) -> dict[str, torch.Tensor]:
        gen, ref = self._both()
        mean, std = MF.kernel_inception_distance(gen, ref, self.subsets, self.subset_size, seed=self.seed)
        return {"kid": torch.tensor(mean, dtype=torch.float64), "kid_std": torch.tensor(std, dtype=torch.float64)}
