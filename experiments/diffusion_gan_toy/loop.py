"""Plain-torch training loop for the 25-Gaussians toy (no Lightning per-step overhead).

Uses the library's own pieces: ``AdaptiveDiffusion`` (noising + T controller), ``ToyGenerator`` /
``ToyDiscriminator``, and ``DiffusionGANModule.run_discriminator`` / its EMA / ``sample_images`` /
``mode_coverage`` (the module is built but never handed to a Lightning trainer). The per-iteration
phases and losses are the ones of ``DiffusionGANModule.training_step``: a G step with the
non-saturating loss through the (differentiable) noising, then the module's ``discriminator_loss``
on noised fakes and reals (``sign(D(real))`` fed to the controller; lazy R1 only when ``r1_gamma``
> 0, 0 in every recorded arm), ``diffusion.step(batch)`` once per iteration. The only difference
between arms are the ``AdaptiveDiffusion`` settings (listed below).

Each training batch is drawn fresh from the mixture (infinite data), seeded by the run seed, unless
``dataset_size`` > 0 (a fixed set in reshuffled epochs). The ``AdaptiveDiffusion`` options of the
arms (``sigma``, ``target``, ``p``, ``ada_kimg``, ``num_clean``, ``t_dist``, ``t_max``) pass through.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid
from beatgans.gan import AdaptiveDiffusion, mode_coverage
from beatgans.gan.plots import scatter_png
from beatgans.lit.diffusion_gan import DiffusionGANModule
from beatgans.nets.toy import ToyDiscriminator, ToyGenerator

log = logging.getLogger(__name__)


def toy_nets(z_dim: int, hidden: int = 128) -> tuple[ToyGenerator, ToyDiscriminator]:
    """The untrained pair: G ``z (B, z_dim) -> (B, 2)``, D ``(x (B, 2), t (B,)) -> (B,)``, both with
    two hidden layers ``hidden`` wide (128: the paper's toy nets)."""
    return ToyGenerator(z_dim=z_dim, hidden=hidden), ToyDiscriminator(hidden=hidden)


def saved_shape(nets: dict) -> tuple[int, int]:
    """``(z_dim, hidden)`` of a loaded ``nets.pt``; runs saved before the width option have width 128."""
    return nets["z_dim"], nets.get("hidden", 128)


def train_toy(out_dir: Path, seed: int, noise_enabled: bool, sigma: float, iterations: int,
              batch: int = 512, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.9), z_dim: int = 2,
              data_std: float = 0.05, target: float = 0.6, log_every: int = 250, spacing: float = 2.0,
              r1_gamma: float = 0.0, r1_interval: int = 16, dataset_size: int = 0, p: float = 0.0,
              ada_kimg: float = 100.0, num_clean: int = 32, t_dist: str = "priority", t_max: int = 1000,
              init_from: Path | None = None, grid: int = 5, g_out_gain: float = 1.0,
              lr_d: float | None = None, hidden: int = 128) -> dict:
    """Train one arm; write metrics.json, gan_history.json and scatter PNGs into ``out_dir``.

    ``spacing`` is the grid spacing (2 -> centres {-4..4}^2); ``data_std`` the per-mode std. Scaling
    both by the same factor is the same task up to units (the coverage radius, 3 std, scales along).
    ``r1_gamma`` > 0 adds the module's lazy R1 (every ``r1_interval`` iterations, on the clean reals
    taken through the noising, scaled by the interval). ``dataset_size`` > 0 trains on that many
    fixed points (``dataset_size / grid**2`` per mode, drawn once from the data seed) in reshuffled
    epochs instead of a fresh sample per batch, so D can overfit and the controller has a reason
    to raise T. ``p`` is the controller's starting strength (0: T starts at t_min; 1: at t_max) and
    ``ada_kimg`` its speed (thousands of images for p to move by 1; a huge value freezes T);
    ``num_clean`` the clean (t = 0) slots of the 64 (32 in the reference code, 0 in the paper's formulas);
    ``t_dist`` and ``t_max`` the step distribution and T's ceiling (the reference: priority / 1000, uniform / 500).
    ``init_from`` continues from a finished run's ``nets.pt`` (G, D and the EMA G; the Adam states
    are not saved there, so both optimizers start fresh, and the data and latent streams restart
    from the seed): the intervention experiments that change one setting of a trained pair.
    ``grid`` is the number of modes per axis (5: the 25 Gaussians; an even grid has no row or column
    through the centre); the metrics then count ``grid**2`` modes on ``100 * grid**2`` samples.
    ``g_out_gain`` multiplies G's initial output weights (not its bias): the default init puts G's
    first samples in a blob of std ~0.08 per axis at the centre, a gain of 12 spreads them to about
    the 25 Gaussians' own spread (std 1.0 per axis in the ct units) before the first step.
    ``lr_d`` is D's Adam lr when it differs from G's ``lr`` (two time-scale updates; None: ``lr``).
    ``hidden`` is the width of both nets' two hidden layers (128: the paper's toy nets).
    """
    lr_d = lr if lr_d is None else lr_d
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    diffusion = AdaptiveDiffusion(sigma=sigma, target=target, noise_enabled=noise_enabled, seed=seed, p=p,
                                  ada_kimg=ada_kimg, num_clean=num_clean, t_dist=t_dist, t_max=t_max)
    opt = partial(torch.optim.Adam, lr=lr, betas=betas)
    module = DiffusionGANModule(*toy_nets(z_dim, hidden), diffusion, opt, opt,
                                r1_gamma=r1_gamma, r1_interval=r1_interval, ema_rate=0.999, eval_modes=gaussian_grid_modes(spacing, grid),
                                eval_std=data_std, save_artifacts=False)
    G, D = module.generator, module.discriminator
    if g_out_gain != 1.0:
        with torch.no_grad():  # no RNG drawn: the run's random streams are those of gain 1
            G.out.weight.mul_(g_out_gain)
    if init_from is not None:
        nets = torch.load(Path(init_from) / "nets.pt", map_location="cpu")
        saved_z, saved_width = saved_shape(nets)
        if (saved_z, saved_width) != (z_dim, hidden):
            raise ValueError(f"{init_from} was trained with z_dim {saved_z} and width {saved_width}, "
                             f"this run has {z_dim} and {hidden}")
        G.load_state_dict(nets["generator"])
        D.load_state_dict(nets["discriminator"])
        module.ema.shadow(0).load_state_dict(nets["ema_generator"])
    opt_g, opt_d = opt(G.parameters()), opt(D.parameters(), lr=lr_d)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = None  # or (dataset_size, 2): size / grid**2 points per mode
    if dataset_size:
        fixed = sample_gaussian_grid(dataset_size, std=data_std, spacing=spacing, grid=grid, generator=data_gen,
                                     balanced=True)[0]
    order, cursor = None, 0
    history, progress, start = [], [], time.time()
    sums = torch.zeros(4)  # running sums of sigmoid D(real), sigmoid D(fake), loss_g, loss_d
    n_sum = 0
    for it in range(1, iterations + 1):
        # G step (D's parameters receive grads but are not stepped; zeroed before the D step)
        z = torch.randn(batch, z_dim)
        loss_g = F.softplus(-module.run_discriminator(G(z), None)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        module.ema.update(G)
        # D step
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim))
        if fixed is None:
            real, _ = sample_gaussian_grid(batch, std=data_std, spacing=spacing, grid=grid, generator=data_gen)
        else:  # epochs over the fixed set, reshuffled each epoch (last partial batch dropped)
            if order is None or cursor + batch > len(fixed):
                order, cursor = torch.randperm(len(fixed), generator=data_gen), 0
            real, cursor = fixed[order[cursor:cursor + batch]], cursor + batch
        module.iteration = it - 1  # the module's counter decides the lazy-R1 iterations
        loss_d, fake_logits, real_logits, _ = module.discriminator_loss(fake, None, real, None)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        diffusion.step(batch)
        with torch.no_grad():
            sums += torch.stack([torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean(),
                                 loss_g.detach(), loss_d.detach()])
        n_sum += 1
        if it % log_every == 0:
            m = (sums / n_sum).tolist()
            history.append({"iteration": it, "p": diffusion.p, "T": diffusion.T, "r_d": diffusion.last_r_d,
                            "d_real_prob": m[0], "d_fake_prob": m[1], "loss_g": m[2], "loss_d": m[3]})
            sums.zero_()
            n_sum = 0
        scatter_now = it in (iterations // 4, iterations // 2)
        progress_now = it % (iterations // 8 or 1) == 0 and it < iterations  # every eighth
        if scatter_now or progress_now:
            samples = eval_samples(module)  # its own latent seeds: the training RNG is untouched
            if scatter_now:
                _scatter(module, samples, out_dir / f"scatter_it{it:06d}.png", f"it {it} T={diffusion.T}")
            if progress_now:
                progress.append({"iteration": it, "T": diffusion.T, **_coverage(module, samples, data_std)})
                pt = progress[-1]
                log.info("%s: it %d/%d (%.0f s), T %d, modes %d/%d (EMA %d), HQ %.3f", out_dir.name, it,
                         iterations, time.time() - start, diffusion.T, pt["modes_covered"], grid * grid,
                         pt["ema_modes_covered"], pt["hq_share"])
    seconds = time.time() - start
    metrics = {"iterations": iterations, "lr": lr, "lr_d": lr_d, "p0": p, "ada_kimg": ada_kimg, "num_clean": num_clean, "t_dist": t_dist, "t_max": t_max, "betas": list(betas), "batch": batch, "z_dim": z_dim,
               "dataset_size": dataset_size, "r1_gamma": r1_gamma, "r1_interval": r1_interval, "spacing": spacing, "grid": grid, "g_out_gain": g_out_gain, "hidden": hidden, "data_std": data_std, "train_seconds": round(seconds, 1), "T": diffusion.T, "p": diffusion.p,
               "max_T": max([h["T"] for h in history] or [diffusion.T]), "r_d": diffusion.last_r_d,
               "sigma": sigma, "init_from": None if init_from is None else str(init_from)}
    samples = eval_samples(module)
    metrics.update(_coverage(module, samples, data_std))
    metrics["progress"] = progress  # the same coverage at every eighth of the run
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "gan_history.json").write_text(json.dumps(history, indent=0))
    _scatter(module, samples, out_dir / "scatter_final.png", f"it {iterations} T={diffusion.T}")
    torch.save({"generator": G.state_dict(), "discriminator": D.state_dict(),
                "ema_generator": module.ema.shadow(0).state_dict(), "z_dim": z_dim, "hidden": hidden}, out_dir / "nets.pt")
    return metrics


def eval_samples(module: DiffusionGANModule) -> dict[str, torch.Tensor]:
    """The evaluation samples of every toy metric and plot: ``{"G": (n, 2), "EMA G": (n, 2)}`` with
    ``n = 100`` per mode of ``module.eval_modes`` (2,500 for the 25 Gaussians), from the raw and EMA
    generators on fixed latents (seed 12345), so a covered mode's threshold (``MIN_COUNT`` = 20) is
    the same fifth of a uniform share on every grid."""
    n = 100 * len(module.eval_modes)
    return {"G": module.sample_images(n, seed=12345, use_ema=False),
            "EMA G": module.sample_images(n, seed=12345, use_ema=True)}


def _coverage(module: DiffusionGANModule, samples: dict[str, torch.Tensor], data_std: float) -> dict:
    """Modes covered / HQ share of the raw G and (``ema_``-prefixed) the EMA G from ``eval_samples``."""
    out = {}
    for tag, name in (("", "G"), ("ema_", "EMA G")):
        cov = mode_coverage(samples[name], module.eval_modes, data_std)  # covered at >= MIN_COUNT samples
        out.update({f"{tag}{k}": v for k, v in cov.items()})
    return out


def _scatter(module: DiffusionGANModule, samples: dict[str, torch.Tensor], path: Path, title: str) -> None:
    scatter_png(path, samples, module.eval_modes, title=title,
                field=module.discriminator_field, field_label="sigmoid D(x, t=0)")
