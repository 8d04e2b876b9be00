"""Learned-sigma / hybrid-loss training on the digits, then `beatgans-nll` on the checkpoint."""

import math

from beatgans.cli.nll import evaluate_nll
from beatgans.cli.train import train
from tests.conftest import compose


def test_hybrid_training_then_bits_per_dim(tiny_train_cfg, tmp_path):
    run = tmp_path / "iddpm"
    cfg = tiny_train_cfg("diffusion=iddpm", "diffusion.num_timesteps=30", "net.learn_sigma=true",
                         "task.val_bpd_batches=1", "data.batch_size=8", "trainer.val_check_interval=3", out=run)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/vb"]) and metrics["val/bpd"] > 0
    nll_cfg = compose("nll", [f"run={run}", "data.image_size=8", "batch_size=8", "num_batches=1"],
                      output_dir=tmp_path / "nll")
    out = evaluate_nll(nll_cfg)
    assert out["nll_images"] == 8
    # Total = prior + all vb terms; the decoder term is one of them, so it is below the total.
    assert 0 < out["prior_bpd"] < out["bpd"] and 0 < out["decoder_bpd"] < out["bpd"]
    # The same number from the diffusion object directly (same per-sample seeds, same weights).
    from beatgans.cli.loading import load_model
    from beatgans.data.datamodules import DigitsDataModule
    from beatgans.diffusion import PerSampleNoise

    loaded = load_model(str(run), None, None, None)
    dm = DigitsDataModule(image_size=8, batch_size=8, seed=0)
    dm.setup()
    x, y = next(iter(dm.val_dataloader()))
    direct = loaded.diffusion.calc_bpd_loop(loaded.net, x, model_kwargs={"y": y},
                                            noise=PerSampleNoise(list(range(8)), (1, 8, 8), "cpu"))
    assert abs(direct["total_bpd"].mean().item() - out["bpd"]) < 1e-5
