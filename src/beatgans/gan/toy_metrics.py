"""Mode coverage of 2-D samples against a known mixture of isotropic Gaussians (pure torch)."""

from __future__ import annotations

import torch

from beatgans.gan.losses import nonsaturating_loss

MIN_COUNT = 20  # samples on a mode for it to count as covered (of 2,500 in the toy experiments)


def mode_counts(samples: torch.Tensor, centers: torch.Tensor, std: float, radius: float = 3.0) -> torch.Tensor:
    """High-quality samples per mode: how many of ``samples`` (N, 2) lie within ``radius * std`` of
    each of ``centers`` (K, 2), each sample counted for its nearest centre. Returns (K,) int64."""
    samples = samples.detach().float().cpu()
    centers = centers.detach().float().cpu()
    nearest_d, nearest = torch.cdist(samples, centers).min(dim=1)  # (N,), (N,)
    return torch.bincount(nearest[nearest_d <= radius * std], minlength=centers.shape[0])


def mode_coverage(
    samples: torch.Tensor, centers: torch.Tensor, std: float, min_count: int = MIN_COUNT, radius: float = 3.0
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
    counts = mode_counts(samples, centers, std, radius)
    return {
        "modes_covered": float((counts >= min_count).sum()),
        "num_modes": float(centers.shape[0]),
        "hq_share": float(counts.sum()) / samples.shape[0],
    }


def generator_forces(
    points: torch.Tensor,
    discriminator,
    diffusion,
    t: int | torch.Tensor,
    draws: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The pull the generator's loss puts on each fake sample when D sees it at noise step ``t``.

    ``-d/dx softplus(-D(q(x, t), t))`` (the non-saturating generator loss), averaged over ``draws``
    noise draws: the direction and strength with which one gradient step would move each sample
    if the generator could move samples freely. The chain rule through the noising scales it by
    ``sqrt(abar_t)``, so large ``t`` pulls weakly even where D's noisy view is informative.

    Args:
        points: (N, D) fake samples (detached from the generator).
        discriminator: ``D(x (N, D), t (N,) int64, None) -> logits (N,)``.
        diffusion: an ``AdaptiveDiffusion`` whose schedule covers ``t`` (``0 <= t <= diffusion.T``).
        t: the noise step: an int for every sample, or (N,) int64 per sample; 0 is the clean view.
        draws: noise draws averaged per sample (1 is enough at ``t = 0``).
        generator: RNG for the noise draws.
    Returns:
        (N, D) float32 forces.
    """
    x = points.detach().float()
    steps = torch.as_tensor(t, dtype=torch.long).to(x.device).expand(x.shape[0]).contiguous()
    if steps.min() < 0 or steps.max() > diffusion.T:
        raise ValueError(f"t must lie in the diffusion's current range 0..{diffusion.T}, "
                         f"got {steps.min()}..{steps.max()}")
    draws = draws if steps.max() > 0 else 1
    total = torch.zeros_like(x)
    for _ in range(draws):
        xr = x.clone().requires_grad_(True)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        logits = discriminator(diffusion.q_sample(xr, steps, noise), steps, None)
        (grad,) = torch.autograd.grad(nonsaturating_loss(logits, real=True).sum(), xr)
        total -= grad
    return total / draws


@torch.no_grad()
def discriminator_field(discriminator, points: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """D's logits on clean points (t = 0, no noising), for landscape plots: (M, D) float -> (M,) float.

    ``discriminator(x, t, None)`` must be unconditional (toy data). Its train/eval mode is restored.
    """
    was_training = discriminator.training
    discriminator.eval()
    device = next(discriminator.parameters()).device
    points = points.to(device)
    t = torch.zeros(len(points), dtype=torch.long, device=device)
    out = torch.cat([discriminator(points[i:i + chunk], t[i:i + chunk], None) for i in range(0, len(points), chunk)])
    discriminator.train(was_training)
    return out
