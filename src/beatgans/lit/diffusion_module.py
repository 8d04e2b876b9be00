"""`DiffusionModule`: a network + `GaussianDiffusion` trained with Lightning (DDPM / IDDPM / ADM recipe)."""

from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch import nn

from beatgans.diffusion import (
    GaussianDiffusion,
    LossSecondMomentResampler,
    PerSampleNoise,
    UniformSampler,
    ddim_sample,
    ddpm_sample,
)
from beatgans.lit.ema import EMA
from beatgans.nets.runtime import prepare_net
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or inf; the run stops before any checkpoint is written."""


def rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) RNG states, for exact resumption."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_optimizer(factory: Callable, params, **overrides) -> torch.optim.Optimizer:
    """Instantiate an optimizer partial, asking for the fused kernel when every parameter is on CUDA."""
    params = list(params)
    func = getattr(factory, "func", factory)
    kwargs = dict(overrides)
    if func in (torch.optim.AdamW, torch.optim.Adam) and "fused" not in getattr(factory, "keywords", {}):
        if params and all(p.is_cuda for p in params):
            kwargs["fused"] = True
    return factory(params, **kwargs)


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from 0 to the base learning rate over `warmup_steps` optimizer steps."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class DiffusionModule(L.LightningModule):
    """Trains `net` with `diffusion.training_losses`.

    Args:
        net: the denoiser, `net(x, t, y=None)`; images (B, C, H, W) in [-1, 1].
        diffusion: the training process (T steps; learned or fixed variances; mse / hybrid / kl loss).
        optimizer: a partial taking the parameters (AdamW in the configs); fused on CUDA automatically.
        ema_rates: one EMA copy per rate; index 0 is used for validation and sampling.
        timestep_sampler: "uniform" or "loss-second-moment" (IDDPM importance sampling).
        num_classes: labels are passed to the net when set (class-conditional training).
        p_uncond: probability of replacing a label with the null label `num_classes` (classifier-free guidance;
            the net needs `null_class=True`).
        warmup_steps: linear lr warm-up; sample_* options drive `sample_images` defaults.
        val_bpd_batches: how many validation batches get the full-chain bits/dim (0 = off; it costs T passes).
        channels_last / compile: speed settings of the trained net (`beatgans.nets.runtime.prepare_net`).
        seed: timesteps, noise and label dropout of step k on rank r come from a generator seeded by
            (seed, k, r): ranks draw different t and noise, and resuming replays them exactly.
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, optimizer: Callable,
                 ema_rates: Sequence[float] = (0.9999,), timestep_sampler: str = "uniform",
                 num_classes: int | None = None, p_uncond: float = 0.0, warmup_steps: int = 0,
                 sample_sampler: str = "ddim", sample_steps: int = 50, val_bpd_batches: int = 0,
                 channels_last: bool = False, compile: bool = False, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "diffusion", "optimizer"])
        self.net = net
        self.diffusion = diffusion
        self.optimizer_factory = optimizer
        self.ema = EMA(net, ema_rates)
        self.num_classes = num_classes
        self.p_uncond = float(p_uncond)
        if p_uncond > 0 and num_classes is None:
            raise ValueError("p_uncond > 0 (classifier-free guidance) needs a class-conditional model: set num_classes.")
        T = diffusion.num_timesteps
        if timestep_sampler == "uniform":
            self.t_sampler = UniformSampler(T)
        elif timestep_sampler in ("loss-second-moment", "loss_second_moment"):
            self.t_sampler = LossSecondMomentResampler(T)
        else:
            raise ValueError(f"timestep_sampler must be 'uniform' or 'loss-second-moment', got {timestep_sampler!r}.")
        # after the EMA copies: they stay plain eager modules (compile=True compiles the training forward only)
        prepare_net(self.net, compile=compile, channels_last=channels_last)
        self._pending_rng: dict | None = None

    # ------------------------------------------------------------------ training
    def _step_generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """(host generator for t, `device` generator for noise and label dropout) for this step and rank."""
        base = ((self.hparams.seed * 1_000_003 + self.global_step) * 4099 + self.global_rank) * 2
        host = torch.Generator().manual_seed(base)
        dev = torch.Generator(device=device).manual_seed(base + 1)
        return host, dev

    def _labels(self, y: torch.Tensor, drop: bool, generator: torch.Generator | None = None) -> dict:
        if self.num_classes is None:
            return {}
        if drop and self.p_uncond > 0:
            mask = torch.rand(y.shape, device=y.device, generator=generator) < self.p_uncond
            y = torch.where(mask, torch.full_like(y, self.num_classes), y)
        return {"y": y}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        host_gen, gen = self._step_generators(x.device)
        t, weights = self.t_sampler.sample(x.shape[0], x.device, generator=host_gen)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        losses = self.diffusion.training_losses(self.net, x, t, model_kwargs=self._labels(y, True, gen), noise=noise)
        if isinstance(self.t_sampler, LossSecondMomentResampler):
            all_t = self.all_gather(t).reshape(-1)
            all_l = self.all_gather(losses["loss"].detach()).reshape(-1)
            self.t_sampler.update(all_t, all_l)
        loss = (losses["loss"] * weights).mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step}; stopping without writing a "
                "checkpoint (last.ckpt still holds the last good state). Lower the learning rate, enable "
                "trainer.gradient_clip_val, or switch precision.")
        self.log("train/loss", loss, prog_bar=True)
        for key in ("mse", "vb"):
            if key in losses:
                self.log(f"train/{key}", losses[key].mean())
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16 (16-mixed) dynamic loss scaling
        scale = scaler.get_scale() if scaler is not None else None
        super().optimizer_step(*args, **kwargs)
        # Once per real optimizer step (gradient accumulation respected). A step the loss scaler skipped
        # (inf/NaN gradients; it lowers the scale) leaves the EMA alone too, as ADM's fp16 trainer does.
        if scaler is None or scaler.get_scale() >= scale:
            self.ema.update(self.net)

    def configure_optimizers(self):
        opt = build_optimizer(self.optimizer_factory, self.net.parameters())
        if self.hparams.warmup_steps > 0:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(self.hparams.warmup_steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._pending_rng is not None:
            # Restored here, not in on_load_checkpoint: building the resumed data iterator draws from the
            # global RNG, which an uninterrupted run did at the start of the epoch instead.
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        # Fixed t and noise per batch so validation losses are comparable across steps.
        gen = torch.Generator(device="cpu").manual_seed(1000 + batch_idx)
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), generator=gen).to(x.device)
        noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        ema_net = self.ema.shadow(0)
        kwargs = self._labels(y, drop=False)
        losses = self.diffusion.training_losses(ema_net, x, t, model_kwargs=kwargs, noise=noise)
        self.log("val/loss", losses["loss"].mean(), prog_bar=True, sync_dist=True)
        if batch_idx < self.hparams.val_bpd_batches:
            bpd = self.diffusion.calc_bpd_loop(ema_net, x, model_kwargs=kwargs)
            self.log("val/bpd", bpd["total_bpd"].mean(), prog_bar=True, sync_dist=True)

    # ------------------------------------------------------------------ sampling
    @contextlib.contextmanager
    def ema_scope(self, index: int = 0) -> Iterator[nn.Module]:
        """Temporarily load EMA weights into `self.net` (restored on exit); yields the net in eval mode."""
        backup = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        was_training = self.net.training
        self.ema.copy_to(self.net, index)
        self.net.eval()
        try:
            yield self.net
        finally:
            self.net.load_state_dict(backup)
            self.net.train(was_training)

    @torch.no_grad()
    def sample_images(self, num_samples: int, seed: int = 0, sampler: str | None = None, steps: int | None = None,
                      labels: torch.Tensor | None = None, eta: float = 0.0, ema_index: int = 0) -> torch.Tensor:
        """Generate `num_samples` images with EMA weights; sample i uses seed `seed + i`.

        Returns (num_samples, C, H, W) float in [-1, 1]. Labels default to `i % num_classes` when conditional.
        """
        net = self.ema.shadow(ema_index)
        shape = (self.net.in_channels, self.net.image_size, self.net.image_size)
        return sample_with(net, self.diffusion, num_samples, shape, seed=seed,
                           sampler=sampler or self.hparams.sample_sampler, steps=steps or self.hparams.sample_steps,
                           labels=labels, num_classes=self.num_classes, eta=eta, device=self.device)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_state"] = rng_state()
        if isinstance(self.t_sampler, LossSecondMomentResampler):
            checkpoint["t_sampler"] = self.t_sampler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pending_rng = checkpoint.get("rng_state")
        if "t_sampler" in checkpoint and isinstance(self.t_sampler, LossSecondMomentResampler):
            self.t_sampler.load_state_dict(checkpoint["t_sampler"])


