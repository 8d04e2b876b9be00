"""`beatgans-sample ckpt=<OpenAI .pt> net=imagenet256_cond diffusion=adm` samples exactly as guided-diffusion's
sampling script would with the same flags, weights, labels and noise (reduced width / resolution for CPU)."""

import pytest
import torch

from beatgans.cli.sample import generate
from tests.conftest import compose
from tests.oracle_sampling import assert_same_uint8, oracle_samples_uint8, perturbed

gd_unet = pytest.importorskip("guided_diffusion.unet")
pytest.importorskip("guided_diffusion.respace")


def _oracle_model():
    # The 256x256_diffusion.pt flags (learned sigma, BigGAN resblocks, AdaGN, attention at 32/16/8 px,
    # 64 channels per head), with width and resolution reduced so the CPU runs it in seconds.
    torch.manual_seed(0)
    model = gd_unet.UNetModel(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=2,
                              attention_resolutions=(1, 2, 4), dropout=0.0, channel_mult=(1, 2, 2),
                              num_classes=1000, num_head_channels=32, use_scale_shift_norm=True,
                              resblock_updown=True)
    return perturbed(model)  # no zero-initialised layer left, so every weight matters


@pytest.mark.parametrize("sampler,steps", [("ddpm", "10"), ("ddim", "ddim10")])
def test_sample_cli_equals_guided_diffusion_script(tmp_path, sampler, steps):
    oracle = _oracle_model()
    ckpt = tmp_path / "256x256_diffusion.pt"
    torch.save(oracle.state_dict(), ckpt)
    n, labels = 3, [5, 17, 999]
    cfg = compose("sample", [f"ckpt={ckpt}", "net=imagenet256_cond", "diffusion=adm", f"sampler={sampler}",
                             f"sampler.steps={steps}", f"num_samples={n}", "batch_size=2", f"classes={labels}",
                             "net.image_size=32", "net.model_channels=32", "net.channel_mult=[1,2,2]",
                             "net.num_head_channels=32", "seed=11", "judge=false"], output_dir=tmp_path / "out")
    ours, ours_labels, _ = generate(cfg)
    assert ours_labels.tolist() == labels

    # guided-diffusion: create_gaussian_diffusion(linear, learn_sigma, timestep_respacing) + p_sample_loop
    # (or ddim_sample_loop), fed our per-sample noise: x_T first, then one draw per step.
    ref_u8 = oracle_samples_uint8(oracle, "linear", 1000, steps, sampler, [11 + i for i in range(n)], (3, 32, 32),
                                  rescale_timesteps=False, model_kwargs={"y": torch.tensor(labels)})
    assert_same_uint8(ours, ref_u8)
