"""`AutoencoderModule`: trains the first stage of latent diffusion (LDM's KL autoencoder recipe).

One iteration (manual optimisation, two optimizers):

1. Autoencoder step: ``rec = |x - x_rec|`` (or squared) ``+ perceptual_weight * LPIPS(x, x_rec)`` summed over
   pixels and averaged over the batch, plus ``kl_weight * KL`` (summed over latent dims, batch-averaged;
   LDM's weight is 1e-6). From ``disc_start`` on, the generator term ``-mean D(x_rec)`` is added with LDM's
   adaptive weight (`adaptive_gan_weight`: ratio of the gradient norms of the reconstruction and generator
   losses at the decoder's last layer, clamped to [0, 1e4], times ``disc_weight``) times ``disc_factor``.
2. Discriminator step (only from ``disc_start`` on): hinge loss on the real images and the step-1
   reconstructions, times ``disc_factor``. LDM recomputes the reconstruction with the updated autoencoder
   and runs zero-weighted D steps before ``disc_start``; here the step-1 reconstruction is reused (one
   forward pass less) and no D step runs before the start.

``global_step`` counts iterations: the discriminator update is not counted as a Lightning step, so
``trainer.max_steps``, ``disc_start`` and checkpoint intervals are all in iterations.

The latent scale factor (a buffer of the autoencoder, saved in its state dict) is ``1 / std`` of the mean
latents of the first ``scale_factor_batches`` training batches in dataset order, recomputed whenever a
checkpoint is written and at the end of training, unless the user fixes it (``scale_factor: 0.18215``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from beatgans.lit.callbacks import log_image
from beatgans.lit.diffusion_module import NonFiniteLossError, build_optimizer
from beatgans.nets.autoencoder import AutoencoderKL, compute_scale_factor
from beatgans.nets.patchgan import adaptive_gan_weight, hinge_d_loss
from beatgans.utils.images import save_grid_png, to_uint8
from beatgans.utils.logging import get_logger
from beatgans.utils.rng import rng_state, set_rng_state

log = get_logger(__name__)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (data loading for grids, the scale factor) without moving any global RNG stream."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class AutoencoderModule(L.LightningModule):
    """Trains an `AutoencoderKL` on images (B, C, H, W) in [-1, 1].

    Args:
        ae: the autoencoder.
        optimizer: partial taking the autoencoder's parameters (LDM: Adam, betas (0.5, 0.9)).
        discriminator: optional ``D(x) -> patch logits`` (e.g. `PatchDiscriminator`); None = no GAN term.
        d_optimizer: partial for the discriminator's parameters (required with a discriminator).
        rec_loss: "l1" (LDM) or "l2".
        kl_weight: weight of the batch-averaged summed KL (LDM: 1e-6).
        disc_start: first iteration with the GAN terms (LDM's KL presets: 50001).
        disc_weight, disc_factor: scale of the adaptive generator weight / of both GAN losses.
        perceptual: an `LPIPS` network or None (then the perceptual term is off); perceptual_weight scales it.
        scale_factor: fixed latent scale (e.g. 0.18215); None = computed from the training data.
        scale_factor_batches: training batches read to compute it.
        image_every_n_steps: iterations between reconstruction grids in ``<run>/samples`` (0 = only at the end).
        num_images: images in each grid (originals above their reconstructions).
        seed: posterior noise of iteration k on rank r comes from a generator seeded by (seed, k, r).
    """

    def __init__(self, ae: AutoencoderKL, optimizer: Callable, discriminator: nn.Module | None = None,
                 d_optimizer: Callable | None = None, rec_loss: str = "l1", kl_weight: float = 1e-6,
                 disc_start: int = 50001, disc_weight: float = 0.5, disc_factor: float = 1.0,
                 perceptual: nn.Module | None = None, perceptual_weight: float = 1.0,
                 scale_factor: float | None = None, scale_factor_batches: int = 4, image_every_n_steps: int = 500,
                 num_images: int = 8, seed: int = 0):
        super().__init__()
        if rec_loss not in ("l1", "l2"):
            raise ValueError(f"task.rec_loss must be 'l1' or 'l2', got {rec_loss!r}.")
        if discriminator is not None and d_optimizer is None:
            raise ValueError("a discriminator needs task.d_optimizer (e.g. Adam with betas [0.5, 0.9]).")
        self.save_hyperparameters(ignore=["ae", "optimizer", "discriminator", "d_optimizer", "perceptual"])
        self.automatic_optimization = False
        self.ae = ae
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.optimizer_factory = optimizer
        self.d_optimizer_factory = d_optimizer
        if scale_factor is not None:
            ae.scale_factor.fill_(float(scale_factor))
        self._grid_images: torch.Tensor | None = None

    # ------------------------------------------------------------------ losses
    def reconstruction_loss(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """Per-sample pixel (+ perceptual) loss summed over pixels, averaged over the batch: a scalar."""
        err = (x - rec).abs() if self.hparams.rec_loss == "l1" else (x - rec).pow(2)
        per_sample = err.flatten(1).sum(1)
        if self.perceptual is not None and self.hparams.perceptual_weight > 0:
            # LDM adds the (B, 1, 1, 1) LPIPS distance to every pixel's error before summing
            per_sample = per_sample + self.hparams.perceptual_weight * self.perceptual(x, rec) * x[0].numel()
        return per_sample.mean()

    def disc_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.hparams.disc_start

    def _check(self, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{name} became {loss.item()} at step {self.global_step}; stopping without "
                                     "writing a checkpoint. Lower the learning rate or the disc_weight.")

    def setup(self, stage: str) -> None:
        size = getattr(getattr(self.trainer, "datamodule", None), "image_size", None)
        if size and size != self.ae.resolution:
            raise ValueError(f"net.resolution={self.ae.resolution} but the data is {size}px; set them equal.")

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        opts = self.optimizers()
        opt_ae, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        base = ((self.hparams.seed * 1_000_003 + self.global_step) * 4099 + self.global_rank)
        gen = torch.Generator(device=x.device).manual_seed(base)
        disc_on = self.disc_active()

        self.toggle_optimizer(opt_ae)
        rec, posterior = self.ae(x, sample_posterior=True, generator=gen)
        rec_loss = self.reconstruction_loss(x, rec)
        kl = posterior.kl().mean()
        loss = rec_loss + self.hparams.kl_weight * kl
        stats = {"rec_loss": rec_loss.detach(), "kl": kl.detach(),
                 "l1": (x - rec).abs().mean().detach()}
        if disc_on:
            g_loss = -self.discriminator(rec).mean()
            d_weight = adaptive_gan_weight(rec_loss, g_loss, self.ae.last_layer, self.hparams.disc_weight)
            loss = loss + d_weight * self.hparams.disc_factor * g_loss
            stats.update(g_loss=g_loss.detach(), d_weight=d_weight)
        self._check("autoencoder loss", loss)
        opt_ae.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_ae.step()
        self.untoggle_optimizer(opt_ae)
        stats["loss"] = loss.detach()

        if disc_on:
            self.toggle_optimizer(opt_d)
            logits_real = self.discriminator(x.detach())
            logits_fake = self.discriminator(rec.detach())
            d_loss = self.hparams.disc_factor * hinge_d_loss(logits_real, logits_fake)
            self._check("discriminator loss", d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            # Stepped through the strategy (precision plugin included) rather than LightningOptimizer.step,
            # which would count a second Lightning step per iteration.
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
            self.untoggle_optimizer(opt_d)
            stats.update(d_loss=d_loss.detach(), logits_real=logits_real.detach().mean(),
                         logits_fake=logits_fake.detach().mean())
        loss_value = stats.pop("loss")
        self.log_dict({f"train/{k}": v for k, v in stats.items()})
        self.log("train/loss", loss_value, prog_bar=True)

    def configure_optimizers(self):
        opts = [build_optimizer(self.optimizer_factory, self.ae.parameters())]
        if self.discriminator is not None:
            opts.append(build_optimizer(self.d_optimizer_factory, self.discriminator.parameters()))
        return opts

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every = self.hparams.image_every_n_steps
        if every and self.global_step % every == 0:
            self.save_reconstruction_grid(f"recon_step{self.global_step:07d}")

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        rec, posterior = self.ae(x, sample_posterior=False)
        self.log("val/rec_loss", self.reconstruction_loss(x, rec), prog_bar=True, sync_dist=True)
        self.log("val/l1", (x - rec).abs().mean(), sync_dist=True)
        self.log("val/mse", (x - rec).pow(2).mean(), sync_dist=True)
        self.log("val/kl", posterior.kl().mean(), sync_dist=True)

    # ------------------------------------------------------------------ scale factor and grids
    def _ordered_train_loader(self) -> DataLoader | None:
        trainer = self._trainer
        source = getattr(trainer, "datamodule", None) if trainer is not None else None
        loader = source.train_dataloader() if source is not None else getattr(trainer, "train_dataloader", None)
        if loader is None:
            return None
        return DataLoader(loader.dataset, batch_size=loader.batch_size or 16, shuffle=False)

    def refresh_scale_factor(self) -> float:
        """Recompute ``ae.scale_factor`` from the training data unless the user fixed it; returns its value."""
        if self.hparams.scale_factor is None and self.hparams.scale_factor_batches > 0:
            with preserved_rng():
                loader = self._ordered_train_loader()
                if loader is not None:
                    value = compute_scale_factor(self.ae, loader, self.hparams.scale_factor_batches)
                    self.ae.scale_factor.fill_(value)
        return float(self.ae.scale_factor)

    @torch.no_grad()
    def save_reconstruction_grid(self, name: str) -> Path | None:
        """``<run>/samples/<name>.png``: ``num_images`` fixed images (validation split, else training data in
        order) above their reconstructions through the posterior mean; also sent to wandb."""
        trainer = self._trainer
        if trainer is None or not self.hparams.num_images:
            return None
        with preserved_rng():
            if self._grid_images is None:
                dm = getattr(trainer, "datamodule", None)
                val = dm.val_dataloader() if dm is not None else []
                loader = val if isinstance(val, DataLoader) else self._ordered_train_loader()
                if loader is None:
                    return None
                self._grid_images = torch.cat([b[0] if isinstance(b, (tuple, list)) else b for _, b in
                                               zip(range(self.hparams.num_images), loader)])[: self.hparams.num_images]
            x = self._grid_images.to(self.device)
            was_training = self.ae.training
            self.ae.eval()
            rec = self.ae(x, sample_posterior=False)[0].clamp(-1, 1)
            self.ae.train(was_training)
        if trainer.global_rank != 0:
            return None
        path = Path(trainer.default_root_dir) / "samples" / f"{name}.png"
        save_grid_png(path, to_uint8(torch.cat([x, rec])).cpu().numpy(), nrow=len(x), scale=4)
        log_image(trainer, "samples/reconstructions", path, trainer.global_step)
        return path

    def on_train_end(self) -> None:
        value = self.refresh_scale_factor()
        log.info("Latent scale factor: %.6g (%s)", value,
                 "fixed by the user" if self.hparams.scale_factor is not None else "1 / std of the latents")
        path = self.save_reconstruction_grid("final_recon")
        if path is not None:
            log.info("Reconstruction grid: %s", path)

    def final_metrics(self) -> dict[str, float]:
        """Numbers for ``metrics.json`` beyond the logged ones: the latent scale factor and the shape of z."""
        f = self.ae.downsample_factor
        return {"scale_factor": float(self.ae.scale_factor), "downsample_factor": float(f),
                "latent_channels": float(self.ae.latent_channels)}

    # ------------------------------------------------------------------ checkpoints
    # The global RNG state travels with the training loader's state (`beatgans.data.ResumableDataLoader`).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the state dict was taken before this hook: refresh the scale factor and write it there too
        checkpoint["state_dict"]["ae.scale_factor"] = self.ae.scale_factor.new_tensor(self.refresh_scale_factor())


def load_autoencoder(run: str | Path, latent_channels: int | None = None,
                     latent_size: int | None = None) -> AutoencoderKL:
    """The trained autoencoder of a run: ``run`` is a run directory or a checkpoint inside ``<run>/checkpoints``.

    Builds the net from ``<run>/.hydra/config.yaml`` (``net`` node), loads the ``ae.*`` weights strictly
    (scale factor included) and returns it frozen, in eval mode, on the CPU. It is a latent-diffusion first
    stage (`beatgans.nets.first_stage`): ``encode_latent`` (B, C, H, W) -> (B, c, H/f, W/f), scaled.

    Args:
        latent_channels, latent_size: the latent shape the caller expects (``conf/first_stage/autoencoder.yaml``
            sizes the UNet from them); a run whose latents differ is refused with the values to set.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(run)
    ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    config = ckpt.parent.parent / ".hydra" / "config.yaml"
    if not ckpt.is_file() or not config.is_file():
        raise FileNotFoundError(f"{path}: expected an autoencoder run directory with checkpoints/last.ckpt and "
                                ".hydra/config.yaml (train one with `beatgans-train experiment=digits/autoencoder`).")
    cfg = OmegaConf.load(config)
    if "AutoencoderKL" not in str(cfg.net.get("_target_", "")):
        raise ValueError(f"{path} is not an autoencoder run (its net is {cfg.net.get('_target_')}).")
    ae = instantiate(cfg.net)
    got = (ae.latent_channels, ae.resolution // ae.downsample_factor)
    want = (got[0] if latent_channels is None else latent_channels, got[1] if latent_size is None else latent_size)
    if got != tuple(int(v) for v in want):
        raise ValueError(f"the autoencoder run {path} makes latents of {got[0]} channels at {got[1]}px, not "
                         f"{want[0]} at {want[1]}px; set first_stage.latent_channels={got[0]} "
                         f"first_stage.latent_size={got[1]}.")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ae.load_state_dict({k[len("ae."):]: v for k, v in state.items() if k.startswith("ae.")})
    return ae.eval().requires_grad_(False)


__all__ = ["AutoencoderModule", "load_autoencoder", "preserved_rng"]
