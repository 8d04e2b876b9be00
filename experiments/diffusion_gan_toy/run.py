"""25 Gaussians: plain GAN vs Diffusion-GAN with identical nets, losses, budget and seeds.

Trains every arm with the plain-torch loop in ``loop.py`` (the library's AdaptiveDiffusion, toy
nets and DiffusionGANModule pieces; ~13 ms per iteration on one CPU core, ~15 ms through the
Lightning trainer), then tabulates modes covered / high-quality share per seed, plots D's mean
outputs on real and fake over training and collects the final scatter plots.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_toy/run.py --seeds 0 1 2
    (--models to launch a subset, e.g. one process per arm; --aggregate-only to rebuild the table)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

# arm -> AdaptiveDiffusion switches; everything else is identical across arms
_REFERENCE = {"noise_enabled": True, "sigma": 0.05}  # the reference code's defaults otherwise
_FROZEN_AT_MAX = {"p": 1.0, "ada_kimg": float("inf")}  # T = t_max from iteration 0, the controller never moves it
# the lead arm of the ct protocol (diffusion_gan_uniformT500_noclean below), also the base of its variants
_LEAD = {**_REFERENCE, **_FROZEN_AT_MAX, "num_clean": 0, "t_dist": "uniform", "t_max": 500}
ARMS = {
    "gan": {"noise_enabled": False, "sigma": 0.05},
    "diffusion_gan": dict(_REFERENCE),                                  # reference default sigma
    "diffusion_gan_sigma0.2": {"noise_enabled": True, "sigma": 0.2},   # sigma scaled to the data range (x4)
    # ablation, not the reference setting: target r_d 0.2 instead of 0.6, so T rises to its maximum
    "diffusion_gan_target0.2": {**_REFERENCE, "target": 0.2},
    # ablation: T fixed at its maximum (1000) from iteration 0, so the noise is there before the
    # generator settles, which the adaptive arms never allow
    "diffusion_gan_fixedT1000": {**_REFERENCE, **_FROZEN_AT_MAX},
    # ablation: the same without clean slots (every D input noised, t ~ priority over 1..1000, as in
    # the paper's formulas), which removes the clean view whose pull runs along the border (forces.py)
    "diffusion_gan_fixedT1000_noclean": {**_REFERENCE, **_FROZEN_AT_MAX, "num_clean": 0},
    # the paper's formulas: the reference defaults (adaptive T, priority t) with no clean slots
    "diffusion_gan_noclean": {**_REFERENCE, "num_clean": 0},
    # the reference code's other setting: uniform t over 1..T with t_max 500 (adaptive, 32 clean slots)
    "diffusion_gan_uniform": {**_REFERENCE, "t_dist": "uniform", "t_max": 500},
    # ablation: no clean slots with the reference's uniform variant (t uniform over 1..500, T fixed at
    # 500), so D's low-t views, which resolve single modes, are drawn as often as the merged ones
    "diffusion_gan_uniformT500_noclean": _LEAD,
    # the three single-change ablations of diffusion_gan_uniformT500_noclean (each puts one change back):
    # the reference's 32 clean slots back
    "diffusion_gan_uniformT500": {**_REFERENCE, **_FROZEN_AT_MAX, "t_dist": "uniform", "t_max": 500},
    # the adaptive controller back (p starts at 0, T climbs from t_min = 10 as D overfits)
    "diffusion_gan_uniform_noclean": {**_REFERENCE, "num_clean": 0, "t_dist": "uniform", "t_max": 500},
    # the reference's priority t back (weights proportional to t - 1 over 1..500)
    "diffusion_gan_priorityT500_noclean": {**_REFERENCE, **_FROZEN_AT_MAX, "num_clean": 0, "t_max": 500},
    # diffusion_gan_uniformT500_noclean with sigma 0.2: neighbouring modes (spacing 0.707 in the ct
    # data) merge in D's view from t ~ 264 of 500 instead of ~441, where sqrt(abar) still passes back
    # ~0.5 of the gradient instead of ~0.14 (README, "Noise scale against the seam")
    "diffusion_gan_uniformT500_noclean_sigma0.2": {**_LEAD, "sigma": 0.2},
    # the same with sigma 0.5: neighbouring modes merge from t ~ 141 of 500 (72 % of the draws, factor
    # sqrt(abar) ~0.82 there), leaving 28 % of the views that resolve single modes (README, "Wider noise")
    "diffusion_gan_uniformT500_noclean_sigma0.5": {**_LEAD, "sigma": 0.5},
}
RUNS = HERE / "runs"
RESULTS = HERE / "results"


def run_dir(arm: str, seed: int, tag: str = "loop") -> Path:
    return RUNS / f"{tag}_{arm}_seed{seed}"


def analysis_cli(doc: str) -> tuple[argparse.Namespace, Path, Path]:
    """The command line of the per-run analyses (forces.py, modes.py): ``--tag --arm --seed`` pick a
    finished run. Returns the arguments, the run's directory (checked to hold nets.pt) and
    ``results/<tag>/`` (created)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--tag", default="ct")
    ap.add_argument("--arm", default="diffusion_gan")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = run_dir(args.arm, args.seed, args.tag)
    if not (run / "nets.pt").exists():
        raise SystemExit(f"{run}/nets.pt not found: train that run first with run.py (nets.pt is not in git).")
    dest = RESULTS / args.tag
    dest.mkdir(parents=True, exist_ok=True)
    return args, run, dest


