"""`beatgans-nll`: bits/dim of a trained model on a dataset (the full variational bound, DDPM eq. 5 /
IDDPM section 3), written to `metrics.json` in the output directory."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from beatgans.cli.common import CONFIG_DIR
from beatgans.cli.loading import load_model
from beatgans.diffusion import PerSampleNoise
from beatgans.utils.io import update_json
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def evaluate_nll(cfg: DictConfig) -> dict:
    """Average bits/dim (and its prior / decoder / mse parts) over `num_batches` batches of `split`."""
    from hydra.utils import instantiate

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    loaded = load_model(cfg.run, cfg.ckpt, cfg.get("net"), cfg.get("diffusion"), cfg.use_ema, cfg.ema_index)
    net = loaded.net.to(device)
    datamodule = instantiate(cfg.data, batch_size=cfg.batch_size)
    datamodule.setup()
    loader = datamodule.val_dataloader() if cfg.split == "val" else datamodule.train_dataloader()
    if not loader:
        raise ValueError(f"data has no {cfg.split} split (set split=train, or data.val_fraction > 0).")
    totals: dict[str, float] = {}
    count = 0
    limit = cfg.num_batches if cfg.num_batches is not None else math.inf
    for i, (x, y) in enumerate(tqdm(loader, desc="bits/dim", total=None if limit == math.inf else int(limit))):
        if i >= limit:
            break
        x = x.to(device)
        kwargs = {"y": y.to(device)} if loaded.num_classes else {}
        noise = PerSampleNoise([cfg.seed + count + j for j in range(len(x))], tuple(x.shape[1:]), device)
        with torch.no_grad():
            out = loaded.diffusion.calc_bpd_loop(net, x, clip_denoised=cfg.clip_denoised, model_kwargs=kwargs,
                                                 noise=noise)
        for key in ("total_bpd", "prior_bpd"):
            totals[key] = totals.get(key, 0.0) + float(out[key].sum())
        totals["decoder_bpd"] = totals.get("decoder_bpd", 0.0) + float(out["vb"][:, 0].sum())
        count += len(x)
    metrics = {f"nll/{k}": v / count for k, v in totals.items()}
    metrics.update({"nll/num_images": count, "nll/split": cfg.split, "nll/ckpt": str(loaded.ckpt_path)})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="nll")
def main(cfg: DictConfig) -> float:
    metrics = evaluate_nll(cfg)
    out = Path(cfg.paths.output_dir) / "metrics.json"
    update_json(out, metrics)
    if cfg.run:
        update_json(Path(cfg.run) / "metrics.json", metrics)
    log.info("bits/dim %.4f over %d images -> %s", metrics["nll/total_bpd"], metrics["nll/num_images"], out)
    return metrics["nll/total_bpd"]


if __name__ == "__main__":
    main()
