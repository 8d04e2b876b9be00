"""Where does D pull the generator's samples? Forces on the fakes of a finished toy run, per noise step.

For a run written by ``beatgans-train experiment=toy/...`` (its ``checkpoints/last.ckpt``), draws the raw
generator's samples, keeps the off-mode ones (farther than 3 std from every centre: the mass the
generator would have to move to cover more modes) and measures ``beatgans.gan.generator_forces``
on them, the pull ``-d/dx softplus(-D(q(x, t), t))`` of the non-saturating generator loss:

- at fixed steps t (0 = D's clean view), and
- under the run's own training mixture of steps (``AdaptiveDiffusion.sample_t`` at its final T with
  the arm's clean slots and t distribution), i.e. the expected pull during training.

Each force is split into its radial part toward the grid's centre (positive = inward, towards the
inner modes) and the rest. Writes ``<run>/analysis/forces_<arm>_seed<s>.json`` and a quiver plot.

``gap_pull`` asks the narrower question of a run that misses whole rows or columns: how hard the
training mixture pulls toward the missing modes the few samples in their cells and the mass on the
covered neighbouring modes (``<run>/analysis/gap_<arm>_seed<s>.json``).

    python experiments/diffusion_gan_toy/forces.py <run dir> [--out DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from checkpoint import analysis_cli, load_module, run_name  # this folder is on sys.path as a script and in the tests

from beatgans.gan import AdaptiveDiffusion, generator_forces, mode_counts

HERE = Path(__file__).resolve().parent
STEPS = (0, 10, 50, 100, 200, 300, 500, 700, 1000)


def _inward_dir(points: torch.Tensor) -> torch.Tensor:
    """Unit vectors from each point toward the origin (the grid's centre): (N, 2)."""
    return -points / points.norm(dim=1, keepdim=True).clamp_min(1e-8)


def summarize(points: torch.Tensor, forces: torch.Tensor) -> dict[str, float]:
    """Mean |force|, mean inward (toward the origin) component and mean |rest| over the points."""
    inward_dir = _inward_dir(points)
    inward = (forces * inward_dir).sum(1)
    rest = (forces - inward[:, None] * inward_dir).norm(dim=1)
    return {"norm": float(forces.norm(dim=1).mean()), "inward": float(inward.mean()),
            "inward_share_positive": float((inward > 0).float().mean()), "other": float(rest.mean())}


def _restore(run: Path, samples: int) -> tuple:
    """A finished run's raw generator samples and discriminator, with its training mixture rebuilt.

    Loads ``run``'s last checkpoint; its controller's noising settings (sigma, clean slots, t
    distribution) rebuild the diffusion at the run's final T, and ``samples`` fakes are drawn from
    latents seeded 0. Returns ``(fakes (samples, 2), D, diffusion, info, modes (M, 2), rng)`` with
    ``info = {"T", "data_std", "spacing"}``; ``rng`` continues after the latents."""
    module = load_module(run)
    trained = module.diffusion
    T = int(trained.T)
    noising = {"sigma": trained.sigma, "noise_enabled": trained.noise_enabled, "num_clean": trained.num_clean,
               "t_dist": trained.t_dist if T >= 2 else "uniform"}  # priority weights t - 1 vanish at T = 1
    diffusion = AdaptiveDiffusion(t_min=T, t_max=T, seed=0, **noising)
    modes = module.eval_modes
    info = {"T": T, "data_std": float(module.hparams.eval_std), "spacing": float(torch.pdist(modes).min())}
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fakes = module.generator(torch.randn(samples, module.generator.z_dim, generator=rng))
    return fakes, module.discriminator, diffusion, info, modes, rng


def mixture_pull(points: torch.Tensor, discriminator, diffusion: AdaptiveDiffusion, draws: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The expected pull of the training mixture on each of ``points`` (N, 2): ``generator_forces``
    averaged over ``draws`` fresh per-sample draws of ``diffusion.sample_t``. Returns (N, 2)."""
    mix = torch.zeros_like(points)
    for _ in range(draws):
        mix += generator_forces(points, discriminator, diffusion, diffusion.sample_t(len(points)), 1, generator)
    return mix / draws


def analyse(run: Path, samples: int = 2500, draws: int = 16, mixture_draws: int = 64) -> dict:
    """Forces on the off-mode fakes of ``run``: the run's own noising settings rebuild its diffusion at
    its final T, so the training mixture is the one it trained with."""
    fakes, D, diffusion, metrics, modes, rng = _restore(run, samples)
    T, noisy = int(metrics["T"]), diffusion.noise_enabled
    off = torch.cdist(fakes, modes).min(1).values > 3 * metrics["data_std"]
    pts = fakes[off]
    out = {"run": run.name, "T": T, "noised_in_training": noisy, "num_clean": diffusion.num_clean,
           "t_dist": diffusion.t_dist, "samples": samples, "off_mode": int(off.sum()), "per_step": {}}
    for t in (s for s in STEPS if s <= T and (noisy or s == 0)):
        forces = generator_forces(pts, D, diffusion, t, draws, rng)
        out["per_step"][str(t)] = summarize(pts, forces)
        if t == 0:
            out["_clean"] = forces
    mix = mixture_pull(pts, D, diffusion, mixture_draws, rng)
    out["training_mixture"] = summarize(pts, mix)
    out["_pts"], out["_mix"], out["_modes"] = pts, mix, modes
    return out


def plot(path: Path, res: dict) -> None:
    """Quiver plots of the force directions at t = 0 and under the training mixture (from ``analyse``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6))
    FigureCanvasAgg(fig)
    pts = res["_pts"][:600]
    views = (("_clean", "clean view (t = 0)"), ("_mix", f"training mixture (T = {res['T']})"))
    for i, (key, title) in enumerate(views):
        ax = fig.add_subplot(1, 2, i + 1)
        f = res[key][:600]
        inward = (f * _inward_dir(pts)).sum(1)
        unit = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        ax.quiver(pts[:, 0], pts[:, 1], unit[:, 0], unit[:, 1], inward.sign(), cmap="coolwarm_r",
                      clim=(-1, 1), scale=40, width=0.003)
        ax.scatter(res["_modes"][:, 0], res["_modes"][:, 1], marker="x", c="k", s=20)
        ax.set_aspect("equal")
        s = res["per_step"]["0"] if key == "_clean" else res["training_mixture"]
        ax.set_title(f"{title}\nmean |f| {s['norm']:.2f}, mean inward {s['inward']:+.2f}", fontsize=9)
    fig.suptitle(f"{res['run']}: direction of the generator-loss pull on off-mode fakes (blue = inward)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def gap_pull(points: torch.Tensor, discriminator, diffusion: AdaptiveDiffusion, modes: torch.Tensor, std: float,
             spacing: float, mixture_draws: int = 64, generator: torch.Generator | None = None) -> dict:
    """How hard the training mixture pulls the generator's mass toward the modes it misses.

    A mode is missing when fewer than 0.8 % of ``points`` (20 of 2,500, the coverage threshold) lie
    within 3 ``std`` of it. Two groups of samples get the expected force of the training mixture
    (``diffusion.sample_t``, ``mixture_draws`` draws), projected on the unit vector toward their
    nearest missing centre (positive = toward the gap):

    - ``gap``: samples whose nearest centre is a missing mode (the trail through the gap);
    - ``neighbours``: samples within 3 std of a covered mode that is a grid neighbour (one
      ``spacing`` away along x or y) of a missing mode, i.e. the mass that would have to move over.

    Also D's clean verdict ``sigmoid D(centre, t=0)`` on the missing and the covered centres.

    Args:
        points: (N, 2) generator samples. modes: (25, 2) centres. discriminator: ``D(x, t, None)``.
    Returns:
        ``{"missing": [ids], "gap": {...}, "neighbours": {...}, "d_clean_missing", "d_clean_covered"}``
        where each group holds ``share`` (of all samples), ``n``, ``norm`` (mean |f|), ``toward``
        (mean projection) and ``share_toward`` (fraction with a positive projection).
    """
    near_d, near = torch.cdist(points, modes).min(1)
    missing = mode_counts(points, modes, std) < 0.008 * len(points)
    if not missing.any():
        return {"missing": []}
    miss_c = modes[missing]
    grid_d = torch.cdist(modes, miss_c)
    neighbour_mode = (~missing) & ((grid_d - spacing).abs() < 1e-3 * spacing).any(1)
    groups = {"gap": missing[near],
              "neighbours": neighbour_mode[near] & (near_d <= 3 * std)}
    out: dict = {"missing": missing.nonzero().flatten().tolist()}
    for name, mask in groups.items():
        pts = points[mask]
        if len(pts) == 0:
            out[name] = {"share": 0.0, "n": 0}
            continue
        to_gap = miss_c[torch.cdist(pts, miss_c).argmin(1)] - pts
        unit = to_gap / to_gap.norm(dim=1, keepdim=True).clamp_min(1e-12)
        mix = mixture_pull(pts, discriminator, diffusion, mixture_draws, generator)
        toward = (mix * unit).sum(1)
        out[name] = {"share": mask.float().mean().item(), "n": len(pts), "norm": mix.norm(dim=1).mean().item(),
                     "toward": toward.mean().item(), "share_toward": (toward > 0).float().mean().item()}
    with torch.no_grad():
        v = torch.sigmoid(discriminator(modes, torch.zeros(len(modes), dtype=torch.long), None))
    out["d_clean_missing"] = v[missing].mean().item()
    out["d_clean_covered"] = v[~missing].mean().item()
    return out


def gap(run: Path, samples: int = 20_000) -> dict:
    """``gap_pull`` on ``samples`` draws of ``run``'s raw generator, with the arm's training mixture at
    its final T (as in ``analyse``)."""
    fakes, D, diffusion, metrics, modes, rng = _restore(run, samples)
    return {"run": run.name, "samples": samples,
            **gap_pull(fakes, D, diffusion, modes, metrics["data_std"], metrics["spacing"], generator=rng)}


def main() -> None:
    run, dest = analysis_cli(__doc__)
    name = run_name(run)
    res = analyse(run)
    plot(dest / f"forces_{name}.png", res)
    res = {k: v for k, v in res.items() if not k.startswith("_")}
    (dest / f"forces_{name}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    g = gap(run)
    (dest / f"gap_{name}.json").write_text(json.dumps(g, indent=1))
    print(json.dumps(g, indent=1))


if __name__ == "__main__":
    main()
