"""Sampling a latent and/or context-conditioned diffusion model: encode the conditions, sample latents with
per-sample seeds (optionally with classifier-free guidance against the null condition), decode.

Used by `DiffusionModule.sample_images` and by `beatgans-sample` (through `load_latent_model`), so a
latent run samples the same way in training grids and from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class LatentParts:
    """The first stage and condition encoder of a trained run (either may be None)."""

    first_stage: nn.Module | None
    cond_encoder: nn.Module | None


def load_latent_parts(config, ckpt_path: str | Path, use_ema: bool = True, ema_index: int = 0) -> LatentParts | None:
    """Rebuild a run's first stage and condition encoder (with its EMA weights when asked) from its config
    (`task.first_stage`, `task.cond_encoder`) and checkpoint; None for an ordinary pixel-space run."""
    from hydra.utils import instantiate

    task = config.get("task", {}) if config is not None else {}
    if task.get("first_stage") is None and task.get("cond_encoder") is None:
        return None
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("state_dict", {})
    parts = []
    for name, ema_prefix in (("first_stage", None), ("cond_encoder", "cond_ema")):
        if task.get(name) is None:
            parts.append(None)
            continue
        module = instantiate(task[name])
        prefix = f"{name}."
        if use_ema and ema_prefix and any(k.startswith(f"{ema_prefix}.shadows.{ema_index}.") for k in state):
            prefix = f"{ema_prefix}.shadows.{ema_index}."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(weights, strict=True)
        parts.append(module.eval().requires_grad_(False))
    return LatentParts(*parts)


__all__ = ["LatentParts", "conditions_for", "load_latent_parts", "sample_latent"]


def check_latent_setup(module: nn.Module, datamodule) -> None:
    """Refuse, with one sentence each, a latent / context-conditioned module whose parts (and data) do not fit
    together. Raises ValueError."""
    net, first, encoder = module.net, module.first_stage, module.cond_encoder
    data_image_size = getattr(datamodule, "image_size", None)
    data_kind = getattr(datamodule, "condition_kind", "labels")
    if encoder is not None and encoder.kind != data_kind:
        raise ValueError(f"the condition encoder reads {encoder.kind} but data {type(datamodule).__name__} gives "
                         f"{data_kind}; use " + ("a captioned data module (data=digits_captions)." if encoder.kind ==
                                                 "text" else "a labelled data module or a text encoder."))
    f = int(first.downsample_factor) if first is not None else 1
    channels = int(first.latent_channels) if first is not None else None
    if data_image_size and net.image_size * f != data_image_size:
        raise ValueError(f"net.image_size={net.image_size} but the latents of {data_image_size}px images are "
                         f"{data_image_size // f}px (first stage f={f}); set net.image_size={data_image_size // f}.")
    if channels is not None and net.in_channels != channels:
        raise ValueError(f"net.in_channels={net.in_channels} but the first stage has {channels} latent channels; "
                         f"set net.in_channels={channels}.")
    ctx = getattr(net, "context_dim", None)
    if encoder is not None and ctx != encoder.context_dim:
        raise ValueError(f"net.context_dim={ctx} but the condition encoder gives {encoder.context_dim}-wide tokens; "
                         f"set net.context_dim={encoder.context_dim}.")
    if encoder is not None and encoder.kind == "text" and not module.hparams.get("sample_prompts"):
        raise ValueError("a text-conditioned model samples its grids from prompts: set task.sample_prompts=[...].")
    if encoder is None and ctx is not None:
        raise ValueError("net.context_dim is set but the task has no condition encoder; set task.cond_encoder.")
    if encoder is not None and getattr(net, "num_classes", None) is not None:
        raise ValueError("the condition encoder carries the labels: set net.num_classes=null.")
    if encoder is not None and encoder.kind == "labels" and module.num_classes != getattr(encoder, "num_classes", None):
        raise ValueError(f"task.num_classes={module.num_classes} but the class-token encoder has "
                         f"{getattr(encoder, 'num_classes', None)} classes.")


__all__ += ["check_latent_setup"]
