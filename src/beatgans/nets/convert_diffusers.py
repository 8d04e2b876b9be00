"""Load diffusers-layout ``AutoencoderKL`` weights (the form Stable Diffusion's VAE is distributed in) into
`beatgans.nets.AutoencoderKL`.

    ae = autoencoder_from_diffusers_config(json.load(open("vae/config.json")))
    load_diffusers_autoencoder(ae, torch.load("vae/diffusion_pytorch_model.bin"))   # or a safetensors dict

The conversion renames keys only (diffusers' ``down_blocks.i.resnets.j`` is our ``levels.i.blocks.j``, its
``up_blocks`` are our decoder levels in the same order, its ``mid_block.resnets.0/1`` our ``mid.block1/2``)
and accepts both attention key styles diffusers has used: ``to_q/to_k/to_v/to_out.0`` and the older
``query/key/value/proj_attn``; attention weights stored as 1x1 convolutions (C, C, 1, 1) are flattened.
Pure torch: diffusers itself is never imported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from beatgans.nets.autoencoder import AutoencoderKL
from beatgans.nets.convert import CheckpointMismatchError

_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj",
         "query": "q", "key": "k", "value": "v", "proj_attn": "proj"}
_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "skip"}
_TOP = {"conv_norm_out": "norm_out", "conv_in": "conv_in", "conv_out": "conv_out"}
_MID_RESNETS = {"0": "block1", "1": "block2"}


def _rename_inner(rest: str) -> str | None:
    """Rename the part of a key below an encoder/decoder block (``resnets.j.norm1.weight`` ...)."""
    m = re.fullmatch(r"resnets\.(\d+)\.(norm1|conv1|norm2|conv2|conv_shortcut)\.(weight|bias)", rest)
    if m:
        return f"blocks.{m[1]}.{_RESNET[m[2]]}.{m[3]}"
    m = re.fullmatch(r"attentions\.(\d+)\.(group_norm|to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)\."
                     r"(weight|bias)", rest)
    if m:
        return f"attns.{m[1]}.{_ATTN[m[2]]}.{m[3]}"
    m = re.fullmatch(r"(downsamplers|upsamplers)\.0\.conv\.(weight|bias)", rest)
    if m:
        return f"resample.conv.{m[2]}"
    return None


def _rename(key: str) -> str | None:
    """diffusers key -> our key, or None when the key is not part of the layout."""
    if re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if not m:
        return None
    side, rest = m[1], m[2]
    m = re.fullmatch(r"(conv_in|conv_out|conv_norm_out)\.(weight|bias)", rest)
    if m:
        return f"{side}.{_TOP[m[1]]}.{m[2]}"
    m = re.fullmatch(r"(?:down_blocks|up_blocks)\.(\d+)\.(.+)", rest)
    if m:
        inner = _rename_inner(m[2])
        return f"{side}.levels.{m[1]}.{inner}" if inner else None
    m = re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", rest)
    if m:
        inner = _rename_inner(f"resnets.0.{m[2]}")
        return f"{side}.mid.{_MID_RESNETS[m[1]]}.{inner.split('.', 2)[2]}" if inner else None
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest)
    if m:
        inner = _rename_inner(f"attentions.0.{m[1]}")
        return f"{side}.mid.attn.{inner.split('.', 2)[2]}" if inner else None
    return None


def convert_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a diffusers ``AutoencoderKL`` state dict to our layout.

    Returns ``(converted, unknown)``: the renamed tensors (1x1-conv attention weights flattened to (C, C))
    and the source keys that belong to no part of our layout.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
            continue
        is_attn = ".attns." in new or ".attn." in new
        if is_attn and new.endswith(".weight") and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]  # attention projections some releases stored as 1x1 convolutions
        if new in out:
            raise CheckpointMismatchError(f"the state dict holds two tensors for {new} (both attention key styles "
                                          f"at once?); keep one of them.")
        out[new] = value
    return out, unknown


def load_diffusers_autoencoder(ae: AutoencoderKL, state_dict: Mapping[str, torch.Tensor]) -> AutoencoderKL:
    """Copy a diffusers-layout state dict into ``ae`` with strict key and shape checks.

    Every tensor of ``ae`` must be filled (the ``scale_factor`` buffer keeps its value; set it from the
    diffusers config's ``scaling_factor``) and every source tensor must be used, with equal shapes;
    otherwise `CheckpointMismatchError` names the missing, unexpected and mismatched keys.
    """
    converted, unknown = convert_diffusers_state_dict(state_dict)
    target = ae.state_dict()
    wanted = [k for k in target if k != "scale_factor"]
    missing = [k for k in wanted if k not in converted]
    unexpected = unknown + [k for k in converted if k not in target]
    mismatched = [f"{k} {tuple(converted[k].shape)} vs ours {tuple(target[k].shape)}"
                  for k in wanted if k in converted and converted[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
                 if keys]
        raise CheckpointMismatchError("the diffusers autoencoder weights do not fit this AutoencoderKL config: "
                                      + "; ".join(parts) + ". Build the net with autoencoder_from_diffusers_config.")
    with torch.no_grad():
        for key in wanted:
            target[key].copy_(converted[key])
    return ae


def autoencoder_from_diffusers_config(config: Mapping) -> AutoencoderKL:
    """Build the `AutoencoderKL` a diffusers ``AutoencoderKL`` config (its ``config.json``) describes.

    Refuses settings our layout does not have (other norms, activations, block types, no quant convs).
    """
    widths = [int(w) for w in config.get("block_out_channels", (64,))]
    base = widths[0]
    checks = [
        (config.get("act_fn", "silu") == "silu", "act_fn must be silu"),
        (int(config.get("norm_num_groups", 32)) == 32, "norm_num_groups must be 32"),
        (all(w % base == 0 for w in widths), "block_out_channels must be multiples of the first one"),
        (config.get("use_quant_conv", True) and config.get("use_post_quant_conv", True),
         "use_quant_conv and use_post_quant_conv must be true"),
        (config.get("mid_block_add_attention", True), "mid_block_add_attention must be true"),
        (config.get("shift_factor") is None, "shift_factor must be null"),
    ]
    down = list(config.get("down_block_types", ["DownEncoderBlock2D"] * len(widths)))
    up = list(config.get("up_block_types", ["UpDecoderBlock2D"] * len(widths)))
    checks.append((set(down) <= {"DownEncoderBlock2D", "AttnDownEncoderBlock2D"}
                   and set(up) <= {"UpDecoderBlock2D", "AttnUpDecoderBlock2D"}, "unsupported block types"))
    for ok, what in checks:
        if not ok:
            raise ValueError(f"this diffusers AutoencoderKL config cannot be converted: {what}.")
    resolution = int(config.get("sample_size", 256))
    if isinstance(config.get("sample_size"), (list, tuple)):
        resolution = int(config["sample_size"][0])
    attn_res = sorted({resolution // 2 ** i for i, t in enumerate(down) if t.startswith("Attn")})
    up_attn = sorted({resolution // 2 ** (len(up) - 1 - i) for i, t in enumerate(up) if t.startswith("Attn")})
    if attn_res != up_attn:
        raise ValueError("this diffusers AutoencoderKL config cannot be converted: its encoder and decoder "
                         "attention resolutions differ.")
    return AutoencoderKL(in_channels=int(config.get("in_channels", 3)), out_channels=int(config.get("out_channels", 3)),
                         base_channels=base, channel_mult=[w // base for w in widths],
                         num_res_blocks=int(config.get("layers_per_block", 1)),
                         latent_channels=int(config.get("latent_channels", 4)), attn_resolutions=attn_res,
                         resolution=resolution, scale_factor=float(config.get("scaling_factor", 0.18215)))


__all__ = ["autoencoder_from_diffusers_config", "convert_diffusers_state_dict", "load_diffusers_autoencoder"]
