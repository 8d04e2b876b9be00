"""`beatgans-train`: train any task (diffusion model, noisy classifier, Diffusion-GAN) from a Hydra config.

    beatgans-train experiment=digits/ddpm
    beatgans-train -m experiment=digits/ddpm net.model_channels=32,64 trainer.max_steps=200
    beatgans-train experiment=digits/ddpm hydra.run.dir=<run dir> ckpt_path=last      # resume
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from beatgans.cli.common import (
    CONFIG_PATH,
    configure_wandb_mode,
    finish_wandb,
    instantiate_list,
    print_config_tree,
    record_launch,
)
from beatgans.cli.errors import exit_on_user_error
from beatgans.cli.loading import adopt_data_classes
from beatgans.cli.resume import launch_record_dir
from beatgans.data.batching import apply_batch_split, check_batch_split
from beatgans.data.image_folder import write_class_index
from beatgans.utils.errors import UserError
from beatgans.utils.io import update_json
from beatgans.utils.logging import get_logger, quiet_lightning, rank

log = get_logger(__name__)


class ConfigError(UserError):
    """A configuration that cannot work; the message says what to change."""


def check_task(cfg: DictConfig, datamodule, module) -> None:
    """Cross-checks between data, net, diffusion and task, before any work starts."""
    net = getattr(module, "net", None)
    diffusion = getattr(module, "diffusion", None)
    if net is not None and diffusion is not None and hasattr(net, "out_channels"):
        want = net.in_channels * (2 if getattr(diffusion, "learned_sigma", False) else 1)
        if net.out_channels != want:
            raise ConfigError(
                f"diffusion.var_type={diffusion.var_type} needs a net with {want} output channels but it has "
                f"{net.out_channels}; set net.learn_sigma={str(want != net.in_channels).lower()}.")
    latent = getattr(module, "first_stage", None) is not None or getattr(module, "cond_encoder", None) is not None
    if latent:  # latent diffusion / cross-attention: sizes, channels and context widths (one sentence each)
        from beatgans.lit.latent import check_latent_setup

        check_latent_setup(module, datamodule)
    elif net is not None and hasattr(net, "image_size") and getattr(datamodule, "image_size", None):
        if net.image_size != datamodule.image_size:
            raise ConfigError(f"net.image_size={net.image_size} but the data is {datamodule.image_size}px.")
    k_data = getattr(datamodule, "num_classes", None)
    k_task = getattr(module, "num_classes", None)
    if k_task is not None and k_data is None:
        raise ConfigError(f"the task is class-conditional ({k_task} classes) but data {cfg.data._target_} has no "
                          "labels; set data.num_classes or task.num_classes=null.")
    if getattr(module, "cond_encoder", None) is not None:
        return  # the condition encoder, not the net, carries labels and the null condition
    if net is not None and hasattr(net, "num_classes") and k_task is not None and net.num_classes != k_task:
        raise ConfigError(f"net.num_classes={net.num_classes} but task.num_classes={k_task}.")
    if getattr(module, "p_uncond", 0) > 0 and not getattr(net, "null_class", False):
        raise ConfigError("task.p_uncond > 0 trains classifier-free guidance: set net.null_class=true.")
    up, low = hasattr(net, "low_res_size"), getattr(datamodule, "low_res_size", None)
    if up != (low is not None) or (up and net.low_res_size not in (None, low)):
        raise ConfigError(f"an upsampler needs data.low_res_size equal to net.low_res_size, and only an upsampler "
                          f"takes low-res pairs: got net={type(net).__name__} (low_res_size="
                          f"{getattr(net, 'low_res_size', None)}) and data.low_res_size={low}.")


def only_ema_in_eval_mode(module) -> bool:
    """True when the modules in eval mode are exactly the EMA shadows (kept in eval by `beatgans.nets.ema.EMA`)
    and a latent model's frozen first stage."""
    names = [n for n, m in module.named_modules() if not m.training]
    return bool(names) and all(n.split(".")[0] in ("ema", "cond_ema", "first_stage") for n in names)


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """Instantiate `cfg.logger`; a wandb logger gets the run directory's stored run id, so resumes continue it."""
    from hydra.utils import instantiate

    from beatgans.lit.loggers import wandb_run_id

    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if isinstance(node, DictConfig) and "_target_" in node:
            extra = {"id": wandb_run_id(run_dir), "resume": "allow"} if "Wandb" in str(node._target_) else {}
            loggers.append(instantiate(node, **extra))
    return loggers


