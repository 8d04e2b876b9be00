"""Feature extractors: `inception` (torch-fidelity's inception-v3-compat), `digits`, `random`.

Common interface: `extractor(images) -> dict` with
  "pool"    (N, D) float32   FID / precision-recall / KID features,
  "logits"  (N, K) float32   IS logits (Inception: pool3 @ W without the bias, ADM's "unbiased"),
  "spatial" (N, S) float32   sFID features, where the extractor has them (Inception: 17x17x7 = 2023).
`images` are (N, C, H, W) uint8 in 0..255, or float in [-1, 1], which is first quantised exactly as
ADM does, so float and uint8 inputs give identical features.

Extractors are plain modules held by evaluation code and callbacks, never submodules of a
LightningModule (they must not enter checkpoints or optimizers).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from beatgans.utils.logging import get_logger

log = get_logger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """ADM's quantisation: float (N, C, H, W) in [-1, 1] -> uint8 via ((x + 1) * 127.5).clamp(0, 255), truncated.

    uint8 input is returned unchanged.
    """
    if images.dtype == torch.uint8:
        return images
    return ((images.float() + 1) * 127.5).clamp(0, 255).to(torch.uint8)


class FeatureExtractor(nn.Module):
    """Base class. Subclasses set `name`, `dims` (output key -> width) and `weights_hash`, and
    implement `_features(uint8 (N, C, H, W)) -> dict`."""

    name: str = "base"
    dims: dict[str, int] = {}
    weights_hash: str = ""

    def _features(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4:
            raise ValueError(f"{self.name} extractor: expected (N, C, H, W) images, got shape {tuple(images.shape)}.")
        device = next(self.parameters()).device
        return self._features(quantize_uint8(images).to(device))


class RandomExtractor(FeatureExtractor):
    """A tiny seeded random CNN for tests: pool (16), logits (10), spatial (4x4x2 = 32, NHWC)."""

    name = "random"

    def __init__(self, in_channels: int = 3, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(in_channels, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)
        self.dims = {"pool": 16, "logits": 10, "spatial": 32}
        self.weights_hash = f"random-seed{seed}-c{in_channels}"
        self.requires_grad_(False).eval()

    def _features(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.conv(images_u8.float() / 127.5 - 1.0))
        pool = h.mean(dim=(2, 3))
        spatial = F.adaptive_avg_pool2d(h[:, :2], 4).permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        return {"pool": pool, "logits": self.fc(pool), "spatial": spatial}


class DigitsExtractor(FeatureExtractor):
    """The cached digits CNN (`beatgans.metrics.digits`): pool (128), logits (10); no spatial."""

    name = "digits"

    def __init__(self, image_size: int = 16):
        super().__init__()
        from beatgans.metrics.digits import load_digits_cnn, state_hash

        self.net = load_digits_cnn(image_size)
        self.image_size = int(image_size)
        self.dims = {"pool": self.net.hidden.out_features, "logits": self.net.head.out_features}
        self.weights_hash = state_hash(self.net)

    def _features(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        if images_u8.shape[1:] != (1, self.image_size, self.image_size):
            raise ValueError(f"digits extractor: expected (N, 1, {self.image_size}, {self.image_size}) images, "
                             f"got {tuple(images_u8.shape)}; build it with the samples' image_size.")
        pool, logits = self.net.features(images_u8.float() / 127.5 - 1.0)
        return {"pool": pool, "logits": logits}


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _missing_weights(where: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Inception weights {where}: download {INCEPTION_FILE} ({INCEPTION_URL}) and pass its path as "
        f"metrics.inception_weights=<path> (or the INCEPTION_WEIGHTS variable), or place it in "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'}.")


def resolve_inception_weights(weights_path: str | os.PathLike | None = None) -> Path | None:
    """Where the Inception weights come from: the argument, else $INCEPTION_WEIGHTS, else the torch hub
    cache; None when none of them has the file (the caller may then download)."""
    for source, value in (("metrics.inception_weights", weights_path), ("INCEPTION_WEIGHTS",
                                                                        os.environ.get("INCEPTION_WEIGHTS"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise _missing_weights(f"file {path} (from {source}) does not exist")
            return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return cached if cached.is_file() else None


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's `inception-v3-compat` (TF1-compatible resize to 299) with ADM's three outputs:
    pool (2048, pool3), logits (1008, unbiased) and spatial (2023): the first 7 channels of TF's
    `mixed_6/conv` (torch-fidelity's `Mixed_6d.branch1x1`, after its ReLU), 17x17x7 flattened NHWC.

    Grey-scale images are repeated to three channels.

    Args:
        weights_path: the `.pth` file; see `resolve_inception_weights` for the fall-backs.
        allow_download: when no file is found, try torch-fidelity's download (needs a network).
    """

    name = "inception"

    def __init__(self, weights_path: str | os.PathLike | None = None, allow_download: bool = True):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = resolve_inception_weights(weights_path)
        if path is None and not allow_download:
            raise _missing_weights("were not found and downloading is off")
        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=None if path is None else str(path))
        except (OSError, RuntimeError, ValueError) as err:
            if path is not None:
                raise RuntimeError(f"Inception weights file {path} could not be loaded ({err}).") from err
            raise _missing_weights(f"were not found and the download failed ({type(err).__name__})") from err
        path = path or resolve_inception_weights(None)
        self.weights_hash = _file_hash(path) if path is not None else "unknown"
        self.dims = {"pool": 2048, "logits": 1008, "spatial": 17 * 17 * 7}
        self._spatial: torch.Tensor | None = None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output) -> None:
        # NHWC flattening matches the TF evaluator's (N, 17, 17, 7) tensor reshaped to (N, 2023).
        self._spatial = output[:, :7].permute(0, 2, 3, 1).reshape(output.shape[0], -1).float()

    def _features(self, images_u8: torch.Tensor) -> dict[str, torch.Tensor]:
        if images_u8.shape[1] == 1:
            images_u8 = images_u8.expand(-1, 3, -1, -1)
        if images_u8.shape[1] != 3:
            raise ValueError(f"inception extractor: expected 1 or 3 channels, got {images_u8.shape[1]}.")
        pool, logits = self.net(images_u8.contiguous())
        spatial, self._spatial = self._spatial, None
        return {"pool": pool, "logits": logits, "spatial": spatial}


def build_extractor(name: str, image_size: int | None = None, channels: int = 3,
                    inception_weights: str | None = None, allow_download: bool = True,
                    device: str | torch.device = "cpu") -> FeatureExtractor:
    """Build an extractor by name ("inception", "digits", "random") and move it to `device`."""
    if name == "inception":
        extractor = InceptionExtractor(inception_weights, allow_download=allow_download)
    elif name == "digits":
        if image_size is None:
            raise ValueError("digits extractor: image_size is required.")
        extractor = DigitsExtractor(image_size)
    elif name == "random":
        extractor = RandomExtractor(in_channels=channels)
    else:
        raise ValueError(f"Unknown feature extractor {name!r}; choose inception, digits or random.")
    return extractor.to(device)
