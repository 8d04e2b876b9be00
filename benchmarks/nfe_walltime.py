"""Seconds per image of guided sampling at equal quality: our DPM-Solver++ at few NFE against OpenAI
guided-diffusion's `ddim_sample_loop` at 50 steps, both driving the SAME trained network.

The network is a beatgans training run (class-conditional, trained with label dropout); guided-diffusion's
UNetModel receives its weights through `to_openai_state_dict` (benchmarks/guided_diffusion_baseline.py), and
both loops guide with the same classifier-free mix (ClassifierFreeGuidance: one batched forward of the
conditional and null-label halves per NFE). guided-diffusion is a test/benchmark-only oracle (PyPI
`guided-diffusion-sdk`); src/ never imports it.

    PYTHONPATH=src:benchmarks python benchmarks/nfe_walltime.py --run outputs/nfe_digits/cfg8 \
        --dpm-steps 10 --scale 2 --num 100 --out outputs/nfe_walltime.json

Prints one line per loop and writes a JSON with seconds per image, NFE and the settings. Times are CPU wall
times of this process (torch threads as set by --threads), best of --repeats.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from beatgans.cli.loading import load_model
from beatgans.diffusion.guidance import ClassifierFreeGuidance
from beatgans.diffusion.samplers import PerSampleNoise
from beatgans.diffusion.sampling import sample_with

log = logging.getLogger("nfe_walltime")


def openai_diffusion(betas: np.ndarray, steps: int):
    """guided-diffusion's DDIM process over `betas`, respaced with its own `ddim<steps>` stride."""
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion.respace import SpacedDiffusion, space_timesteps

    return SpacedDiffusion(use_timesteps=space_timesteps(len(betas), f"ddim{steps}"), betas=betas,
                           model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.FIXED_SMALL,
                           loss_type=gd.LossType.MSE, rescale_timesteps=False)


def best_of(fn, repeats: int) -> float:
    """The smallest wall time of `repeats` calls of fn() (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="beatgans training run (class-conditional, null class)")
    ap.add_argument("--dpm-steps", type=int, nargs="+", default=[10, 15], help="DPM-Solver++ 2M NFE to time")
    ap.add_argument("--ddim-steps", type=int, default=50, help="guided-diffusion DDIM steps")
    ap.add_argument("--scale", type=float, default=2.0, help="classifier-free weight w")
    ap.add_argument("--num", type=int, default=100, help="images per timed call (one batch)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (must not exist)")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.exists():
        ap.error(f"--out {args.out} exists; pass a new file name.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from guided_diffusion_baseline import build_baseline

    loaded = load_model(args.run, None, None, None)
    net = loaded.net
    if not getattr(net, "null_class", False):
        raise SystemExit(f"--run {args.run} has no null class; pass a run trained with experiment=digits/ddpm_cfg.")
    # guided-diffusion sizes label_emb by num_classes; the null label is one more row, so build it with k + 1.
    k = net.num_classes
    net.num_classes = k + 1
    try:
        theirs_net = build_baseline(net, OmegaConf.to_container(loaded.config.task.net)).eval()
    finally:
        net.num_classes = k
    betas = loaded.diffusion.betas
    betas = betas.cpu().numpy() if torch.is_tensor(betas) else np.asarray(betas)
    gd_process = openai_diffusion(betas.astype(np.float64), args.ddim_steps)

    n = args.num
    shape = (n, net.in_channels, net.image_size, net.image_size)
    labels = torch.arange(n) % k
    ours_model = lambda m: ClassifierFreeGuidance(m, args.scale, k)  # noqa: E731
    theirs_model = ClassifierFreeGuidance(theirs_net, args.scale, k)
    # x_T of sample i is the first draw of seed i, as in sample_with(seed=0): both loops start from it.
    noise = PerSampleNoise(list(range(n)), shape[1:]).randn()
    results = {"run": args.run, "scale": args.scale, "num": n, "threads": args.threads, "repeats": args.repeats,
               "loops": {}}

    outputs = {}

    def record(name: str, nfe: int, fn) -> None:
        with torch.no_grad():
            seconds = best_of(lambda: outputs.__setitem__(name, fn()), args.repeats)
        results["loops"][name] = {"nfe": nfe, "seconds_per_image": seconds / n}
        log.info("%-36s NFE %3d  %.4f s/image", name, nfe, seconds / n)

    record(f"guided-diffusion ddim_sample_loop {args.ddim_steps}", args.ddim_steps,
           lambda: gd_process.ddim_sample_loop(theirs_model, shape, noise=noise, clip_denoised=True,
                                               model_kwargs={"y": labels}))
    record(f"beatgans ddim {args.ddim_steps}", args.ddim_steps,
           lambda: sample_with(net, loaded.diffusion, n, shape[1:], sampler="ddim", steps=args.ddim_steps,
                               labels=labels, num_classes=k, model_wrapper=ours_model))
    # Same network, same guidance, same x_T: the two DDIM loops must give the same images.
    a, b = outputs[f"guided-diffusion ddim_sample_loop {args.ddim_steps}"], outputs[f"beatgans ddim {args.ddim_steps}"]
    results["ddim_max_abs_diff"] = float((a - b).abs().max())
    log.info("max |guided-diffusion - beatgans| after DDIM-%d: %.2e", args.ddim_steps, results["ddim_max_abs_diff"])
    for steps in args.dpm_steps:
        record(f"beatgans dpm_solver 2M {steps}", steps,
               lambda s=steps: sample_with(net, loaded.diffusion, n, shape[1:], sampler="dpm_solver", steps=s,
                                           order=2, labels=labels, num_classes=k, model_wrapper=ours_model))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