def _num_modes(metrics: dict) -> int:
    """Modes of a run's grid from its metrics.json (runs made before the grid option: 5x5)."""
    return metrics.get("grid", 5) ** 2


def aggregate(seeds: list[int], iterations: int, tag: str = "loop") -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = {(a, s) for a in ARMS for s in seeds if (run_dir(a, s, tag) / "metrics.json").exists()}
    arms = [a for a in ARMS if any((a, s) in done for s in seeds)]  # an arm with any finished seed
    rows = {(a, s): json.loads((run_dir(a, s, tag) / "metrics.json").read_text()) for a in arms for s in seeds
            if (a, s) in done}
    hist = {k: json.loads((run_dir(*k, tag) / "gan_history.json").read_text()) for k in rows}
    lines = ["| arm | seed | modes covered (G) | HQ share (G) | modes covered (EMA G) | HQ share (EMA G) "
             "| final T | max T | final r_d | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (a, s), m in rows.items():
        n = _num_modes(m)
        lines.append(f"| {a} | {s} | {m['modes_covered']:.0f}/{n} | {m['hq_share']:.3f} | "
                     f"{m['ema_modes_covered']:.0f}/{n} | {m['ema_hq_share']:.3f} | {m['T']} | {m['max_T']} | "
                     f"{m['r_d']:.2f} | {m['train_seconds']:.0f} |")
    for a in arms:
        ms = [rows[(a, s)] for s in seeds if (a, s) in rows]
        mean = {k: sum(m[k] for m in ms) / len(ms) for k in ("modes_covered", "hq_share", "ema_modes_covered",
                                                             "ema_hq_share")}
        n = "" if len(ms) == len(seeds) else f" ({len(ms)} of {len(seeds)} seeds)"
        k = _num_modes(ms[0])
        lines.append(f"| **{a} mean{n}** | | {mean['modes_covered']:.1f}/{k} | {mean['hq_share']:.3f} | "
                     f"{mean['ema_modes_covered']:.1f}/{k} | {mean['ema_hq_share']:.3f} | | | | |")
    table = "\n".join(lines)
    res = RESULTS if tag == "loop" else RESULTS / tag
    res.mkdir(parents=True, exist_ok=True)
    (res / "table.md").write_text(f"{iterations} iterations per run, seeds {seeds}\n\n{table}\n")

    fig = Figure(figsize=(5 * len(arms), 3.2 * len(seeds)))
    FigureCanvasAgg(fig)
    for i, s in enumerate(seeds):
        for j, a in enumerate(arms):
            if (a, s) not in hist:
                continue
            h = hist[(a, s)]
            ax = fig.add_subplot(len(seeds), len(arms), len(arms) * i + j + 1)
            it = [r["iteration"] for r in h]
            ax.plot(it, [r["d_real_prob"] for r in h], label="sigmoid D(real)")
            ax.plot(it, [r["d_fake_prob"] for r in h], label="sigmoid D(fake)")
            ax.set_ylim(0, 1)
            ax.set_title(f"{a}, seed {s}", fontsize=9)
            if ARMS[a]["noise_enabled"]:
                ax2 = ax.twinx()
                ax2.plot(it, [r["T"] for r in h], color="gray", ls="--")
                ax2.set_ylabel("T (dashed)", fontsize=8)
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(res / "d_outputs.png", dpi=70)
    for a, s in rows:
        shutil.copy(run_dir(a, s, tag) / "scatter_final.png", res / f"scatter_{a}_seed{s}.png")
    _coverage_plot(rows, res / "coverage.png")
    return table


def _coverage_plot(rows: dict, path: Path) -> None:
    """Modes covered (raw G solid, EMA G dashed) against iteration for every run that recorded its
    ``progress`` points, one panel per arm, one colour per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    rows = {k: m for k, m in rows.items() if m.get("progress")}
    arms = list(dict.fromkeys(a for a, _ in rows))
    if not arms:
        return
    fig = Figure(figsize=(4.5 * len(arms), 3.4))
    FigureCanvasAgg(fig)
    for j, a in enumerate(arms):
        ax = fig.add_subplot(1, len(arms), j + 1)
        for (arm, s), m in rows.items():
            if arm != a:
                continue
            pts = m["progress"] + [{"iteration": m["iterations"], **m}]
            it = [p["iteration"] for p in pts]
            line, = ax.plot(it, [p["modes_covered"] for p in pts], marker="o", ms=3, label=f"seed {s} (G)")
            ax.plot(it, [p["ema_modes_covered"] for p in pts], ls="--", color=line.get_color(), label=f"seed {s} (EMA)")
        k = next(_num_modes(m) for (arm, _), m in rows.items() if arm == a)
        ax.set_ylim(0, k + 0.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"modes covered of {k}")
        ax.set_title(a, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _init_dir(args: argparse.Namespace, arm: str, seed: int) -> Path | None:
    """The run directory ``--init-from`` / ``--init-arm`` name for this arm and seed (None: from scratch)."""
    if args.init_from is None:
        return None
    src = run_dir(args.init_arm or arm, seed, args.init_from)
    if not (src / "nets.pt").exists():
        raise SystemExit(f"{src}/nets.pt not found: --init-from needs that finished run (nets.pt is not in git).")
    return src


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam lr for G (and D unless --lr-d)")
    ap.add_argument("--lr-d", type=float, default=None, help="Adam lr for D (two time-scale updates); default: --lr")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="divide the grid spacing (2) and mode std (0.05) by this (2.828: centres in [-1.41, 1.41])")
    ap.add_argument("--r1-gamma", type=float, default=0.0, help="lazy R1 weight (every 16 iterations); 0 = off")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--z-dim", type=int, default=2)
    ap.add_argument("--betas", type=float, nargs=2, default=[0.5, 0.9], help="Adam betas for G and D")
    ap.add_argument("--dataset-size", type=int, default=0,
                    help="train on this many fixed points (a multiple of grid**2) in epochs; 0 = a fresh sample per batch")
    ap.add_argument("--grid", type=int, default=5,
                    help="modes per axis of the Gaussian grid (5: the 25 Gaussians; even: no line through the centre)")
    ap.add_argument("--g-out-gain", type=float, default=1.0,
                    help="multiply G's initial output weights by this (12: first samples spread over the grid, not a centre blob)")
    ap.add_argument("--hidden", type=int, default=128,
                    help="width of both nets' two hidden layers (128: the paper's toy nets)")
    ap.add_argument("--tag", default="loop", help="protocol name: runs/<tag>_<arm>_seed<s>, results/<tag>/")
    ap.add_argument("--init-from", metavar="TAG", default=None,
                    help="continue each run from runs/<TAG>_<init arm>_seed<s>/nets.pt (fresh Adam states)")
    ap.add_argument("--init-arm", default=None, help="the arm whose run --init-from loads (default: the same arm)")
    ap.add_argument("--aggregate-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.aggregate_only:
        from loop import train_toy

        for seed in args.seeds:
            for arm in args.models:
                m = train_toy(run_dir(arm, seed, args.tag), seed, iterations=args.iterations, lr=args.lr,
                              spacing=2.0 / args.scale, data_std=0.05 / args.scale, r1_gamma=args.r1_gamma,
                              batch=args.batch, z_dim=args.z_dim, betas=tuple(args.betas),
                              dataset_size=args.dataset_size, init_from=_init_dir(args, arm, seed), grid=args.grid,
                              g_out_gain=args.g_out_gain, lr_d=args.lr_d, hidden=args.hidden,
                              **ARMS[arm])
                print(arm, seed, json.dumps(m), flush=True)
        if args.models != list(ARMS):
            return  # partial launch; aggregate later with --aggregate-only
    print(aggregate(args.seeds, args.iterations, args.tag))


if __name__ == "__main__":
    main()
