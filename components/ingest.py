"""Component ingest: read OASIS slices (or make synthetic ones) into a sharded dataset."""

from kfp.dsl import Dataset, Output


def ingest(dataset: Output[Dataset], params: dict, pipeline_run_id: str = ""):
    """Read slices from ``data.source`` (synthetic, folder, .zip, gs://) into TFRecord shards."""
    from oasis_vqvae.kubeflow import run_stage

    run_stage("ingest", params, pipeline_run_id, out=dataset.path)
