"""The `beatgans-bench` modes beyond the network step (`mode=train`, in bench.py):

- `sample`: images/s of classifier-guided DDIM (UNet + noisy classifier), our loop against guided-diffusion's
  loop driving the same two networks, interleaved repeats.
- `lightning`: steps/s of `beatgans-train`'s Trainer + DiffusionModule against a bare PyTorch loop with the same
  net, data, AdamW, EMA and gradient clipping, interleaved repeats; per-repeat ratios with median and spread.
- `loader`: images/s of `ImageFolderDataset` (ADM's box-then-bicubic resize and centre crop) over a temporary
  folder of synthetic JPEGs, per DataLoader worker count, and the workers an accelerator would need.

Each returns a dict that bench.py writes as JSON. Timings are wall-clock medians over `repeats`.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from beatgans.diffusion import (
    PerSampleNoise,
    UniformSampler,
    create_diffusion,
    ddim_sample,
)
from beatgans.diffusion.guidance import classifier_cond_fn

log = logging.getLogger(__name__)


def spread(values: list[float]) -> dict:
    """min, quartiles, median, max of `values` (and the sorted list)."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else v * 3
    return {"min": v[0], "q1": q[0], "median": statistics.median(v), "q3": q[2], "max": v[-1], "values": v}


def _baseline_module(baseline_file: str, root: Path):
    path = Path(baseline_file)
    path = path if path.is_absolute() else root / path
    spec = importlib.util.spec_from_file_location("beatgans_bench_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- sample
def bench_sample(cfg: DictConfig, device: torch.device, root: Path) -> dict:
    """Guided DDIM-`sample.steps`: ours vs guided-diffusion's `ddim_sample_loop`, same UNet and classifier."""
    s = cfg.sample
    net = hydra.utils.instantiate(cfg.net).to(device).eval()
    clf = hydra.utils.instantiate(cfg.classifier).to(device).eval().requires_grad_(False)
    diffusion = create_diffusion(s.schedule, 1000, var_type="learned_range" if net.learn_sigma else "fixed_small")
    process = diffusion.respace(f"ddim{s.steps}")
    cond_fn = classifier_cond_fn(clf, s.scale)
    n, size = cfg.batch_size, net.image_size
    shape = (n, net.in_channels, size, size)
    seeds = list(range(cfg.seed, cfg.seed + n))
    y = torch.arange(n, device=device) % clf.num_classes

    def ours() -> torch.Tensor:
        return ddim_sample(process, net, shape, noise=PerSampleNoise(seeds, shape[1:], device),
                           model_kwargs={"y": y}, cond_fn=cond_fn)

    loops = {"ours": ours}
    if cfg.oracle:
        try:
            theirs = _baseline_module(cfg.baseline_file, root).guided_ddim_loop(
                s.schedule, s.steps, net.learn_sigma)
            x_T = PerSampleNoise(seeds, shape[1:], device).randn()
            loops["oracle"] = lambda: theirs(net, shape, x_T, {"y": y}, cond_fn)
        except ImportError as err:
            log.warning("guided-diffusion loop unavailable (%s): timing ours only", err)
    for fn in loops.values():
        for _ in range(cfg.warmup):
            fn()
    times = {k: [] for k in loops}
    for _ in range(cfg.repeats):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    out = {"steps": s.steps, "guidance_scale": s.scale, "batch_size": n, "loops": {}}
    for name, t in times.items():
        out["loops"][name] = {"wall_s_median": statistics.median(t), "images_per_s": n / statistics.median(t),
                              "wall_s": t}
    if "oracle" in times:
        out["paired_ratio_ours_over_oracle"] = spread([a / b for a, b in zip(times["ours"], times["oracle"])])
    return out


# ---------------------------------------------------------------------------------------------- lightning
class _Window:
    """Wall time from the start of step `warmup` to the end of the last step (the steady state)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def at_start(self, step: int) -> None:
        if step == self.warmup:
            self.start = time.perf_counter()

    def at_end(self) -> None:
        self.end = time.perf_counter()


def _bare_loop(net, diffusion, loader, lc, device, window: _Window) -> None:
    """The plain PyTorch loop `DiffusionModule` replaces: same loss, AdamW, clipping and EMA update."""
    from beatgans.nets.ema import EMA

    ema = EMA(net, [lc.ema_rate]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lc.lr)
    sampler = UniformSampler(diffusion.num_timesteps)
    net.train()
    step, total = 0, lc.warmup + lc.steps
    while step < total:
        for x, y in loader:
            window.at_start(step)
            x, y = x.to(device), y.to(device)
            t, w = sampler.sample(x.shape[0], device)
            kwargs = {"y": y} if net.num_classes else {}
            loss = (diffusion.training_losses(net, x, t, model_kwargs=kwargs)["loss"] * w).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), lc.clip)
            opt.step()
            ema.update(net)
            step += 1
            if step == total:
                break
    window.at_end()


def _lightning_run(net, diffusion, datamodule, lc, device, window: _Window) -> None:
    from functools import partial

    import lightning as L

    from beatgans.lit.diffusion_module import DiffusionModule

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            window.at_start(trainer.global_step)

        def on_train_end(self, *args):
            window.at_end()

    module = DiffusionModule(net, diffusion, partial(torch.optim.AdamW, lr=lc.lr), ema_rates=[lc.ema_rate],
                             num_classes=datamodule.num_classes)
    trainer = L.Trainer(accelerator=device.type, devices=1, max_steps=lc.warmup + lc.steps,
                        gradient_clip_val=lc.clip, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=lc.get("log_every_n_steps", 10), callbacks=[Timer()])
    trainer.fit(module, datamodule=datamodule)


def bench_lightning(cfg: DictConfig, device: torch.device) -> dict:
    """Steady-state steps/s of Trainer + DiffusionModule vs the bare loop, interleaved `repeats` times."""
    from beatgans.data.datamodules import DigitsDataModule
    from beatgans.utils.logging import quiet_lightning

    quiet_lightning()  # the same console as beatgans-train: each line once, no litlogger tip
    lc = cfg.lightning
    torch.manual_seed(cfg.seed)
    net0 = hydra.utils.instantiate(cfg.net)
    diffusion = create_diffusion("linear", lc.num_timesteps)
    dm = DigitsDataModule(image_size=net0.image_size, batch_size=cfg.batch_size, seed=cfg.seed,
                          num_classes=net0.num_classes)
    dm.setup("fit")
    rates = {"lightning": [], "bare": []}
    for _ in range(cfg.repeats):
        for name, values in rates.items():
            net, window = copy.deepcopy(net0).to(device), _Window(lc.warmup)
            if name == "lightning":
                _lightning_run(net, diffusion, dm, lc, device, window)
            else:
                _bare_loop(net, diffusion, dm.train_dataloader(), lc, device, window)
            values.append(lc.steps / (window.end - window.start))
    ratios = [b / a for a, b in zip(rates["lightning"], rates["bare"])]  # > 1: Lightning is slower
    return {"timed_steps": lc.steps, "warmup_steps": lc.warmup, "batch_size": cfg.batch_size,
            "steps_per_s": {k: spread(v) for k, v in rates.items()},
            "overhead_bare_over_lightning": spread(ratios),
            "overhead_percent_median": 100 * (statistics.median(ratios) - 1)}


# ---------------------------------------------------------------------------------------------- loader
def synthetic_jpegs(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    """`count` smooth random JPEGs (quality 90) of `size` (W, H) in `root/<class>/`, like ImageNet photos."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        img.save(root / f"c{i % 2}" / f"{i:05d}.jpg", quality=90)


def train_images_per_s(net_cfg: DictConfig, peak_flops: float, mfu: float) -> dict:
    """Training images/s an accelerator reaches on `net_cfg` at `mfu` of `peak_flops`: model FLOPs per image
    of one training step (forward + backward, counted on fake tensors, so nothing is allocated or computed)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode():
        net = hydra.utils.instantiate(net_cfg)
        s = net.image_size
        x, t = torch.randn(1, net.in_channels, s, s), torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if net.num_classes else None
        with FlopCounterMode(display=False) as counter:
            net(x, t, y).float().square().mean().backward()
    flops = counter.get_total_flops()
    return {"train_flops_per_image": int(flops), "images_per_s": peak_flops * mfu / flops}


def bench_loader(cfg: DictConfig) -> dict:
    """images/s of ImageFolderDataset at `loader.image_size` for each worker count in `loader.workers`."""
    from torch.utils.data import DataLoader

    from beatgans.data.image_folder import ImageFolderDataset

    lc = cfg.loader
    rates = {}
    with tempfile.TemporaryDirectory(prefix="beatgans_bench_jpegs_") as tmp:
        synthetic_jpegs(Path(tmp), lc.num_images, tuple(lc.source_size), cfg.seed)
        dataset = ImageFolderDataset(tmp, lc.image_size, labels="folder", random_flip=True)
        for workers in lc.workers:
            loader = DataLoader(dataset, batch_size=lc.batch_size, num_workers=workers, shuffle=False)
            times = []
            for _ in range(cfg.repeats):
                start = time.perf_counter()
                count = sum(len(x) for x, _ in loader)
                times.append(time.perf_counter() - start)
            rates[str(workers)] = count / statistics.median(times)
    per_worker = rates.get("0") or max(rates[k] / int(k) for k in rates)
    need = train_images_per_s(cfg.net_for_loader, lc.accelerator_peak_flops, lc.accelerator_mfu)
    return {"image_size": lc.image_size, "source_size": list(lc.source_size), "num_images": lc.num_images,
            "images_per_s_by_workers": rates, "images_per_s_per_worker": per_worker,
            "accelerator": {"peak_flops": lc.accelerator_peak_flops, "assumed_mfu": lc.accelerator_mfu, **need},
            "workers_needed": int(np.ceil(need["images_per_s"] / per_worker))}
