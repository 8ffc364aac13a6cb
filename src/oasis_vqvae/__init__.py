"""oasis-vqvae: a VQ-VAE + PixelCNN generative model of OASIS brain MRI slices."""

__version__ = "0.1.0"
