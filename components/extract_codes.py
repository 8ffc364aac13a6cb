"""Component extract-codes: encode every slice into its grid of discrete codes."""

from kfp.dsl import Dataset, Input, Model, Output


def extract_codes(
    dataset: Input[Dataset], vqvae: Input[Model], codes: Output[Dataset], params: dict
):
    """Encode every split with the VQ-VAE; writes one code-grid array per split and usage."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage("extract-codes", params, codes, data=dataset.path, vqvae=vqvae.path)
