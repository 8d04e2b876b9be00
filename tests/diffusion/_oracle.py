"""Shared pieces of the diffusion tests: the guided-diffusion oracle, tiny fixed networks, noise replay.

`guided_diffusion` (PyPI `guided-diffusion-sdk`) is OpenAI's reference code; it is imported here,
in tests only, as a numerical oracle.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from torch import nn

gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
respace = pytest.importorskip("guided_diffusion.respace")

from beatgans.diffusion import GaussianDiffusion, PerSampleNoise, get_named_beta_schedule  # noqa: E402

MEAN = {"eps": gd.ModelMeanType.EPSILON, "x0": gd.ModelMeanType.START_X}
VAR = {"fixed_small": gd.ModelVarType.FIXED_SMALL, "fixed_large": gd.ModelVarType.FIXED_LARGE,
       "learned_range": gd.ModelVarType.LEARNED_RANGE}
LOSS = {"mse": gd.LossType.MSE, "hybrid": gd.LossType.RESCALED_MSE, "kl": gd.LossType.KL,
        "rescaled_kl": gd.LossType.RESCALED_KL}

F32_TOL = 1e-5
F64_TOL = 1e-6


def max_abs(a, b) -> float:
    a = a.detach().double() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, dtype=np.float64))
    b = b.detach().double() if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b, dtype=np.float64))
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def pair(schedule="linear", T=1000, mean_type="eps", var_type="fixed_small", loss_type="mse", spacing=None,
         rescale_timesteps=False):
    """(ours, oracle) built from the same betas; both respaced to `spacing` when given; both feeding
    the net ``t * 1000 / T`` when ``rescale_timesteps``."""
    betas = get_named_beta_schedule(schedule, T)
    ours = GaussianDiffusion(betas, mean_type, var_type, loss_type, rescale_timesteps=rescale_timesteps)
    kwargs = dict(betas=betas, model_mean_type=MEAN[mean_type], model_var_type=VAR[var_type],
                  loss_type=LOSS[loss_type], rescale_timesteps=rescale_timesteps)
    if spacing is None:
        return ours, gd.GaussianDiffusion(**kwargs)
    ours = ours.respace(spacing)
    return ours, respace.SpacedDiffusion(respace.space_timesteps(T, spacing), **kwargs)


class TinyNet(nn.Module):
    """A fixed random conv net that depends on x, on the (original) timestep and on a label.

    Output (B, out_channels, H, W); the sinusoidal time features make every timestep distinct, so a
    wrong timestep mapping changes the output.
    """

    def __init__(self, channels=2, out_channels=2, num_classes=None, seed=0, width=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.time = nn.Linear(8, width)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        self.num_classes = num_classes
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x, t, y=None):
        freqs = torch.exp(-math.log(1000.0) * torch.arange(4, device=x.device) / 4)
        arg = t.to(x.dtype)[:, None] * freqs.to(x.dtype)[None]
        emb = self.time(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))
        if self.label is not None and y is not None:
            emb = emb + self.label(y)
        h = torch.tanh(self.conv_in(x) + emb[:, :, None, None])
        return self.conv_out(h)


class TinyClassifier(nn.Module):
    """A fixed random t-dependent classifier: (x (B, C, H, W), t (B,)) -> logits (B, K)."""

    def __init__(self, channels=2, num_classes=3, seed=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.time = nn.Linear(2, 6)
        self.head = nn.Linear(6, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x, t):
        tf = t.to(x.dtype)[:, None] / 100.0
        h = torch.tanh(self.conv(x) + self.time(torch.cat([torch.sin(tf), torch.cos(tf)], 1))[:, :, None, None])
        return self.head(h.mean(dim=(2, 3)))


def reference_cond_fn(classifier, scale):
    """Classifier-guidance gradient written out as ADM's sampling script defines it."""

    def cond_fn(x, t, y=None):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = torch.log_softmax(classifier(x_in, t), dim=-1)
            selected = log_probs[range(len(log_probs)), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale

    return cond_fn


class RecordingNoise(PerSampleNoise):
    """PerSampleNoise that keeps every draw, to replay it into the oracle."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draws: list[torch.Tensor] = []

    def randn(self):
        z = super().randn()
        self.draws.append(z.clone())
        return z


@contextlib.contextmanager
def replay_randn_like(draws):
    """Make torch.randn_like return `draws` in order (zeros once exhausted) inside the oracle.

    Our samplers skip the draws that get multiplied by zero (t = 0, eta = 0); the oracle draws
    them anyway, so zeros stand in for those.
    """
    queue = list(draws)
    original = torch.randn_like

    def fake(x, *args, **kwargs):
        return queue.pop(0).to(x) if queue else torch.zeros_like(x)

    torch.randn_like = fake
    try:
        yield queue
    finally:
        torch.randn_like = original


@contextlib.contextmanager
def oracle_in_float64():
    """Let the oracle gather its float64 tables without its usual cast to float32.

    The reference always computes in float32; in a few places (e.g. DDIM's sqrt(1 - abar_prev)
    near t = 0) that rounding alone moves results by ~1e-5. Running it in float64 separates
    formula differences from float32 rounding.
    """
    original = gd._extract_into_tensor

    def extract(arr, timesteps, broadcast_shape):
        values = torch.from_numpy(np.asarray(arr, dtype=np.float64)).to(timesteps.device)[timesteps]
        return values.reshape(-1, *([1] * (len(broadcast_shape) - 1))).expand(broadcast_shape)

    gd._extract_into_tensor = extract
    try:
        yield
    finally:
        gd._extract_into_tensor = original
