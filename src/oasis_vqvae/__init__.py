"""oasis-vqvae: a VQ-VAE + PixelCNN generative model of OASIS brain MRI slices."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the pipeline's own
# log; errors still surface as Python exceptions. Set TF_CPP_MIN_LOG_LEVEL=0 to see it all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
