"""Exponential moving averages of a network's weights, one shadow copy per rate."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copies of `net` updated as `shadow <- rate * shadow + (1 - rate) * net` after each optimizer step.

    The shadows are sub-modules (so they are saved in checkpoints and moved with the LightningModule) but they
    never require gradients and must be kept out of the optimizer (build it from `net.parameters()` only).
    Buffers (e.g. norm statistics) are copied, not averaged.
    """

    def __init__(self, net: nn.Module, rates: Sequence[float] = (0.9999,)):
        super().__init__()
        self.rates = [float(r) for r in rates]
        for r in self.rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"EMA rate must be in [0, 1), got {r}.")
        self.shadows = nn.ModuleList(copy.deepcopy(net) for _ in self.rates)
        for s in self.shadows:
            s.requires_grad_(False)
            s.eval()

    def train(self, mode: bool = True) -> "EMA":
        # Shadows always stay in eval mode (no dropout when sampling or validating).
        return super().train(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One EMA step from the current weights of `net`."""
        params = [p.detach() for p in net.parameters()]
        for rate, shadow in zip(self.rates, self.shadows):
            torch._foreach_lerp_(list(shadow.parameters()), params, 1.0 - rate)
            for b_s, b in zip(shadow.buffers(), net.buffers()):
                b_s.copy_(b)

    def shadow(self, index: int = 0) -> nn.Module:
        """The EMA network for `rates[index]`."""
        return self.shadows[index]

    @torch.no_grad()
    def copy_to(self, net: nn.Module, index: int = 0) -> None:
        """Overwrite `net`'s weights with shadow `index`."""
        net.load_state_dict(self.shadows[index].state_dict())


def ema_state_dict_from_checkpoint(state_dict: dict, index: int = 0, prefix: str = "ema.shadows") -> dict:
    """Extract the weights of EMA shadow `index` (keys stripped to the bare net) from a module state dict."""
    head = f"{prefix}.{index}."
    out = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
    if not out:
        raise KeyError(f"checkpoint has no EMA weights for index {index} (no keys starting with '{head}').")
    return out
