"""Load (and save) OpenAI guided-diffusion / improved-diffusion checkpoints into our nets.

Their layout: ``time_embed.{0,2}``, ``label_emb``, ``input_blocks.{i}.{j}`` (``input_blocks.0.0`` is
the stem conv), ``middle_block.{j}``, ``output_blocks.{i}.{j}``, ``out.{0,2}``; inside residual
blocks ``in_layers / emb_layers / out_layers / skip_connection``, inside attention ``norm / qkv /
proj_out``, conv downsamplers ``op``; classifier heads under ``out.*``. Both attention orders
share one key layout (the order is a constructor flag, ``use_new_attention_order``), so a converted
checkpoint is only correct with the flag the checkpoint was trained with.

Our names are derived from the modules' ``OPENAI_NAMES`` tables (see `beatgans.nets.layers`); the
mapping is a pure renaming plus dropping/adding trailing singleton dims (1x1 conv <-> linear).

Upsamplers (``64_256_upsampler.pt``, ``128_512_upsampler.pt``, guided-diffusion's ``SuperResModel``) share
the UNet layout; only the stem sees twice the image channels (x_t, then the resized low-res image), which
`beatgans.nets.SuperResUNet` reproduces, so the same strict renaming loads them. Loading one into the
wrong kind of net is refused with a hint naming the right one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from beatgans.nets.classifier import EncoderClassifier
from beatgans.nets.unet import SuperResUNet, UNet
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

_UNET_ROOT = {
    "stem": "input_blocks.0.0",
    "middle": "middle_block",
    "decoder": "output_blocks",
    "out_norm": "out.0",
    "out_conv": "out.2",
    "class_embed": "label_emb",
}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the network; the message lists every offending key."""


def _root_table(net: nn.Module) -> dict[str, str]:
    if isinstance(net, UNet):
        return _UNET_ROOT
    if isinstance(net, EncoderClassifier):
        # Attention pooling is module out.2; the adaptive and spatial heads' layers sit directly in `out`.
        return {"stem": "input_blocks.0.0", "middle": "middle_block", "out_norm": "out.0",
                "head": "out.2" if net.pool == "attention" else "out"}
    raise TypeError(f"no OpenAI layout known for {type(net).__name__}")


def _names_of(module: nn.Module) -> Mapping[str, str]:
    if hasattr(module, "OPENAI_NAMES"):
        return module.OPENAI_NAMES
    v1 = getattr(module, "OPENAI_NAMES_V1", None)  # SpatialPool: layout depends on the variant
    if v1 is not None:
        return module.OPENAI_NAMES_V2 if module.norm is not None else v1
    return {}


def _translate(net: nn.Module, key: str) -> tuple[str, int]:
    """(OpenAI key, spatial dims of their 1x1 conv if ours is a linear there else 0) for our ``key``."""
    parts = key.split(".")
    if parts[0] == "encoder":  # their input_blocks.0 is our stem, so every encoder index shifts by one
        out = [f"input_blocks.{int(parts[1]) + 1}"]
        module: nn.Module | None = net.encoder[int(parts[1])]
        parts = parts[2:]
    else:
        out = [_root_table(net).get(parts[0], parts[0])]
        module = getattr(net, parts[0])
        parts = parts[1:]
    conv_dims = 0
    for part in parts:
        if module is None:
            out.append(part)
            continue
        out.append(_names_of(module).get(part, part))
        conv_dims = getattr(module, "OPENAI_CONV1X1", {}).get(part, conv_dims)
        child = getattr(module, part, None)
        module = child if isinstance(child, nn.Module) else None
    return ".".join(out), conv_dims


def openai_key(net: nn.Module, key: str) -> str:
    """The OpenAI state-dict key of our parameter/buffer ``key`` (e.g. ``encoder.0.0.norm1.weight``)."""
    return _translate(net, key)[0]


def _compatible(ours: torch.Size, theirs: torch.Size) -> bool:
    """Equal up to trailing singleton dims (a 1x1 conv kernel vs a linear weight)."""
    strip = lambda s: tuple(s)[:2] + tuple(d for d in tuple(s)[2:] if d != 1)  # noqa: E731
    return tuple(ours) == tuple(theirs) or (len(ours) >= 2 and len(theirs) >= 2 and strip(ours) == strip(theirs))


def _read(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    path = os.fspath(path_or_state_dict)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def convert_openai_state_dict(net: nn.Module, theirs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/reshape an OpenAI state dict into ``net``'s, checking strictly.

    Raises:
        CheckpointMismatchError: listing every missing, unexpected and shape-mismatched key.
    """
    ours = net.state_dict()
    key_map = {k: openai_key(net, k) for k in ours}
    wanted = set(key_map.values())
    missing = [f"{k} (ours: {o})" for o, k in key_map.items() if k not in theirs]
    unexpected = sorted(k for k in theirs if k not in wanted)
    mismatched = [
        f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(ours[o].shape)} (ours: {o})"
        for o, k in key_map.items()
        if k in theirs and not _compatible(ours[o].shape, theirs[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint does not match {type(net).__name__}:"]
        hint = _upsampler_hint(net, theirs)
        if hint:
            lines[0] += f" {hint}"
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {len(items)} {title} key(s):")
                lines.extend(f"    {item}" for item in items)
        raise CheckpointMismatchError("\n".join(lines))
    return {o: theirs[k].reshape(ours[o].shape).to(ours[o].dtype) for o, k in key_map.items()}


def _upsampler_hint(net: nn.Module, theirs: Mapping[str, torch.Tensor]) -> str:
    """One sentence when the stem's input channels say upsampler vs plain UNet is the wrong kind of net."""
    stem = theirs.get("input_blocks.0.0.weight")
    if not isinstance(net, UNet) or stem is None or stem.ndim != 4:
        return ""
    ours = net.stem.weight.shape[1]
    if stem.shape[1] == 2 * ours:
        return ("It is an upsampler checkpoint (its stem takes x_t and the low-res image): build "
                "beatgans.nets.SuperResUNet, e.g. net=imagenet64_256_upsampler or net=imagenet128_512_upsampler.")
    if 2 * stem.shape[1] == ours and isinstance(net, SuperResUNet):
        return "It is a plain UNet checkpoint, not an upsampler: build beatgans.nets.UNet."
    return ""


def load_openai_checkpoint(net: nn.Module, path_or_state_dict) -> nn.Module:
    """Load a guided-diffusion / improved-diffusion checkpoint (path or state dict) into ``net`` in place.

    ``net`` must be built with the checkpoint's configuration (width, multipliers, heads, attention
    order, learn_sigma, num_classes without the CFG null row; `SuperResUNet` for upsamplers). Returns ``net``.
    """
    state = convert_openai_state_dict(net, _read(path_or_state_dict))
    net.load_state_dict(state, strict=True)
    log.info("loaded %d OpenAI tensors into %s", len(state), type(net).__name__)
    return net


def to_openai_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights under OpenAI's key names and shapes, the inverse of `load_openai_checkpoint`.

    The result loads strictly into guided-diffusion's model of the same configuration (our linear
    projections go back to their 1x1 conv kernel shapes).
    """
    out = {}
    for key, value in net.state_dict().items():
        theirs, conv_dims = _translate(net, key)
        value = value.detach().clone()
        if conv_dims and key.endswith(".weight"):
            value = value.reshape(*value.shape, *([1] * conv_dims))
        out[theirs] = value
    return out
