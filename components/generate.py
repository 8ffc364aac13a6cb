"""Component generate: sample new slices from the PixelCNN and decode them."""

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def generate(
    vqvae: Input[Model],
    pixelcnn: Input[Model],
    samples: Output[Artifact],
    labels: Output[Artifact],
    synthetic: Output[Dataset],
    params: dict,
):
    """Sample code grids (block ``generate``) and decode them.

    Writes PNGs, a grid image, labels.csv (also as ``labels``) and the samples as a
    dataset in ingest's format (also as ``synthetic``).
    """
    from oasis_vqvae.kubeflow import publish_samples, run_stage

    out = run_stage("generate", params, samples, vqvae=vqvae.path, pixelcnn=pixelcnn.path)
    publish_samples(out, labels, synthetic)
