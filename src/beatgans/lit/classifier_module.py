"""`NoisyClassifierModule`: ADM's classifier trained on noised images x_t ~ q(x_t | x_0), t uniform."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from beatgans.diffusion import GaussianDiffusion
from beatgans.lit.diffusion_module import build_optimizer


def random_translate_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image random crop of a reflect-padded batch back to its size (a cheap augmentation for small
    images). x: (B, C, H, W)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,)).tolist()
    dx = torch.randint(0, 2 * pad + 1, (b,)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


class NoisyClassifierModule(L.LightningModule):
    """Cross-entropy on `net(q_sample(x0, t), t)` with t uniform over the diffusion's steps.

    Args:
        net: an `EncoderClassifier`, `net(x, t) -> logits (B, K)`.
        diffusion: the SAME process (schedule, T) as the diffusion model it will guide.
        optimizer: partial taking parameters (AdamW with weight decay in the configs).
        noised: False trains on clean images (t = 0 is still fed to the net).
        anneal_lr: decay the learning rate linearly to 0 over `trainer.max_steps`.
        random_crop_pad: pixels of reflect padding for the random-crop augmentation (0 = off).
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, optimizer: Callable, num_classes: int,
                 noised: bool = True, anneal_lr: bool = False, random_crop_pad: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "diffusion", "optimizer"])
        self.net = net
        self.diffusion = diffusion
        self.optimizer_factory = optimizer
        self.num_classes = num_classes

    def _noised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.diffusion.num_timesteps
        if not self.hparams.noised:
            return x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        t = torch.randint(0, T, (x.shape[0],), device=x.device)
        return self.diffusion.q_sample(x, t), t

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train":
            x = random_translate_crop(x, self.hparams.random_crop_pad)
        x_t, t = self._noised(x)
        logits = self.net(x_t, self.diffusion.original_timesteps(t))
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train")
        self._log_accuracy(logits, y, t, stage)
        return loss

    def _log_accuracy(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor, stage: str) -> None:
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        top1 = (topk[:, 0] == y).float()
        top5 = (topk == y[:, None]).any(dim=1).float()
        sync = stage != "train"
        self.log(f"{stage}/acc@1", top1.mean(), prog_bar=True, sync_dist=sync)
        self.log(f"{stage}/acc@5", top5.mean(), sync_dist=sync)
        T = self.diffusion.num_timesteps
        quartile = (t * 4 // T).clamp(max=3)
        for q in range(4):
            mask = quartile == q
            if mask.any():
                self.log(f"{stage}/acc@1_q{q}", top1[mask].mean(), sync_dist=sync)
                self.log(f"{stage}/loss_q{q}", F.cross_entropy(logits[mask], y[mask]), sync_dist=sync)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = build_optimizer(self.optimizer_factory, self.net.parameters())
        if self.hparams.anneal_lr and self.trainer and self.trainer.max_steps > 0:
            total = self.trainer.max_steps
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt
