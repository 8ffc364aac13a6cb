"""Models: the VQ-VAE, the PixelCNN prior over its code grids, and sampling.

The VQ-VAE is an encoder, a vector quantizer and a decoder, trained by `VQVAETrainer`.
"""

from oasis_vqvae.models.pixelcnn import (
    GatedPixelBlock,
    MaskedConv2D,
    OneHot,
    build_pixelcnn,
    causal_mask,
)
from oasis_vqvae.models.quantizer import VectorQuantizer
from oasis_vqvae.models.sampling import sample_codes
from oasis_vqvae.models.vqvae import (
    VQVAETrainer,
    build_decoder,
    build_encoder,
    build_vqvae,
    decode_codes,
    encode_codes,
    latent_grid_shape,
)

__all__ = [
    "GatedPixelBlock",
    "MaskedConv2D",
    "OneHot",
    "VQVAETrainer",
    "VectorQuantizer",
    "build_decoder",
    "build_encoder",
    "build_pixelcnn",
    "build_vqvae",
    "causal_mask",
    "decode_codes",
    "encode_codes",
    "latent_grid_shape",
    "sample_codes",
]
