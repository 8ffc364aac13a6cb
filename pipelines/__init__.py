"""The Kubeflow Pipelines DAG of the oasis-vqvae stages, and its command line.

``pipelines.pipeline`` wires the components of ``components/`` into the DAG;
``pipelines.runs`` compiles it, runs it with ``kfp.local`` or submits it;
``python -m pipelines`` is the command line over both.
"""
