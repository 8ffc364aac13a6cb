"""Component evaluate: score reconstructions and samples; publish metrics and the report."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    vqvae: Input[Model],
    pixelcnn: Input[Model],
    samples: Input[Artifact],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    params: dict,
):
    """Write metrics.json, figures and report.html; show the metrics and report in the KFP UI."""
    from oasis_vqvae.kubeflow import publish_evaluation, run_stage

    out = run_stage(
        "evaluate", params, evaluation,
        data=dataset.path, vqvae=vqvae.path, pixelcnn=pixelcnn.path, samples=samples.path,
    )  # fmt: skip
    publish_evaluation(out, metrics, report)
