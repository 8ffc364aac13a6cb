"""Component extract-codes: encode every slice into its grid of discrete codes."""

from kfp.dsl import Dataset, Input, Model, Output


def extract_codes(
    dataset: Input[Dataset],
    vqvae: Input[Model],
    codes: Output[Dataset],
    params: dict,
    pipeline_run_id: str = "",
):
    """Encode every split with the VQ-VAE; writes one code-grid array per split and usage."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage(
        "extract-codes", params, pipeline_run_id,
        data=dataset.path, vqvae=vqvae.path, out=codes.path,
    )  # fmt: skip
