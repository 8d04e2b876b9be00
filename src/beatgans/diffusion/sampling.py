"""Sampling helpers above the samplers: pick the process to sample with and draw many seeded samples.

Pure torch (no Lightning): the training module, the sample CLI and notebooks share these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .gaussian import GaussianDiffusion
from .samplers import PerSampleNoise, ddim_sample, ddpm_sample
from .schedules import space_timesteps

__all__ = ["respaced", "sample_with"]


def respaced(diffusion: GaussianDiffusion, sampler: str, steps: int | str | None) -> GaussianDiffusion:
    """The process to sample with: `diffusion` itself when `steps` is None or at least its length.

    An int `steps` gives DDIM's integer striding ("ddim<steps>") for `sampler="ddim"` when some stride yields
    exactly that many steps, else `steps` equal sections (IDDPM respacing); a str is any `space_timesteps`
    spacing ("250", "90,60,60,20,20", "ddim25").
    """
    if steps is None or (isinstance(steps, int) and steps >= diffusion.num_timesteps):
        return diffusion
    if isinstance(steps, str):
        return diffusion.respace(steps)
    if sampler == "ddim":
        try:
            return diffusion.respace(use_timesteps=space_timesteps(diffusion.num_timesteps, f"ddim{steps}"))
        except ValueError:  # no integer stride gives exactly `steps` steps
            pass
    return diffusion.respace(str(steps))


def sample_with(net: nn.Module, diffusion: GaussianDiffusion, num_samples: int, shape: Sequence[int], *,
                seed: int = 0, seeds: Sequence[int] | None = None, sampler: str = "ddim", steps: int | None = None,
                labels: Tensor | None = None, num_classes: int | None = None, eta: float = 0.0,
                device: torch.device | str = "cpu", batch_size: int | None = None,
                model_wrapper: Callable | None = None, cond_fn: Callable | None = None) -> Tensor:
    """Sample `num_samples` images from `net` with per-sample seeds (`seeds`, default `seed + i`), so each image
    is independent of `batch_size`, of the other samples and of the number of processes.

    `steps` respaces the process (see :func:`respaced`). `labels` (N,) int64 default to `i % num_classes` when
    `num_classes` is set; `model_wrapper(net)` (e.g. classifier-free guidance) is what the sampler calls.
    Returns (N, C, H, W) float, approximately in [-1, 1], on `device`.
    """
    process = respaced(diffusion, sampler, steps)
    if labels is None and num_classes is not None:
        labels = torch.arange(num_samples) % num_classes
    model = model_wrapper(net) if model_wrapper is not None else net
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(num_samples)]
    if len(seeds) != num_samples:
        raise ValueError(f"got {len(seeds)} seeds for {num_samples} samples.")
    batch_size = batch_size or num_samples
    outs = []
    for start in range(0, num_samples, batch_size):
        idx = range(start, min(num_samples, start + batch_size))
        noise = PerSampleNoise([seeds[i] for i in idx], tuple(shape), device)
        kwargs = {"y": labels[start : start + len(idx)].to(device)} if labels is not None else {}
        if sampler == "ddim":
            x = ddim_sample(process, model, (len(idx), *shape), eta=eta, noise=noise, model_kwargs=kwargs,
                            cond_fn=cond_fn)
        elif sampler == "ddpm":
            x = ddpm_sample(process, model, (len(idx), *shape), noise=noise, model_kwargs=kwargs, cond_fn=cond_fn)
        else:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}.")
        outs.append(x)
    return torch.cat(outs)