def sample_with(net: nn.Module, diffusion: GaussianDiffusion, num_samples: int, shape: Sequence[int], *,
                seed: int = 0, seeds: Sequence[int] | None = None, sampler: str = "ddim", steps: int | None = None, labels: torch.Tensor | None = None,
                num_classes: int | None = None, eta: float = 0.0, device: torch.device | str = "cpu",
                batch_size: int | None = None, model_wrapper: Callable | None = None,
                cond_fn: Callable | None = None) -> torch.Tensor:
    """Sample `num_samples` images from `net` with per-sample seeds (`seeds`, default `seed + i`), so each image is
    independent of `batch_size`, of the other samples and of the number of processes.

    `steps` respaces the process ("ddim" uses "ddim<steps>" when it divides T evenly, else equal sections).
    Returns (N, C, H, W) float in [-1, 1] on `device`.
    """
    process = respaced(diffusion, sampler, steps)
    if labels is None and num_classes is not None:
        labels = torch.arange(num_samples) % num_classes
    model = model_wrapper(net) if model_wrapper is not None else net
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(num_samples)]
    if len(seeds) != num_samples:
        raise ValueError(f"got {len(seeds)} seeds for {num_samples} samples.")
    batch_size = batch_size or num_samples
    outs = []
    for start in range(0, num_samples, batch_size):
        idx = range(start, min(num_samples, start + batch_size))
        noise = PerSampleNoise([seeds[i] for i in idx], tuple(shape), device)
        kwargs = {"y": labels[start : start + len(idx)].to(device)} if labels is not None else {}
        if sampler == "ddim":
            x = ddim_sample(process, model, (len(idx), *shape), eta=eta, noise=noise, model_kwargs=kwargs,
                            cond_fn=cond_fn)
        elif sampler == "ddpm":
            x = ddpm_sample(process, model, (len(idx), *shape), noise=noise, model_kwargs=kwargs, cond_fn=cond_fn)
        else:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}.")
        outs.append(x)
    return torch.cat(outs)


def respaced(diffusion: GaussianDiffusion, sampler: str, steps: int | str | None) -> GaussianDiffusion:
    """The process to sample with: `diffusion` itself when `steps` is None or equals its length."""
    if steps is None or (isinstance(steps, int) and steps >= diffusion.num_timesteps):
        return diffusion
    if isinstance(steps, str):
        return diffusion.respace(steps)
    T = diffusion.num_timesteps
    if sampler == "ddim" and any(len(range(0, T, s)) == steps for s in range(1, T)):
        return diffusion.respace(f"ddim{steps}")
    return diffusion.respace(str(steps))


__all__ = ["DiffusionModule", "NonFiniteLossError", "sample_with", "respaced", "build_optimizer"]
