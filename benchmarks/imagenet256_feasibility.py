"""Feasibility of the full ADM ImageNet-256 model on a CPU: build it, fill it, run one forward.

    nice -n 5 python benchmarks/imagenet256_feasibility.py [--out feasibility.json] [--threads N]

Steps, each timed: instantiate conf/net/imagenet256_cond.yaml (554M parameters); build guided-diffusion's
UNetModel with the same configuration (random weights) and convert its state dict into ours with
`load_openai_checkpoint` (without the `guided_diffusion` package: our own state dict through the
`to_openai_state_dict` -> `load_openai_checkpoint` round trip); one forward at batch 1 (256 px, one label,
no grad). Memory is the process's peak resident set (ru_maxrss), which includes both models during the
conversion. A benchmark, not a test: it takes minutes and several GB of memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from beatgans.nets import load_openai_checkpoint, to_openai_state_dict

REPO = Path(__file__).resolve().parents[1]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def openai_state_dict(cfg) -> tuple[dict, str]:
    """A random guided-diffusion state dict of `cfg`'s architecture, and where it came from."""
    try:
        from guided_diffusion.script_util import create_model
    except ImportError:
        return {}, "round trip (guided_diffusion not installed)"
    model = create_model(
        image_size=cfg.image_size, num_channels=cfg.model_channels, num_res_blocks=cfg.num_res_blocks,
        learn_sigma=cfg.learn_sigma, class_cond=cfg.num_classes is not None,
        attention_resolutions=",".join(str(r) for r in cfg.attention_resolutions),
        num_head_channels=cfg.num_head_channels, use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown, use_new_attention_order=cfg.use_new_attention_order,
        dropout=cfg.dropout)
    return model.state_dict(), "guided_diffusion.script_util.create_model (random init)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="imagenet256_feasibility.json")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = OmegaConf.load(REPO / "src" / "beatgans" / "conf" / "net" / "imagenet256_cond.yaml")
    result: dict = {"device": platform.processor() or "cpu", "threads": torch.get_num_threads(),
                    "torch": torch.__version__}

    start = time.perf_counter()
    torch.manual_seed(0)
    net = instantiate(cfg).eval()
    result["instantiate_s"] = time.perf_counter() - start
    result["parameters"] = sum(p.numel() for p in net.parameters())

    start = time.perf_counter()
    theirs, source = openai_state_dict(net_cfg := OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    result["openai_build_s"] = time.perf_counter() - start
    if not theirs:
        theirs = to_openai_state_dict(net)
    start = time.perf_counter()
    load_openai_checkpoint(net, theirs)
    result.update(convert_s=time.perf_counter() - start, convert_source=source,
                  openai_parameters=sum(v.numel() for v in theirs.values()))
    del theirs

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, net_cfg.image_size, net_cfg.image_size, generator=g)
    t, y = torch.tensor([500]), torch.tensor([207])
    start = time.perf_counter()
    with torch.no_grad():
        out = net(x, t, y)
    result.update(forward_s=time.perf_counter() - start, output_shape=list(out.shape),
                  output_finite=bool(torch.isfinite(out).all()), peak_rss_gib=_rss_gib())
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
