"""`DiffusionGANModule`: a GAN whose discriminator only sees diffusion-noised inputs (Diffusion-GAN).

One training iteration (the reference code's phase order, StyleGAN2-style):

1. G step: ``loss_G = softplus(-D(q(G(z)), t))`` with the noise applied differentiably, so the
   generator's gradient flows through ``y = sqrt(abar_t) x + sqrt(1 - abar_t) sigma eps``.
2. D step: ``softplus(D(q(G(z)))) + softplus(-D(q(x)))``; every ``r1_interval`` iterations the lazy
   R1 penalty ``gamma / 2 * |d D(q(x)) / d x|^2 * r1_interval`` on the CLEAN reals taken through
   the noising (gradient w.r.t. the clean input, as in the reference code).
3. ``sign(D(real))`` of every real pass feeds the adaptive-T controller, which updates p and T
   every 4 iterations (counted by this module, not by Lightning's global_step, which counts both
   optimizers).

``noise_enabled=False`` on the ``AdaptiveDiffusion`` gives the plain-GAN baseline with everything
else equal. Under DDP the trainer needs ``strategy=ddp_find_unused_parameters_true`` (the G step
freezes D and the D step never touches G's graph).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import lightning as L
import torch
from torch import nn

from beatgans.gan import AdaptiveDiffusion, discriminator_field, discriminator_loss, generator_loss
from beatgans.lit.diffusion_module import NonFiniteLossError, build_optimizer
from beatgans.lit.gan_analysis import GANAnalysis
from beatgans.nets.ema import EMA
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


class DiffusionGANModule(L.LightningModule):
    """Diffusion-GAN training with manual optimization.

    Args:
        generator: ``G(z (B, z_dim), y=None) -> x`` (images (B, C, H, W) in [-1, 1] or points (B, 2));
            must expose ``z_dim``.
        discriminator: ``D(x, t (B,) int64, y=None) -> logits (B,)``.
        diffusion: the adaptive diffusion (its ``noise_enabled=False`` is the plain GAN).
        g_optimizer, d_optimizer: partials taking parameters (e.g. Adam lr 2e-4, betas (0.5, 0.999)).
        r1_gamma, r1_interval: lazy R1 weight and period in iterations (gamma 0 disables it).
        ema_rate: EMA of the generator used by ``sample_images`` and ``final_metrics``.
        augment: optional ``x -> x`` applied to every D input before the diffusion (identity if None).
        num_classes: class-conditional G and D when set (labels from the batch; fakes get uniform labels).
        log_every: iterations between history records (p, T, r_d, D means).
        plot_every, eval_modes, eval_std, eval_min_count, eval_samples, save_artifacts: settings of the
            `beatgans.lit.gan_analysis.GANAnalysis` callback this module attaches (scatter plots of 2-D
            samples every ``plot_every`` iterations, ``gan_history.json``, toy mode coverage in
            ``final_metrics``).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, diffusion: AdaptiveDiffusion,
                 g_optimizer: Callable, d_optimizer: Callable, r1_gamma: float = 0.0, r1_interval: int = 16,
                 ema_rate: float = 0.999, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_classes: int | None = None, log_every: int = 100, plot_every: int = 0,
                 eval_modes: torch.Tensor | None = None, eval_std: float = 0.05, eval_min_count: int = 20,
                 eval_samples: int = 2500, save_artifacts: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "diffusion", "g_optimizer",
                                          "d_optimizer", "augment", "eval_modes"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.diffusion = diffusion
        self.g_optimizer_factory = g_optimizer
        self.d_optimizer_factory = d_optimizer
        self.ema = EMA(generator, [ema_rate])
        self.augment = augment
        self.num_classes = num_classes
        self.eval_modes = None if eval_modes is None else torch.as_tensor(eval_modes, dtype=torch.float32)
        self.analysis = GANAnalysis(plot_every, self.eval_modes, eval_std, eval_min_count, eval_samples,
                                    save_artifacts)
        self.iteration = 0  # training iterations (one G + one D step each)
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ pieces
    def run_discriminator(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Augment, noise (differentiably) and score: ``x`` -> logits (B,)."""
        if self.augment is not None:
            x = self.augment(x)
        x_t, t = self.diffusion(x)
        return self.discriminator(x_t, t, y)

    def _latents(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(batch_size, self.generator.z_dim, device=self.device)
        y = None
        if self.num_classes:
            y = torch.randint(0, self.num_classes, (batch_size,), device=self.device)
        return z, y

    def _check(self, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{name} became {loss.item()} at iteration {self.iteration}; stopping without writing a "
                "checkpoint. Lower the learning rates or raise r1_gamma.")

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        y = y if self.num_classes else None
        batch_size = x.shape[0]
        opt_g, opt_d = self.optimizers()

        # generator step: gradients flow through the noising into G
        self.toggle_optimizer(opt_g)
        z, y_fake = self._latents(batch_size)
        gen_logits = self.run_discriminator(self.generator(z, y_fake), y_fake)
        loss_g = generator_loss(gen_logits)
        self._check("generator loss", loss_g)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.ema.update(self.generator)

        # discriminator step (+ lazy R1 on the clean reals taken through the noising)
        self.toggle_optimizer(opt_d)
        z, y_fake = self._latents(batch_size)
        with torch.no_grad():
            fake = self.generator(z, y_fake)
        loss_d, fake_logits, real_logits, r1 = self.discriminator_loss(fake, y_fake, x, y)
        self._check("discriminator loss", loss_d)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.iteration += 1
        self.diffusion.step(batch_size * self.trainer.world_size)
        self._log_iteration(loss_g, loss_d, r1, real_logits, fake_logits, gen_logits)

    def discriminator_loss(self, fake: torch.Tensor, y_fake: torch.Tensor | None, real: torch.Tensor,
                           y: torch.Tensor | None):
        """D's non-saturating loss on noised fakes and reals, plus the lazy R1 on the clean reals taken
        through the noising when ``self.iteration % r1_interval == 0``; ``sign(D(real))`` feeds the controller.

        Returns ``(loss_d, fake_logits (B,), real_logits (B,), r1 or None)``.
        """
        fake_logits = self.run_discriminator(fake, y_fake)
        do_r1 = self.hparams.r1_gamma > 0 and self.iteration % self.hparams.r1_interval == 0
        real = real.detach().requires_grad_(do_r1)
        real_logits = self.run_discriminator(real, y)
        self.diffusion.accumulate(real_logits)
        loss_d = discriminator_loss(fake_logits, real_logits)
        r1 = None
        if do_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.square().flatten(1).sum(1).mean()
            loss_d = loss_d + r1 * (self.hparams.r1_gamma / 2) * self.hparams.r1_interval
        return loss_d, fake_logits, real_logits, r1

    def _log_iteration(self, loss_g, loss_d, r1, real_logits, fake_logits, gen_logits) -> None:
        d = self.diffusion
        record = self.iteration % self.hparams.log_every == 0 or self.iteration == 1
        to_logger = self._logger_will_write()
        if not (record or to_logger):
            return  # nothing is written this iteration: skip the per-metric bookkeeping (~8 ms on tiny nets)
        stats = {
            "loss_g": loss_g.detach(), "loss_d": loss_d.detach(),
            "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean(),
            "d_real_prob": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake_prob": torch.sigmoid(fake_logits.detach()).mean(),
        }
        if to_logger:
            self.log_dict({f"train/{k}": v for k, v in stats.items() if k not in ("loss_g", "loss_d")})
            self.log_dict({"train/loss_g": stats["loss_g"], "train/loss_d": stats["loss_d"]}, prog_bar=True)
            if r1 is not None:
                self.log("train/r1", r1.detach())
            self.log("gan/p", d.p)
            self.log("gan/T", float(d.T), prog_bar=True)
            if not math.isnan(d.last_r_d):
                self.log("gan/r_d", d.last_r_d)
        if record:
            self.history.append({"iteration": self.iteration, "p": d.p, "T": d.T, "r_d": d.last_r_d,
                                 **{k: float(v) for k, v in stats.items()}})

    def _logger_will_write(self) -> bool:
        """Whether Lightning writes this step's logged values (every ``trainer.log_every_n_steps`` batches).

        ``self.log`` costs about 1 ms per call, more than a whole iteration of the toy nets, and values
        logged on other steps are discarded anyway, so they are only computed when they will be written.
        """
        trainer = self._trainer
        if trainer is None:
            return False
        connector = getattr(trainer, "_logger_connector", None)
        return bool(connector.should_update_logs) if connector is not None else True

    def on_train_start(self) -> None:
        # Under DDP every rank would otherwise draw the same t list and slots (same seed, or the same
        # restored rank-0 state): fold the rank and the iteration in, deterministically.
        if self.trainer.world_size > 1:
            d = self.diffusion
            d.generator.manual_seed(d.seed * 1_000_003 + self.iteration * 1009 + self.trainer.global_rank)
            d.t_list = d._draw_t_list(d.T)

    def configure_optimizers(self):
        opt_g = build_optimizer(self.g_optimizer_factory, self.generator.parameters())
        opt_d = build_optimizer(self.d_optimizer_factory, self.discriminator.parameters())
        return [opt_g, opt_d]

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_images(self, num_samples: int, seed: int = 0, labels: torch.Tensor | None = None,
                      use_ema: bool = True, **unused: Any) -> torch.Tensor:
        """Generate ``num_samples`` outputs; sample ``i`` uses the latent seeded by ``seed + i``.

        Returns (N, C, H, W) in [-1, 1] for image generators or (N, D) points for toy ones. Labels
        default to ``i % num_classes`` when class-conditional. Extra keyword arguments (sampler,
        steps) are accepted for interface compatibility with diffusion modules and ignored.
        """
        net = self.ema.shadow(0) if use_ema else self.generator
        was_training = net.training
        net.eval()
        z = torch.stack([torch.randn(net.z_dim, generator=torch.Generator().manual_seed(seed + i))
                         for i in range(num_samples)]).to(self.device)
        y = None
        if self.num_classes:
            y = labels if labels is not None else torch.arange(num_samples) % self.num_classes
            y = y.to(self.device)
        out = torch.cat([net(z[i:i + 512], None if y is None else y[i:i + 512]) for i in range(0, num_samples, 512)])
        net.train(was_training)
        return out

    @torch.no_grad()
    def discriminator_field(self, points: torch.Tensor) -> torch.Tensor:
        """D's logits on clean points (t = 0): (M, D) -> (M,) (``beatgans.gan.discriminator_field``)."""
        return discriminator_field(self.discriminator, points)

    # ------------------------------------------------------------------ results
    def configure_callbacks(self) -> list:
        # scatter plots, the history file and mode coverage live in the callback, configured from task.*
        return [self.analysis]

    def final_metrics(self) -> dict[str, float]:
        """Numbers for ``metrics.json``: controller state and, for toy data, mode coverage (losses and D
        means are already in the trainer's callback metrics)."""
        d = self.diffusion
        out: dict[str, float] = {"gan/p": d.p, "gan/T": float(d.T), "gan/r_d": d.last_r_d,
                                 "gan/iterations": float(self.iteration)}
        out.update(self.analysis.final_metrics(self))
        return out

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict:
        """The controller, iteration counter and history travel with ``state_dict()``: ddp_spawn hands the
        trained module back to the launching process through its state dict, so ``metrics.json`` and
        post-fit sampling there see the trained controller, not a fresh one."""
        return {"adaptive_diffusion": self.diffusion.state_dict(), "gan_iteration": self.iteration,
                "gan_history": self.history}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the extra state existed: keep the current state (on_load_checkpoint,
        # which Lightning calls first, restored it from their top-level keys) instead of failing a strict load
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_extra_state(self, state: dict) -> None:
        self.diffusion.load_state_dict(state["adaptive_diffusion"])
        self.iteration = int(state["gan_iteration"])
        self.history = list(state["gan_history"])

    # The controller state is in the state dict (get_extra_state); the global RNG state travels with the
    # training loader's state (`beatgans.data.ResumableDataLoader`).
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "adaptive_diffusion" in checkpoint:  # checkpoints written before the state-dict extra state
            self.set_extra_state({k: checkpoint.get(k, d) for k, d in
                                  (("adaptive_diffusion", None), ("gan_iteration", 0), ("gan_history", []))})
