"""Component train-vqvae: train the VQ-VAE on the dataset's train split."""

from kfp.dsl import Dataset, Input, Model, Output


def train_vqvae(dataset: Input[Dataset], vqvae: Output[Model], params: dict):
    """Train the VQ-VAE (block ``vqvae``); writes vqvae.keras, history.csv, plots, metrics.json."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage("train-vqvae", params, vqvae, data=dataset.path)
