"""beatgans-bench: time our UNet against guided-diffusion's UNetModel at the same config and weights.

    beatgans-bench                                   # CPU, ADM ImageNet-64 layout at width 64, batch 4
    beatgans-bench device=cuda precision=bf16 net.model_channels=192 batch_size=64 compile=true

Per model: a training step (forward + MSE loss + backward + AdamW step) and an inference forward,
as wall seconds and process CPU seconds (the CPU time is less sensitive to other jobs sharing the
cores), images/s, peak memory and model FLOPs (torch.utils.flop_counter) with MFU when the
accelerator's peak is known. With the oracle, also the per-repeat ratios of back-to-back runs
(``paired_ratios``: min, quartiles, max), which show how much of the ratio is machine noise.
Writes JSON. The oracle (the `guided_diffusion` package) is optional: without it only our net is
timed and the JSON says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from beatgans.cli.common import CONFIG_PATH
from beatgans.nets import UNet
from beatgans.utils.logging import get_logger

log = get_logger(__name__)

# Dense peak FLOP/s by (device-name substring, precision); add rows as hardware is benchmarked.
PEAK_FLOPS = {
    ("H100", "bf16"): 989.4e12, ("H100", "fp32"): 66.9e12,
    ("H200", "bf16"): 989.4e12, ("H200", "fp32"): 66.9e12,
    ("A100", "bf16"): 312e12, ("A100", "fp32"): 19.5e12,
}


def relative_root(name: str) -> Path:
    """Where a relative path from conf/bench.yaml (`baseline_file`) is read from: the working directory when it
    holds `name`, else the repository root when beatgans runs from a checkout (src/beatgans/...), else the
    working directory. The package itself may live in site-packages, far from any benchmarks/ folder."""
    here = Path(__file__).resolve()
    roots = [Path.cwd()] + ([here.parents[3]] if here.parents[2].name == "src" else [])
    return next((root for root in roots if (root / name).is_file()), Path.cwd())


def oracle_unet(net: UNet, net_cfg: dict, baseline_file: str | None) -> torch.nn.Module | None:
    """The reference network built by `build_baseline(net, net_cfg)` in `baseline_file` (by default
    benchmarks/guided_diffusion_baseline.py, outside the package, so the product never imports the oracle),
    or None when the file or the package it needs is missing."""
    if not baseline_file:
        return None
    path = Path(baseline_file)
    path = path if path.is_absolute() else relative_root(baseline_file) / path
    if not path.is_file():
        log.warning("baseline file %s not found: benchmarking our UNet only", path)
        return None
    spec = importlib.util.spec_from_file_location("beatgans_bench_baseline", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.build_baseline(net, net_cfg)
    except ImportError as err:
        log.warning("baseline %s unavailable (%s): benchmarking our UNet only", path, err)
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


class _Case:
    """One model with its optimizer and the closures the benchmark times."""

    def __init__(self, model, batch, cfg, device):
        self.model, self.batch, self.device = model, batch, device
        self.amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        fused = cfg.get("fused_adamw", True)
        try:
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.forward = torch.compile(model) if cfg.compile else model

    def train_step(self) -> None:
        x, t, y, target = self.batch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.amp:
            out = self.forward(x, t, y)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        self.opt.step()

    @torch.no_grad()
    def infer(self) -> None:
        x, t, y, _ = self.batch
        self.model.eval()
        with self.amp:
            self.forward(x, t, y)


def _peak_memory(case: _Case, device: torch.device) -> dict:
    """Peak memory of one training step beyond what was allocated before it.

    CUDA: ``max_memory_allocated``. CPU: torch's allocations recorded by the profiler
    (``profile_memory``), summed in time order; RSS counters are useless here because the
    process high-water mark never goes down between models.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        case.train_step()
        torch.cuda.synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base, "method": "cuda.max_memory_allocated"}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        case.train_step()
    # Each op's own (self) allocations minus frees, accumulated in start order: the peak of live
    # torch-allocated bytes at op granularity.
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return {"peak_bytes": int(peak), "method": "torch.profiler self allocations per op, cumulative (CPU)"}


