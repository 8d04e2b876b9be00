"""Sampling a latent and/or context-conditioned diffusion model (pure torch): encode the conditions, sample
latents with per-sample seeds (optionally with classifier-free guidance against the null condition), decode.

Used by `DiffusionModule.sample_images` and by `beatgans-sample` (`beatgans.cli.latent`), so a latent run
samples the same way in training grids and from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from beatgans.diffusion.guidance import ClassifierFreeGuidance
from beatgans.diffusion.sampling import sample_with


def conditions_for(encoder: nn.Module | None, num_samples: int, labels: torch.Tensor | None = None,
                   prompts: Sequence[str] | None = None, num_classes: int | None = None):
    """The condition of every sample: ``labels`` (default ``i % num_classes``) for a label encoder or a
    class-conditional net, ``prompts`` cycled over the samples for a text encoder, None otherwise."""
    if encoder is not None and encoder.kind == "text":
        if not prompts:
            raise ValueError("this model is conditioned on text: give prompts (sample: prompts=[...]).")
        prompts = list(prompts)
        return [prompts[i % len(prompts)] for i in range(num_samples)]
    if prompts:
        raise ValueError("prompts were given but this model is not conditioned on text; use classes instead.")
    if labels is None and num_classes:
        labels = torch.arange(num_samples) % num_classes
    return labels


@torch.no_grad()
def sample_latent(net: nn.Module, diffusion, num_samples: int, *, first_stage: nn.Module | None = None,
                  cond_encoder: nn.Module | None = None, conditions=None, guidance_scale: float | None = None,
                  null_label: int | None = None, seed: int = 0, seeds: Sequence[int] | None = None,
                  sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
                  device: torch.device | str = "cpu", batch_size: int | None = None,
                  **solver_options) -> torch.Tensor:
    """Samples of a latent / context-conditioned model, decoded to images.

    Args:
        net: the denoiser on latents (B, net.in_channels, net.image_size, net.image_size).
        first_stage: decodes latents (None: the net works on pixels).
        cond_encoder: turns ``conditions`` (labels (N,) int64 or N prompts) into the net's context; without
            one, ``conditions`` are class labels passed as ``y``.
        guidance_scale: classifier-free guidance weight; the unconditional half gets the encoder's null
            condition (or ``null_label``). None samples the conditional model alone.
        seeds: per-sample seeds (default ``seed + i``): a sample never depends on the batch.
        solver_options: further `sample_with` options of the sampler (DPM-Solver's order, skip, ...).
    Returns:
        (N, C, H, W) float on ``device``, ~[-1, 1] (decoded images are not clamped).
    """
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(num_samples)]
    shape = (net.in_channels, net.image_size, net.image_size)
    clip = bool(getattr(first_stage, "clip_denoised", False)) if first_stage is not None else True
    wrapper = None
    if guidance_scale is not None and cond_encoder is not None:
        null = cond_encoder(cond_encoder.null_condition(1))
        wrapper = lambda m: ClassifierFreeGuidance(m, guidance_scale, null_context=null)
    elif guidance_scale is not None:
        if null_label is None:
            raise ValueError("classifier-free guidance needs a class-conditional net with a null class.")
        wrapper = lambda m: ClassifierFreeGuidance(m, guidance_scale, null_label)
    batch_size = batch_size or max(num_samples, 1)
    outs = []
    for start in range(0, num_samples, batch_size):
        stop = min(num_samples, start + batch_size)
        cond = conditions[start:stop] if conditions is not None else None
        labels, kwargs = cond, {}
        if cond_encoder is not None:
            context, mask = cond_encoder(cond)
            labels, kwargs = None, {"context": context, "context_mask": mask}
        z = sample_with(net, diffusion, stop - start, shape, seeds=seeds[start:stop], sampler=sampler, steps=steps,
                        labels=labels, eta=eta, device=device, model_wrapper=wrapper, model_kwargs=kwargs,
                        clip_denoised=clip, **solver_options)
        outs.append(first_stage.decode_latent(z) if first_stage is not None else z)
    return torch.cat(outs)


__all__ = ["conditions_for", "sample_latent"]
