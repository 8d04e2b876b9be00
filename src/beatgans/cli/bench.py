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


def peak_memory(step, device: torch.device) -> dict:
    """Peak memory of one call of `step()` beyond what was allocated before it.

    CUDA: ``max_memory_allocated``. CPU: torch's allocations recorded by the profiler
    (``profile_memory``), summed in time order; RSS counters are useless here because the
    process high-water mark never goes down between models.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base, "method": "cuda.max_memory_allocated"}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
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


MODES = ("train", "sample", "lightning", "loader")


def write_result(result: dict, output: str) -> None:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    log.info("benchmark written to %s", out)


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark `cfg.mode` described by ``cfg`` (conf/bench.yaml); write and return the JSON dict."""
    mode = cfg.get("mode", "train")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device)
    if mode != "train":
        from beatgans.cli import bench_modes

        torch.manual_seed(cfg.seed)
        result = {"mode": mode, "device": _device_name(device), "torch": torch.__version__,
                  "threads": torch.get_num_threads()}
        if mode == "sample":
            result.update(bench_modes.bench_sample(cfg, device, relative_root(cfg.baseline_file)))
        elif mode == "lightning":
            result.update(bench_modes.bench_lightning(cfg, device))
        else:
            result.update(bench_modes.bench_loader(cfg))
        result["config"] = OmegaConf.to_container(cfg, resolve=True)
        write_result(result, cfg.output)
        return result
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
        "mode": "train", "device": _device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "oracle_available": oracle is not None,
        "parameters": sum(p.numel() for p in net.parameters()),
        "peak_flops_per_s": peak, "models": {},
    }
    if oracle is None and cfg.oracle:
        log.warning("no oracle network: benchmarking our UNet only")
    for name, case in cases.items():
        entry = {"train": _summary(train[name], cfg.batch_size), "inference": _summary(infer[name], cfg.batch_size),
                 "memory": peak_memory(case.train_step, device), "flops": _flops(case)}
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
    write_result(result, cfg.output)
    return result


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def summary_lines(result: dict) -> list[str]:
    """A one-screen summary of a result of any mode."""
    mode = result.get("mode", "train")
    lines = [f"beatgans-bench mode={mode} on {result['device']} ({result['threads']} threads)"]
    if mode == "sample":
        for name, e in result["loops"].items():
            lines.append(f"  {name:7s} guided DDIM-{result['steps']}: {e['images_per_s']:.3f} img/s")
        if "paired_ratio_ours_over_oracle" in result:
            r = result["paired_ratio_ours_over_oracle"]
            lines.append(f"  ours / oracle time per repeat: median {r['median']:.3f} (min {r['min']:.3f}, "
                         f"max {r['max']:.3f})")
    elif mode == "lightning":
        for name, e in result["steps_per_s"].items():
            lines.append(f"  {name:9s} {e['median']:.2f} steps/s (min {e['min']:.2f}, max {e['max']:.2f})")
        r = result["overhead_bare_over_lightning"]
        lines.append(f"  Lightning overhead: {result['overhead_percent_median']:+.1f} % median "
                     f"(bare/lightning per repeat: {r['min']:.3f} .. {r['max']:.3f})")
    elif mode == "loader":
        for workers, rate in result["images_per_s_by_workers"].items():
            lines.append(f"  workers={workers}: {rate:.1f} img/s")
        acc = result["accelerator"]
        lines.append(f"  accelerator at {acc['assumed_mfu']:.0%} MFU of {acc['peak_flops']:.3g} FLOP/s trains "
                     f"{acc['images_per_s']:.0f} img/s -> {result['workers_needed']} workers")
    else:
        for name, e in result["models"].items():
            lines.append(f"  {name:6s} train {e['train']['wall_s_median']:.3f}s ({e['train']['images_per_s']:.1f} "
                         f"img/s) | infer {e['inference']['wall_s_median']:.3f}s | peak mem "
                         f"{e['memory']['peak_bytes'] / 2**20:.1f} MB")
        if "paired_ratios" in result:
            spread = result["paired_ratios"]["train_wall"]
            lines.append(f"  train step ours / oracle per repeat: min {spread['min']:.3f}, median "
                         f"{spread['median']:.3f}, max {spread['max']:.3f}")
    return lines


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
def main(cfg: DictConfig) -> None:
    for line in summary_lines(run_bench(cfg)):
        log.info(line)


if __name__ == "__main__":
    main()
