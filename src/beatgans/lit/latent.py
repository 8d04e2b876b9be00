"""Checks for a latent and/or context-conditioned `DiffusionModule` (first stage, condition encoder, data)."""

from __future__ import annotations

from torch import nn


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


__all__ = ["check_latent_setup"]
