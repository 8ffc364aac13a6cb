"""Component ingest: read OASIS slices (or make synthetic ones) into a sharded dataset."""

from kfp.dsl import Dataset, Output


def ingest(dataset: Output[Dataset], params: dict):
    """Read slices from ``data.source`` (synthetic, folder, .zip, gs://) into TFRecord shards."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage("ingest", params, dataset)
