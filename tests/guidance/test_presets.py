"""The guidance presets compose as the papers need: the digits classifier shares digits/ddpm's process, the
CFG model trains with a null label, the unconditional one without labels; the ImageNet classifiers follow
ADM's recipe and each matches the diffusion of the model it guides."""

import pytest
from hydra.utils import instantiate

from tests.conftest import compose


def _train(*overrides):
    return compose("train", list(overrides))


def test_digits_classifier_shares_the_ddpm_process_and_resolution():
    clf, ddpm = _train("experiment=digits/classifier"), _train("experiment=digits/ddpm")
    assert clf.task._target_.endswith("NoisyClassifierModule") and clf.net._target_.endswith("EncoderClassifier")
    assert clf.diffusion == ddpm.diffusion and clf.data.image_size == ddpm.data.image_size == 16
    assert (clf.diffusion.schedule, clf.diffusion.num_timesteps) == ("linear", 1000)
    assert (clf.task.noised and clf.task.optimizer._target_ == "torch.optim.AdamW"
            and clf.task.optimizer.weight_decay > 0)


def test_digits_cfg_and_unconditional_presets():
    cfg = _train("experiment=digits/ddpm_cfg")
    assert cfg.net.null_class and 0.1 <= cfg.task.p_uncond <= 0.2 and cfg.data.num_classes == 10
    module = instantiate(cfg.task)
    assert module.p_uncond == cfg.task.p_uncond and module.net.null_class
    uncond = _train("experiment=digits/ddpm_uncond")
    assert uncond.data.num_classes is None and uncond.task.num_classes is None
    assert instantiate(uncond.net).num_classes is None
    assert uncond.diffusion == cfg.diffusion


@pytest.mark.parametrize("res,model,lr,wd", [(64, "imagenet64/adm", 6e-4, 0.2), (128, "imagenet128/adm", 3e-4, 0.05),
                                             (256, "imagenet256/adm_cond", 3e-4, 0.05)])
def test_imagenet_classifier_presets(res, model, lr, wd):
    clf, diff = _train(f"experiment=imagenet{res}/classifier"), _train(f"experiment={model}")
    assert clf.task.optimizer.lr == lr and clf.task.optimizer.weight_decay == wd and clf.task.anneal_lr
    assert clf.data.global_batch_size == 256 and clf.net.image_size == res and clf.net.num_classes == 1000
    assert clf.net.num_res_blocks == (4 if res == 64 else 2) and clf.net.model_channels == 128
    assert ((clf.diffusion.schedule, clf.diffusion.num_timesteps)
            == (diff.diffusion.schedule, diff.diffusion.num_timesteps))
