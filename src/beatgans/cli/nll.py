"""`beatgans-nll`: bits/dim of a trained model on a dataset (the full variational bound, DDPM eq. 5 /
IDDPM section 3), written to `metrics.json` in the output directory (for `run=<dir>`, by default
`<run>/results/nll/<time>_<id>`) and, when the training run used wandb, logged into its wandb run."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from beatgans.cli.attach import attach_results, check_wandb
from beatgans.cli.common import CONFIG_PATH
from beatgans.cli.errors import exit_on_user_error
from beatgans.cli.loading import load_model
from beatgans.diffusion import PerSampleNoise
from beatgans.utils.errors import UserError
from beatgans.utils.io import write_json
from beatgans.utils.logging import get_logger
from beatgans.utils.progress import Progress

log = get_logger(__name__)


def evaluate_nll(cfg: DictConfig) -> dict:
    """Average bits/dim (and its prior / decoder / mse parts) over `num_batches` batches of `split`."""
    from hydra.utils import instantiate

    for key in ("batch_size", "num_batches"):
        value = cfg.get(key)
        if (value is not None or key == "batch_size") and (not isinstance(value, int) or value < 1):
            raise UserError(f"{key}={value} must be a positive integer" + (" (or null for the whole split)."
                                                                            if key == "num_batches" else "."))
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    loaded = load_model(cfg.run, cfg.ckpt, cfg.get("net"), cfg.get("diffusion"), cfg.use_ema, cfg.ema_index)
    net = loaded.net.to(device)
    datamodule = instantiate(cfg.data, batch_size=cfg.batch_size)
    datamodule.setup()
    loader = datamodule.val_dataloader() if cfg.split == "val" else datamodule.train_dataloader()
    if not loader:
        raise UserError(f"data has no {cfg.split} split (set split=train, or data.val_fraction > 0).")
    totals: dict[str, float] = {}
    count = 0
    limit = cfg.num_batches if cfg.num_batches is not None else math.inf
    num_batches = int(min(limit, len(loader)))
    T = loaded.diffusion.num_timesteps
    # One bar over every network call of every chain (T per batch), so it moves during a chain.
    bar = Progress(num_batches * T, "bits/dim", unit="step", enabled=cfg.get("progress", True))

    def model(x_t, t, **kwargs):
        out = net(x_t, t, **kwargs)
        bar.update(1)
        return out

    with bar:
        for i, (x, y) in enumerate(loader):
            if i >= limit:
                break
            x = x.to(device)
            kwargs = {"y": y.to(device)} if loaded.num_classes else {}
            noise = PerSampleNoise([cfg.seed + count + j for j in range(len(x))], tuple(x.shape[1:]), device)
            with torch.no_grad():
                out = loaded.diffusion.calc_bpd_loop(model, x, clip_denoised=cfg.clip_denoised,
                                                     model_kwargs=kwargs, noise=noise)
            for key in ("total_bpd", "prior_bpd"):
                totals[key] = totals.get(key, 0.0) + float(out[key].sum())
            totals["decoder_bpd"] = totals.get("decoder_bpd", 0.0) + float(out["vb"][:, 0].sum())
            count += len(x)
    # canonical keys (docs/metrics.md): total_bpd is `bpd`, the same name training's validation estimate reports
    metrics = {"bpd" if k == "total_bpd" else k: v / count for k, v in totals.items()}
    metrics.update({"nll_images": count, "nll_split": cfg.split, "nll_ckpt": str(loaded.ckpt_path),
                    "ckpt_step": loaded.global_step})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="nll")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    check_wandb(cfg.get("wandb", "auto"), cfg.get("run"))
    metrics = evaluate_nll(cfg)
    # Its own metrics.json (by default in <run>/results/nll/<time>_<id>, where beatgans-report <run> finds it);
    # the training run's metrics.json is never touched, so a second evaluation replaces nothing.
    out = Path(cfg.paths.output_dir) / "metrics.json"
    write_json(out, metrics, overwrite=False)
    attach_results("nll", metrics, cfg.run, cfg.paths.output_dir, cfg.get("wandb", "auto"))
    log.info("bits/dim %.4f over %d images -> %s", metrics["bpd"], metrics["nll_images"], out)
    return metrics["bpd"]


if __name__ == "__main__":
    main()
