"""Component generate: sample new slices from the PixelCNN and decode them."""

from kfp.dsl import Artifact, Input, Model, Output


def generate(vqvae: Input[Model], pixelcnn: Input[Model], samples: Output[Artifact], params: dict):
    """Sample code grids (block ``generate``) and decode them; writes PNGs and a grid image."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage("generate", params, samples, vqvae=vqvae.path, pixelcnn=pixelcnn.path)
