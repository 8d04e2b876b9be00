"""LPIPS (Zhang et al. 2018), the VGG16 variant LDM's autoencoder uses as its perceptual loss, built from
local weight files only (nothing is downloaded):

- ``vgg_weights``: torchvision's VGG16 ImageNet state dict (keys ``features.<i>.weight``; extra keys
  such as ``classifier.*`` are ignored), e.g. the file torchvision caches as ``vgg16-397923af.pth``;
- ``lpips_weights``: the five learned 1x1 "lin" layers of LPIPS v0.1 for VGG (keys
  ``lin<k>.model.1.weight``, shapes (1, C_k, 1, 1)), the ``vgg.pth`` file the ``lpips`` package ships.

    d(x, y) = sum_k mean_hw( w_k . (n(f_k(x)) - n(f_k(y)))^2 ),  n = unit norm over channels

with f_k the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of inputs shifted by
(-0.030, -0.088, -0.188) and scaled by (0.458, 0.448, 0.450) per RGB channel. Pure torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 128, 256, 512, 512)
SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # torchvision vgg16.features indices up to each relu
VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional stack up to relu5_3, indexed as torchvision's ``vgg16().features`` (conv, ReLU,
    ..., max-pool), so its state dict loads as is."""
    layers: list[nn.Module] = []
    width = 3
    for spec in VGG16_CONVS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(width, spec, 3, padding=1), nn.ReLU()]
            width = spec
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Perceptual distance of images (B, C, H, W) in [-1, 1] (C = 1 is repeated to RGB) -> (B,) float32.

    Frozen (no parameter requires grad) and always in eval mode; gradients flow to the inputs.
    """

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # frozen network: never in training mode

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, outs = (x - self.shift) / self.scale, []
        for start, stop in SLICES:
            for layer in self.features[start:stop]:
                h = layer(h)
            outs.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for lin, fx, fy in zip(self.lins, self._activations(x), self._activations(y)):
            total = total + lin((fx - fy).pow(2)).mean(dim=(2, 3))
        return total.flatten()

    def load_weights(self, vgg_state: dict, lpips_state: dict) -> LPIPS:
        """Fill the VGG16 features and the lin layers; strict (a one-sentence error lists missing keys)."""
        feats = {k[len("features."):]: v for k, v in vgg_state.items() if k.startswith("features.")}
        feats = {k: v for k, v in feats.items() if int(k.split(".")[0]) < SLICES[-1][1]}
        lins = {f"{k}.weight": lpips_state.get(f"lin{k}.model.1.weight", lpips_state.get(f"lin{k}.weight"))
                for k in range(len(CHANNELS))}
        missing = [k for k in self.features.state_dict() if k not in feats]
        missing += [f"lin{k[0]}.model.1.weight" for k, v in lins.items() if v is None]
        if missing:
            raise ValueError(f"LPIPS weights are incomplete: missing {', '.join(missing)}; pass torchvision's "
                             "VGG16 state dict and the lpips package's vgg.pth.")
        self.features.load_state_dict(feats)
        self.lins.load_state_dict(lins)
        return self


def build_lpips(vgg_weights: str | os.PathLike | None = None,
                lpips_weights: str | os.PathLike | None = None) -> LPIPS | None:
    """LPIPS from local files, or None (the perceptual term is off) when neither path is set.

    Raises FileNotFoundError / ValueError with one sentence when only one path is set or a file is missing.
    """
    if vgg_weights is None and lpips_weights is None:
        return None
    if vgg_weights is None or lpips_weights is None:
        raise ValueError("the perceptual (LPIPS) term needs both perceptual.vgg_weights and "
                         "perceptual.lpips_weights; set both, or neither to train without it.")
    paths = {"perceptual.vgg_weights": Path(vgg_weights), "perceptual.lpips_weights": Path(lpips_weights)}
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{name}={path}: no such file (LPIPS weights are never downloaded); "
                                    f"point it at a local file or set both paths to null.")
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)
    return LPIPS().load_weights(load(paths["perceptual.vgg_weights"]), load(paths["perceptual.lpips_weights"]))


__all__ = ["LPIPS", "build_lpips"]
