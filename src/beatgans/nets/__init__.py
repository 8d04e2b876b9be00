"""Networks: the ADM UNet, ADM's noisy encoder classifier and OpenAI checkpoint conversion.

Pure torch (no Lightning, no Hydra): ``from beatgans.nets import UNet`` works in a notebook.
"""

from beatgans.nets.classifier import EncoderClassifier
from beatgans.nets.convert import CheckpointMismatchError, load_openai_checkpoint, to_openai_state_dict
from beatgans.nets.ema import EMA, ema_state_dict_from_checkpoint
from beatgans.nets.unet import SuperResUNet, UNet, default_channel_mult

__all__ = [
    "CheckpointMismatchError",
    "EMA",
    "EncoderClassifier",
    "SuperResUNet",
    "UNet",
    "default_channel_mult",
    "ema_state_dict_from_checkpoint",
    "load_openai_checkpoint",
    "to_openai_state_dict",
]
from beatgans.nets.autoencoder import AutoencoderKL, DiagonalGaussian, compute_scale_factor  # noqa: E402,F401
from beatgans.nets.gan import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator, SNGANGenerator  # noqa: E402,F401