def log_config_once(loggers: list, cfg: DictConfig, run_dir: Path, module, datamodule) -> None:
    """Give every logger the resolved config once, flat (``{"task.r1_gamma": 0.1, ..., "run_dir": ...}``), and
    stop Lightning from logging the module's and datamodule's hyperparameters a second time beside it."""
    from omegaconf import OmegaConf

    from beatgans.utils.nested import flatten

    if not loggers:
        return
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    flat["run_dir"] = str(run_dir)
    for lg in loggers:
        lg.log_hyperparams(flat)
    for obj in (module, datamodule):  # the flag save_hyperparameters(logger=False) sets
        obj._log_hyperparams = False


def check_optimized_metric(cfg: DictConfig, metrics: dict) -> float | None:
    """The value a sweeper optimizes (``optimized_metric``), or None when none is asked for; a key the run did
    not produce is a UserError naming the keys it did."""
    target = cfg.get("optimized_metric")
    if not target:
        return None
    if target not in metrics:
        raise ConfigError(f"optimized_metric={target} is not among this run's metrics; set it to one of: "
                          f"{', '.join(sorted(metrics))}.")
    return metrics[target]


def train(cfg: DictConfig) -> dict:
    """Build everything from `cfg`, fit, and write `<run>/metrics.json`. Returns the final metrics.

    A resume (`ckpt_path`) is checked first (readable checkpoint, same settings unless `resume_overrides=apply`),
    before anything in the run directory is written.
    """
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.utilities.model_helpers import is_overridden

    from beatgans.cli.resume import (
        ApplyOptimizerSettings,
        ConfigInCheckpoint,
        check_resume,
        find_checkpoint,
    )
    from beatgans.lit.callbacks import AtomicCheckpointIO

    quiet_lightning()
    run_dir = Path(cfg.paths.output_dir)
    # The config is completed (batch split, inferred classes) before it is compared with a checkpoint's or
    # recorded, so what is compared and written is what the run uses.
    split = apply_batch_split(cfg)  # data.global_batch_size -> per-process data.batch_size + accumulation
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), run_dir)
    datamodule = instantiate(cfg.data)
    classes = adopt_data_classes(cfg, datamodule)  # image trees labelled by sub-folder: data.num_classes
    changes = check_resume(cfg, ckpt_path) if ckpt_path else []
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("print_config", True) and rank() == 0:
        print_config_tree(cfg)
    if rank() == 0:
        record_launch(cfg, launch_record_dir(run_dir, resuming=ckpt_path is not None), changes)
        if classes:
            write_class_index(run_dir / "class_index.json", classes)
    if cfg.get("logger") and any("Wandb" in str(v.get("_target_", "")) for v in cfg.logger.values()):
        configure_wandb_mode(run_dir)

    module = instantiate(cfg.task)
    check_task(cfg, datamodule, module)
    callbacks = instantiate_list(cfg.get("callbacks")) + [ConfigInCheckpoint(cfg)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if changes:
        callbacks.append(ApplyOptimizerSettings())
    loggers = build_loggers(cfg, run_dir)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO()])
    check_batch_split(split, trainer, module)
    log_config_once(loggers, cfg, run_dir, module, datamodule)

    start = time.time()
    with warnings.catch_warnings():
        if only_ema_in_eval_mode(module):  # EMA shadows are eval on purpose: Lightning's warning is noise there
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        if not is_overridden("validation_step", module):  # GAN tasks: our datamodules always offer a val loader
            warnings.filterwarnings("ignore", message=r"You passed in a `val_dataloader` but have no `validation_step`")
        # Our own checkpoints hold RNG states and config containers, which weights_only loading refuses.
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                    weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if hasattr(module, "final_metrics"):
        metrics.update(module.final_metrics())
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    step = trainer.global_step
    if step == 0 and ckpt.exists():  # ddp_spawn trains in child processes: read their step from the checkpoint
        import torch

        step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    metrics.update({"global_step": step, "train_seconds": round(time.time() - start, 2)})
    if trainer.fast_dev_run:  # debug=fdr: a smoke test writes only its config and log, no results
        return metrics
    if trainer.global_rank == 0:
        grids = sorted((run_dir / "samples").glob("final_grid*.png"))
        update_json(run_dir / "metrics.json", metrics)
        log.info("Run directory: %s", run_dir)
        log.info("Checkpoint:    %s", ckpt if ckpt.exists() else "(none written)")
        if grids:
            log.info("Sample grid:   %s", grids[-1])
        for lg in loggers:
            if type(lg).__name__ == "WandbLogger":
                log.info("wandb run:     %s", lg.experiment.dir if hasattr(lg.experiment, "dir") else lg.save_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except BaseException:
        finish_wandb(exit_code=1)  # a failed (multirun) job shows as failed in wandb, not as finished
        raise
    finish_wandb()
    return check_optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
