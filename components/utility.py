"""Component utility: does synthetic data help a classifier? Publish its metrics and report."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def utility(
    dataset: Input[Dataset],
    codes: Input[Dataset],
    pixelcnn: Input[Model],
    samples: Input[Artifact],
    result: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    params: dict,
):
    """Train and score the classifier arms (block ``utility``); show metrics and report in KFP."""
    from oasis_vqvae.kubeflow import publish_evaluation, run_stage

    out = run_stage(
        "utility", params, result,
        data=dataset.path, codes=codes.path, pixelcnn=pixelcnn.path, samples=samples.path,
    )  # fmt: skip
    publish_evaluation(out, metrics, report)
