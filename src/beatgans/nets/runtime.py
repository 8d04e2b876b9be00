"""How a network runs, as opposed to what it computes: torch.compile, memory layout, autocast.

Training (`DiffusionModule(compile=...)`), sampling (`beatgans-sample compile=... precision=...`) and
`beatgans-bench` all go through `prepare_net`, so a speed setting means the same thing everywhere.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def prepare_net(net: nn.Module, *, compile: bool = False, channels_last: bool = False,
                compile_mode: str | None = None) -> nn.Module:
    """Apply the speed settings to `net` in place and return it.

    channels_last: store 4-D weights NHWC (convolutions then pick NHWC kernels; inputs follow the weights).
    compile: `nn.Module.compile` (torch.compile of the forward, in place), so the state dict keeps its keys
        (no `_orig_mod.` prefix) and checkpoints, EMA copies and converters see the same module. Compile
        after any `copy.deepcopy` of the net (EMA shadows are plain copies of the eager net).
    """
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if compile:
        net.compile(mode=compile_mode)
        log.info("torch.compile enabled for %s (mode=%s)", type(net).__name__, compile_mode or "default")
    return net


def autocast_dtype(precision: str) -> torch.dtype | None:
    """`fp32` -> None (no autocast), `bf16` -> torch.bfloat16, `fp16` -> torch.float16."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}.")
    return AUTOCAST_DTYPES[precision]


class AutocastNet(nn.Module):
    """Runs `net` under autocast in `dtype` and returns its output in float32.

    The sampler's arithmetic (posterior coefficients, x_t updates, classifier gradients) stays in float32:
    only the network's matmuls and convolutions drop to bf16/fp16 (GroupNorm stays float32, see
    `beatgans.nets.layers.GroupNorm32`). Call signature is the model callable's: `(x, t, **model_kwargs)`.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, t, **kwargs)
        return out.float()

    def __getattr__(self, name: str):
        # expose the wrapped net's attributes (image_size, in_channels, num_classes, null_class ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)


def with_autocast(net: nn.Module, precision: str) -> nn.Module:
    """`net` itself for fp32, else `AutocastNet(net, dtype)`."""
    dtype = autocast_dtype(precision)
    return net if dtype is None else AutocastNet(net, dtype)


__all__ = ["AutocastNet", "autocast_dtype", "prepare_net", "with_autocast"]
