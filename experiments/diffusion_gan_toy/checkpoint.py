"""Load a finished `beatgans-train experiment=toy/...` run for the analysis scripts (modes.py, forces.py).

A run directory holds `.hydra/config.yaml` and `checkpoints/last.ckpt`; the module is rebuilt from the
config and the checkpoint's state dict, which carries the generator, the EMA generator, the
discriminator and the adaptive-diffusion controller (its final T, p and t-slots).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

EVAL_SEED = 12345  # the latents of every toy metric and plot (DiffusionGANModule.final_metrics)


def load_module(run: Path, ckpt: str = "last.ckpt"):
    """The trained `DiffusionGANModule` of `run` (eval mode, CPU)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    run = Path(run)
    path = run / "checkpoints" / ckpt
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: pass a run directory written by beatgans-train.")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    module = instantiate(cfg.task)
    state = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    return module.eval()


def eval_samples(module) -> dict[str, torch.Tensor]:
    """`{"G": (n, 2), "EMA G": (n, 2)}`, n = 100 per mode, from the raw and EMA generators on fixed latents."""
    n = 100 * len(module.eval_modes)
    with torch.no_grad():
        return {"G": module.sample_images(n, seed=EVAL_SEED, use_ema=False),
                "EMA G": module.sample_images(n, seed=EVAL_SEED, use_ema=True)}


def analysis_cli(doc: str) -> tuple[Path, Path]:
    """`<script> RUN_DIR [--out DIR]` -> (run directory, output folder, default <run>/analysis)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a beatgans-train run directory (toy experiment)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    dest = args.out or args.run / "analysis"
    dest.mkdir(parents=True, exist_ok=True)
    return args.run, dest


def run_name(run: Path) -> str:
    """`<arm>_seed<s>` from the run's overrides (`experiment=toy/<arm>`) and config seed (lines.py's names)."""
    import yaml

    run = Path(run)
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or [] \
        if (run / ".hydra" / "overrides.yaml").is_file() else []
    arm = next((o.split("=", 1)[1].rsplit("/", 1)[-1] for o in overrides if o.startswith("experiment=")), run.name)
    seed = (yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) or {}).get("seed", 0)
    return f"{arm}_seed{seed}"
