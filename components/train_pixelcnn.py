"""Component train-pixelcnn: train the PixelCNN prior on the code grids."""

from kfp.dsl import Dataset, Input, Model, Output


def train_pixelcnn(codes: Input[Dataset], pixelcnn: Output[Model], params: dict):
    """Train the PixelCNN (block ``pixelcnn``).

    Writes pixelcnn.keras, conditions.json, train_conditions.csv, history, plots.
    """
    from oasis_vqvae.kubeflow import run_stage

    run_stage("train-pixelcnn", params, pixelcnn, codes=codes.path)