def _flops(case: _Case) -> dict:
    """Model FLOPs of one training step (forward + backward) and of one forward.

    Counted with attention on SDPA's math backend: the counter has no formula for the fused CPU
    attention kernel, and the math path exposes the two matmuls (the model's FLOPs either way).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = case.model
    x, t, y, target = case.batch
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as counter:
            with case.amp:
                out = model(x, t, y)
            torch.nn.functional.mse_loss(out.float(), target).backward()
        train = counter.get_total_flops()
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), case.amp:
            model(x, t, y)
    return {"train_step": int(train), "forward": int(counter.get_total_flops())}


def _peak_flops(cfg: DictConfig, device: torch.device) -> float | None:
    if cfg.get("peak_flops"):
        return float(cfg.peak_flops)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for (key, prec), value in PEAK_FLOPS.items():
        if key in name and prec == cfg.precision:
            return value
    return None


def _summary(times: list[tuple[float, float]], batch_size: int) -> dict:
    wall = [w for w, _ in times]
    cpu = [c for _, c in times]
    med = statistics.median(wall)
    return {"wall_s_median": med, "wall_s_min": min(wall), "cpu_s_median": statistics.median(cpu),
            "cpu_s_min": min(cpu), "images_per_s": batch_size / med, "repeats": len(times)}


def paired_ratio_spread(ours: list[tuple[float, float]], theirs: list[tuple[float, float]]) -> dict:
    """Wall-time ratios ours_i / theirs_i of interleaved repeats: min, quartiles, max and the list.

    The spread shows how much of a ratio is machine noise (the oracle's time moves more than ours).
    """
    ratios = sorted(a[0] / b[0] for a, b in zip(ours, theirs))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"min": ratios[0], "q1": q[0], "median": statistics.median(ratios), "q3": q[2], "max": ratios[-1],
            "ratios": ratios}


def make_batch(net: UNet, batch_size: int, device: torch.device, channels_last: bool, seed: int = 0):
    """(x, t, y, target) for one step: x and target ~ N(0, 1), t uniform in [0, 1000), y uniform labels."""
    g = torch.Generator().manual_seed(seed)
    s = net.image_size
    x = torch.randn(batch_size, net.in_channels, s, s, generator=g)
    target = torch.randn(batch_size, net.out_channels, s, s, generator=g)
    t = torch.randint(0, 1000, (batch_size,), generator=g)
    y = torch.randint(0, net.num_classes, (batch_size,), generator=g) if net.num_classes else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, target = (v.to(device).contiguous(memory_format=fmt) for v in (x, target))
    return x, t.to(device), None if y is None else y.to(device), target


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` (conf/bench.yaml); write and return the JSON dict."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    net_cfg = OmegaConf.to_container(cfg.net, resolve=True)
    net = hydra.utils.instantiate(cfg.net)
    oracle = oracle_unet(net, net_cfg, cfg.get("baseline_file")) if cfg.oracle else None
    models = {"ours": net}
    if oracle is not None:
        models["oracle"] = oracle
    batch = make_batch(net, cfg.batch_size, device, cfg.channels_last, cfg.seed)
    cases = {}
    for name, model in models.items():
        model = model.to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        cases[name] = _Case(model, batch, cfg, device)
    for case in cases.values():  # warm-up: allocator, kernels, torch.compile
        for _ in range(cfg.warmup):
            case.train_step()
            case.infer()
    train = {k: [] for k in cases}
    infer = {k: [] for k in cases}
    for _ in range(cfg.repeats):  # interleaved so both models see the same machine load
        for name, case in cases.items():
            train[name].append(_timed(case.train_step, device))
            infer[name].append(_timed(case.infer, device))
    peak = _peak_flops(cfg, device)
    result: dict[str, Any] = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "oracle_available": oracle is not None,
        "parameters": sum(p.numel() for p in net.parameters()),
        "peak_flops_per_s": peak, "models": {},
    }
    if oracle is None and cfg.oracle:
        log.warning("no oracle network: benchmarking our UNet only")
    for name, case in cases.items():
        entry = {"train": _summary(train[name], cfg.batch_size), "inference": _summary(infer[name], cfg.batch_size),
                 "memory": _peak_memory(case, device), "flops": _flops(case)}
        for kind, key in (("train", "train_step"), ("inference", "forward")):
            achieved = entry["flops"][key] / entry[kind]["wall_s_median"]
            entry[kind]["flops_per_s"] = achieved
            entry[kind]["mfu"] = achieved / peak if peak else None
        result["models"][name] = entry
    if oracle is not None:
        ours, theirs = result["models"]["ours"], result["models"]["oracle"]
        result["ratio_ours_over_oracle"] = {
            f"{kind}_{clock}": ours[kind][f"{clock}_s_median"] / theirs[kind][f"{clock}_s_median"]
            for kind in ("train", "inference") for clock in ("wall", "cpu")
        }
        # repeat i of ours and of the oracle ran back to back, so their ratio sees the same machine state
        result["paired_ratios"] = {f"{kind}_wall": paired_ratio_spread(times["ours"], times["oracle"])
                                   for kind, times in (("train", train), ("inference", infer))}
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    log.info("benchmark written to %s", out)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
def main(cfg: DictConfig) -> None:
    result = run_bench(cfg)
    for name, entry in result["models"].items():
        log.info("%-6s train %.3fs (cpu %.3fs) %.1f img/s | infer %.3fs %.1f img/s | peak mem %.1f MB",
                 name, entry["train"]["wall_s_median"], entry["train"]["cpu_s_median"], entry["train"]["images_per_s"],
                 entry["inference"]["wall_s_median"], entry["inference"]["images_per_s"],
                 entry["memory"]["peak_bytes"] / 2**20)
    if "ratio_ours_over_oracle" in result:
        log.info("ours / oracle: %s", {k: round(v, 3) for k, v in result["ratio_ours_over_oracle"].items()})
        spread = result["paired_ratios"]["train_wall"]
        log.info("train step, per interleaved repeat: ours / oracle min %.3f, median %.3f, max %.3f",
                 spread["min"], spread["median"], spread["max"])


if __name__ == "__main__":
    main()
