"""The oracle network for `beatgans-bench`: OpenAI guided-diffusion's UNetModel (PyPI `guided-diffusion-sdk`)
with the configuration and weights of our UNet. Lives outside `src/` so the product never imports the oracle;
`src/beatgans/conf/bench.yaml: baseline_file` points here."""

from __future__ import annotations

import torch

from beatgans.nets import default_channel_mult, to_openai_state_dict


def build_baseline(net, net_cfg: dict) -> torch.nn.Module:
    """guided-diffusion's UNetModel with ``net``'s configuration and weights (raises ImportError if absent)."""
    import guided_diffusion.unet as gd_unet

    size = net.image_size
    model = gd_unet.UNetModel(
        image_size=size, in_channels=net.in_channels, model_channels=net.model_channels,
        out_channels=net.out_channels, num_res_blocks=net_cfg["num_res_blocks"],
        # theirs takes downsample factors, ours resolutions
        attention_resolutions=tuple(size // r for r in net_cfg["attention_resolutions"]),
        dropout=net_cfg.get("dropout", 0.0),
        channel_mult=tuple(net_cfg.get("channel_mult") or default_channel_mult(size)),
        num_classes=net.num_classes, num_heads=net_cfg.get("num_heads", 1),
        num_head_channels=net_cfg.get("num_head_channels", -1),
        num_heads_upsample=net_cfg.get("num_heads_upsample", -1),
        use_scale_shift_norm=net_cfg.get("use_scale_shift_norm", True),
        resblock_updown=net_cfg.get("resblock_updown", False),
        use_new_attention_order=net_cfg.get("use_new_attention_order", False),
    )
    model.load_state_dict(to_openai_state_dict(net))
    return model


def guided_ddim_loop(schedule: str, steps: int, learn_sigma: bool):
    """guided-diffusion's respaced DDIM loop as `fn(model, shape, x_T, model_kwargs, cond_fn) -> samples`, to time
    against ours with the same networks (their loop hands the model and cond_fn the original timesteps too)."""
    from guided_diffusion.script_util import create_gaussian_diffusion

    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=learn_sigma, noise_schedule=schedule,
                                          timestep_respacing=f"ddim{steps}")

    def loop(model, shape, x_T, model_kwargs, cond_fn):
        return diffusion.ddim_sample_loop(model, shape, noise=x_T, clip_denoised=True, model_kwargs=model_kwargs,
                                          cond_fn=cond_fn, device=x_T.device)

    return loop
