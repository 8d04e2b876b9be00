"""Mode coverage of 2-D samples against a known mixture of isotropic Gaussians (pure torch)."""

from __future__ import annotations

import torch


def mode_coverage(
    samples: torch.Tensor, centers: torch.Tensor, std: float, min_count: int = 20, radius: float = 3.0
) -> dict[str, float]:
    """Count modes covered and the share of high-quality samples.

    A sample is high quality when it lies within ``radius * std`` of its nearest centre; a mode is
    covered when at least ``min_count`` high-quality samples fall on it (the usual protocol of the
    25-Gaussians benchmark, e.g. VEEGAN / PacGAN, with 3 std).

    Args:
        samples: (N, 2) float points.
        centers: (K, 2) float mode centres.
        std: per-axis standard deviation of each mode.
    Returns:
        dict with ``modes_covered`` (int as float, 0..K), ``num_modes`` (K) and ``hq_share`` in [0, 1].
    """
    samples = samples.detach().float().cpu()
    centers = centers.detach().float().cpu()
    dist = torch.cdist(samples, centers)  # (N, K)
    nearest_d, nearest = dist.min(dim=1)
    hq = nearest_d <= radius * std
    counts = torch.bincount(nearest[hq], minlength=centers.shape[0]).float()
    covered = int((counts >= min_count).sum())
    return {
        "modes_covered": float(covered),
        "num_modes": float(centers.shape[0]),
        "hq_share": float(hq.float().mean()),
    }
