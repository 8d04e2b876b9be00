"""beatgans: DDPM / ADM / Diffusion-GAN research framework."""
__version__ = "0.1.0"
