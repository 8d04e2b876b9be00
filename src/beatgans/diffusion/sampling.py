"""Sampling helpers above the samplers: pick the process to sample with and draw many seeded samples.

Pure torch (no Lightning): the training module, the sample CLI and notebooks share these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .dpm_solver import SKIPS, dpm_solver_sample, heun_sample, solver_timesteps
from .gaussian import GaussianDiffusion
from .samplers import PerSampleNoise, ddim_sample, ddpm_sample
from .schedules import space_timesteps

__all__ = ["SAMPLERS", "respaced", "sample_with", "sampler_nfe"]

SAMPLERS = ("ddpm", "ddim", "dpm_solver", "heun")


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


def _check_options(diffusion: GaussianDiffusion, sampler: str, steps, order: int, skip: str) -> None:
    # One clear sentence per bad option, before any sample is drawn.
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}.")
    if sampler in ("dpm_solver", "heun"):
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise ValueError(f"sampler {sampler} needs an integer number of steps (sampler.steps), got {steps!r}.")
        if not 2 <= steps <= diffusion.num_timesteps:
            raise ValueError(f"sampler.steps must be between 2 and T={diffusion.num_timesteps} for {sampler}, "
                             f"got {steps}.")
        if skip not in SKIPS:
            raise ValueError(f"sampler.skip must be one of {', '.join(SKIPS)}, got {skip!r}.")
    if sampler == "dpm_solver" and order not in (2, 3):
        raise ValueError(f"sampler.order must be 2 or 3 for dpm_solver, got {order!r}.")


def sampler_nfe(diffusion: GaussianDiffusion, sampler: str, steps: int | str | None, skip: str = "time_uniform",
                order: int = 2) -> int:
    """Network evaluations per sample: ddpm/ddim one per step of the respaced process, dpm_solver one per grid
    point, heun 2 * grid points - 1. A classifier-free-guidance wrapper's single batched [cond; uncond] call
    counts as one; classifier-guidance gradients are not counted."""
    _check_options(diffusion, sampler, steps, order, skip)
    if sampler in ("ddpm", "ddim"):
        return respaced(diffusion, sampler, steps).num_timesteps
    points = len(solver_timesteps(diffusion, steps, skip))
    return points if sampler == "dpm_solver" else 2 * points - 1


def sample_with(net: nn.Module, diffusion: GaussianDiffusion, num_samples: int, shape: Sequence[int], *,
                seed: int = 0, seeds: Sequence[int] | None = None, sampler: str = "ddim", steps: int | None = None,
                labels: Tensor | None = None, num_classes: int | None = None, eta: float = 0.0,
                device: torch.device | str = "cpu", batch_size: int | None = None,
                model_wrapper: Callable | None = None, cond_fn: Callable | None = None, order: int = 2,
                skip: str = "time_uniform", lower_order_final: bool = True, progress: bool = False,
                model_kwargs: dict[str, Tensor] | None = None, clip_denoised: bool = True) -> Tensor:
    """Sample `num_samples` images from `net` with per-sample seeds (`seeds`, default `seed + i`), so each image
    is independent of `batch_size`, of the other samples and of the number of processes.

    `sampler`: "ddpm" | "ddim" (`steps` respaces the process, see :func:`respaced`; `eta` for DDIM) or
    "dpm_solver" (DPM-Solver++ of `order` 2 or 3) | "heun" over `steps` grid points of `diffusion` chosen by
    `skip` ("time_uniform" | "logsnr", see :func:`solver_timesteps`). `labels` (N,) int64 default to
    `i % num_classes` when `num_classes` is set; `model_wrapper(net)` (e.g. classifier-free guidance) is what the
    sampler calls. `model_kwargs` holds more per-sample inputs, each (N, ...), sliced with each batch (an
    upsampler's `low_res`, a latent model's context); `clip_denoised` clamps every x0 prediction to [-1, 1]
    (turn it off for latents, which are not bounded). Returns (N, C, H, W) float on `device`.
    """
    _check_options(diffusion, sampler, steps, order, skip)
    process = respaced(diffusion, sampler, steps) if sampler in ("ddpm", "ddim") else diffusion
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
        kwargs.update({k: v[start : start + len(idx)].to(device) for k, v in (model_kwargs or {}).items()})
        common = {"noise": noise, "model_kwargs": kwargs, "cond_fn": cond_fn, "progress": progress,
                  "clip_denoised": clip_denoised}
        batch_shape = (len(idx), *shape)
        if sampler == "ddim":
            x = ddim_sample(process, model, batch_shape, eta=eta, **common)
        elif sampler == "ddpm":
            x = ddpm_sample(process, model, batch_shape, **common)
        elif sampler == "dpm_solver":
            x = dpm_solver_sample(process, model, batch_shape, steps=steps, order=order, skip=skip,
                                  lower_order_final=lower_order_final, **common)
        else:
            x = heun_sample(process, model, batch_shape, steps=steps, skip=skip, **common)
        outs.append(x)
    return torch.cat(outs)
