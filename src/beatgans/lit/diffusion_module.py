"""`DiffusionModule`: a network + `GaussianDiffusion` trained with Lightning (DDPM / IDDPM / ADM recipe)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import lightning as L
import torch
from torch import nn

from beatgans.diffusion import (
    GaussianDiffusion,
    LossSecondMomentResampler,
    UniformSampler,
    sample_with,
)
from beatgans.nets.ema import EMA
from beatgans.nets.runtime import prepare_net
from beatgans.utils.logging import get_logger
from beatgans.utils.rng import rng_state, set_rng_state  # noqa: F401  (re-exported)

log = get_logger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or inf; the run stops before any checkpoint is written."""


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
        first_stage: latent diffusion: a frozen first stage (`beatgans.nets.first_stage`); images are encoded
            before the loss and samples decoded after, the net works on latents.
        cond_encoder: a condition encoder (`beatgans.nets.conditioning`) trained jointly (EMA'd with the
            net) whose context the net cross-attends to; batches carry labels or captions for it, and
            p_uncond replaces them with its null condition.
        sample_latents: encode with a sample of the first stage's posterior instead of its mode.
        sample_prompts: prompts cycled over `sample_images` samples of a text-conditioned model.
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, optimizer: Callable,
                 ema_rates: Sequence[float] = (0.9999,), timestep_sampler: str = "uniform",
                 num_classes: int | None = None, p_uncond: float = 0.0, warmup_steps: int = 0,
                 sample_sampler: str = "ddim", sample_steps: int = 50, val_bpd_batches: int = 0,
                 channels_last: bool = False, compile: bool = False, seed: int = 0,
                 first_stage: nn.Module | None = None, cond_encoder: nn.Module | None = None,
                 sample_latents: bool = False, sample_prompts: Sequence[str] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "diffusion", "optimizer", "first_stage", "cond_encoder"])
        self.net = net
        self.diffusion = diffusion
        self.optimizer_factory = optimizer
        self.ema = EMA(net, ema_rates)
        self.num_classes = num_classes
        self.p_uncond = float(p_uncond)
        self._init_conditioning(first_stage, cond_encoder, ema_rates)
        if p_uncond > 0 and num_classes is None and cond_encoder is None:
            raise ValueError("p_uncond > 0 (classifier-free guidance) needs a class-conditional model: "
                             "set num_classes.")
        T = diffusion.num_timesteps
        if timestep_sampler == "uniform":
            self.t_sampler = UniformSampler(T)
        elif timestep_sampler in ("loss-second-moment", "loss_second_moment"):
            self.t_sampler = LossSecondMomentResampler(T)
        else:
            raise ValueError(f"timestep_sampler must be 'uniform' or 'loss-second-moment', got {timestep_sampler!r}.")
        # after the EMA copies: they stay plain eager modules (compile=True compiles the training forward only)
        prepare_net(self.net, compile=compile, channels_last=channels_last)

    # ------------------------------------------------------------------ training
    def _step_generators(self, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """(host generator for t, `device` generator for noise and label dropout) for this step and rank."""
        base = ((self.hparams.seed * 1_000_003 + self.global_step) * 4099 + self.global_rank) * 2
        host = torch.Generator().manual_seed(base)
        dev = torch.Generator(device=device).manual_seed(base + 1)
        return host, dev

    # ------------------------------------------------------------------ latent diffusion / conditioning
    def _init_conditioning(self, first_stage: nn.Module | None, cond_encoder: nn.Module | None,
                           ema_rates: Sequence[float]) -> None:
        """Latent diffusion = this module composed with a frozen first stage; a trained condition encoder
        gets EMA shadows of its own (`cond_ema`), so `ema`'s checkpoint layout is unchanged."""
        from beatgans.nets.conditioning import is_frozen
        from beatgans.nets.first_stage import check_first_stage

        self.first_stage = check_first_stage(first_stage) if first_stage is not None else None
        self.cond_encoder = cond_encoder
        self.cond_ema = (
            EMA(cond_encoder, ema_rates) if cond_encoder is not None and not is_frozen(cond_encoder) else None
        )

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.first_stage, self.cond_encoder if self.cond_ema is None else None):
            if frozen is not None:
                frozen.eval()  # frozen parts never train (no dropout, no norm statistics)
        return self

    def encoder_for(self, ema_index: int | None) -> nn.Module | None:
        """The condition encoder: EMA shadow `ema_index`, or the trained one when None (or when frozen)."""
        if self.cond_ema is None or ema_index is None:
            return self.cond_encoder
        return self.cond_ema.shadow(ema_index)

    def _to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.first_stage is None:
            return x
        with torch.no_grad():
            return self.first_stage.encode_latent(x, sample=self.hparams.sample_latents and generator is not None,
                                                  generator=generator)

    def _model_kwargs(self, cond, drop: bool, generator: torch.Generator | None = None,
                      ema_index: int | None = None) -> dict:
        """Model kwargs for a batch's conditions: labels `y`, or the encoder's `context` and `context_mask`."""
        if self.cond_encoder is None:
            return self._labels(cond, drop, generator)
        encoder = self.encoder_for(ema_index)
        if drop and self.p_uncond > 0:
            mask = torch.rand((len(cond),), device=self.device, generator=generator) < self.p_uncond
            cond = encoder.drop(cond, mask)
        context, mask = encoder(cond)
        return {"context": context, "context_mask": mask}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The net's parameters and, when it trains, the condition encoder's (never the EMA shadows)."""
        params = list(self.net.parameters())
        if self.cond_ema is not None:
            params += [p for p in self.cond_encoder.parameters() if p.requires_grad]
        return params

    def _labels(self, y: torch.Tensor, drop: bool, generator: torch.Generator | None = None) -> dict:
        if self.num_classes is None:
            return {}
        if drop and self.p_uncond > 0:
            mask = torch.rand(y.shape, device=y.device, generator=generator) < self.p_uncond
            y = torch.where(mask, torch.full_like(y, self.num_classes), y)
        return {"y": y}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, extra = _split_batch(batch)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        host_gen, gen = self._step_generators(x.device)
        x = self._to_latent(x, gen)
        t, weights = self.t_sampler.sample(x.shape[0], x.device, generator=host_gen)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        kwargs = {**self._model_kwargs(y, True, gen), **extra}
        losses = self.diffusion.training_losses(self.net, x, t, model_kwargs=kwargs, noise=noise)
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
            if self.cond_ema is not None:
                self.cond_ema.update(self.cond_encoder)

    def configure_optimizers(self):
        opt = build_optimizer(self.optimizer_factory, self.trainable_parameters())
        if self.hparams.warmup_steps > 0:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(self.hparams.warmup_steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, extra = _split_batch(batch)
        x = self._to_latent(x)
        # Fixed t and noise per batch so validation losses are comparable across steps.
        gen = torch.Generator(device="cpu").manual_seed(1000 + batch_idx)
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), generator=gen).to(x.device)
        noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        ema_net = self.ema.shadow(0)
        kwargs = {**self._model_kwargs(y, drop=False, ema_index=0), **extra}
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
                      labels: torch.Tensor | None = None, eta: float = 0.0, ema_index: int = 0,
                      low_res: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                      guidance_scale: float | None = None) -> torch.Tensor:
        """Generate `num_samples` images with EMA weights; sample i uses seed `seed + i`.

        Returns (num_samples, C, H, W) float in [-1, 1]. Labels default to `i % num_classes` when conditional;
        a text-conditioned model cycles `prompts` (default `sample_prompts`). Latent models sample latents
        and decode them; `guidance_scale` applies classifier-free guidance (None: the conditional model).
        An upsampler needs `low_res` (N, C, h, w); during training it defaults to validation images' low-res versions.
        """
        net = self.ema.shadow(ema_index)
        if self.first_stage is not None or self.cond_encoder is not None:
            from beatgans.diffusion.latent import conditions_for, sample_latent

            encoder = self.encoder_for(ema_index)
            conditions = conditions_for(encoder, num_samples, labels, prompts or self.hparams.sample_prompts,
                                        self.num_classes)
            return sample_latent(net, self.diffusion, num_samples, first_stage=self.first_stage,
                                 cond_encoder=encoder, conditions=conditions, guidance_scale=guidance_scale,
                                 null_label=self.num_classes, seed=seed,
                                 sampler=sampler or self.hparams.sample_sampler,
                                 steps=steps or self.hparams.sample_steps, eta=eta, device=self.device)
        shape = (self.net.in_channels, self.net.image_size, self.net.image_size)
        if low_res is None and hasattr(self.net, "low_res_size"):  # an upsampler (SuperResUNet)
            from beatgans.data.superres import low_res_for_grid

            k = self.num_classes
            low_res = low_res_for_grid(self.trainer.datamodule, num_samples,
                                       labels if labels is not None or not k else torch.arange(num_samples) % k)
        return sample_with(net, self.diffusion, num_samples, shape, seed=seed,
                           sampler=sampler or self.hparams.sample_sampler, steps=steps or self.hparams.sample_steps,
                           labels=labels, num_classes=self.num_classes, eta=eta, device=self.device,
                           model_kwargs={"low_res": low_res} if low_res is not None else None)

    # ------------------------------------------------------------------ checkpoints
    # The global RNG state travels with the training loader's state (`beatgans.data.ResumableDataLoader`),
    # which restores it at the point of the random stream where the uninterrupted run was.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if isinstance(self.t_sampler, LossSecondMomentResampler):
            checkpoint["t_sampler"] = self.t_sampler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "t_sampler" in checkpoint and isinstance(self.t_sampler, LossSecondMomentResampler):
            self.t_sampler.load_state_dict(checkpoint["t_sampler"])


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x, y, extra model kwargs): super-resolution batches (data.low_res_size) carry low_res third."""
    x, y, *rest = batch
    return x, y, ({"low_res": rest[0]} if rest else {})


__all__ = ["DiffusionModule", "NonFiniteLossError", "build_optimizer"]
