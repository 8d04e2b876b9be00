"""Negative log-likelihood in bits/dim over the whole chain (DDPM eq. 5; IDDPM section 3)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .losses import mean_flat, normal_kl

if TYPE_CHECKING:  # imported only for annotations: gaussian.py imports this module lazily
    from .gaussian import GaussianDiffusion, Model
    from .samplers import PerSampleNoise

__all__ = ["prior_bpd", "calc_bpd_loop"]


def prior_bpd(diffusion: "GaussianDiffusion", x0: Tensor) -> Tensor:
    """KL(q(x_T | x0) || N(0, I)) in bits/dim, (B,). Constant in the model; ~0 for a good schedule."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps - 1, device=x0.device, dtype=torch.long)
    mean, _, log_var = diffusion.q_mean_variance(x0, t)
    return mean_flat(normal_kl(mean, log_var.expand_as(x0), 0.0, 0.0)) / math.log(2.0)


@torch.no_grad()
def calc_bpd_loop(diffusion: "GaussianDiffusion", model: "Model", x0: Tensor, clip_denoised: bool = True,
                  model_kwargs: dict | None = None, noise: "PerSampleNoise | None" = None,
                  progress: bool = False) -> dict[str, Tensor]:
    """Variational upper bound on -log p(x0), in bits/dim, with one x_t draw per step.

    Steps are visited from T-1 down to 0 and each draws its noise with ``torch.randn_like(x0)``
    (or ``noise.randn()`` for per-sample seeded, batch-independent results).

    Args:
        x0: (B, C, H, W) images quantised to 256 levels and scaled to [-1, 1].

    Returns:
        dict: ``total_bpd`` (B,) = ``prior_bpd`` (B,) + sum of ``vb`` (B, T); ``vb[:, t]`` is the
        term of step t (the decoder NLL at t = 0); ``xstart_mse`` and ``mse`` (B, T) are the x0 and
        eps errors per step.
    """
    T, B = diffusion.num_timesteps, x0.shape[0]
    vb = x0.new_zeros(B, T)
    xstart_mse, eps_mse = x0.new_zeros(B, T), x0.new_zeros(B, T)
    steps = range(T - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="bits/dim")
    for i in steps:
        t = torch.full((B,), i, device=x0.device, dtype=torch.long)
        eps = torch.randn_like(x0) if noise is None else noise.randn().to(x0)
        x_t = diffusion.q_sample(x0, t, noise=eps)
        terms = diffusion.vb_terms_bpd(model, x0, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        vb[:, i] = terms["output"]
        xstart_mse[:, i] = mean_flat((terms["pred_xstart"] - x0) ** 2)
        eps_mse[:, i] = mean_flat((diffusion.predict_eps_from_x0(x_t, t, terms["pred_xstart"]) - eps) ** 2)
    prior = prior_bpd(diffusion, x0)
    return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb, "xstart_mse": xstart_mse, "mse": eps_mse}
