"""Likelihood terms of the variational bound: Gaussian KL and the discretised decoder likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["normal_kl", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood", "mean_flat"]


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def normal_kl(mean1: Tensor | float, logvar1: Tensor | float, mean2: Tensor | float, logvar2: Tensor | float) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

    Arguments broadcast; scalars are accepted (e.g. the standard-normal prior ``0.0, 0.0``) as long
    as at least one argument is a tensor, whose dtype and device the result takes.
    """
    ref = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (a if isinstance(a, Tensor) else torch.tensor(a).to(ref) for a in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Standard normal CDF through the tanh approximation that DDPM's decoder likelihood uses.

    The approximation (not ``torch.special.ndtr``) is kept on purpose: published bits/dim numbers
    were computed with it.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-probability (nats) of 8-bit images under a Gaussian integrated over each pixel's bin.

    Bins have width 2/255 around each value; the outermost bins (x below -0.999 or above 0.999)
    extend to -inf / +inf so the probabilities over all 256 levels sum to one (DDPM section 3.3).

    Args:
        x: (B, ...) images that were uint8, rescaled to [-1, 1].
        means: Gaussian means, same shape.
        log_scales: log standard deviations, same shape.

    Returns:
        (B, ...) log-probabilities, <= 0.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, "
                         f"log_scales {tuple(log_scales.shape)}")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_upper = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_lower = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    # The 1e-12 floors keep log() finite where the Gaussian puts no mass on a bin.
    log_cdf_upper = torch.log(cdf_upper.clamp(min=1e-12))
    log_survival_lower = torch.log((1.0 - cdf_lower).clamp(min=1e-12))
    log_bin = torch.log((cdf_upper - cdf_lower).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, log_bin))
