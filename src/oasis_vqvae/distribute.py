"""Which ``tf.distribute`` strategy the training stages run under: the one home of that choice.

``vqvae.strategy`` / ``pixelcnn.strategy`` in params.yaml name it:

- ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set (a multi-node job,
  e.g. a Kubeflow ``TFJob``), else ``MirroredStrategy`` over the node's GPUs when more than
  one is visible, else TensorFlow's default strategy (one device);
- ``default``: the default strategy (whatever single device TensorFlow places ops on);
- ``one_device``: ``OneDeviceStrategy`` on the first GPU, or the CPU;
- ``mirrored``: ``MirroredStrategy`` over every visible GPU, or over every logical CPU device
  when there is no GPU (how the tests run it on two logical CPUs);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` (reads ``TF_CONFIG``).

The batch size in params is the GLOBAL batch: each of the N replicas gets ``batch_size / N``
examples per step and gradients are summed across replicas of per-replica means divided by N,
so one step on N replicas is the same step as on one device with the same batch. When you scale
out and raise the batch size k-fold to keep each device busy, scale the learning rate by about k
as well (the linear scaling rule of Goyal et al., 2017, best with a few epochs of warm-up), or
by sqrt(k) for Adam if the linear rule is unstable.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # TensorFlow is imported lazily: the CLI's --help must stay fast
    import tensorflow as tf

log = logging.getLogger(__name__)

StrategyName = Literal["auto", "default", "one_device", "mirrored", "multi_worker"]


def make_strategy(name: StrategyName) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` named ``name`` (see the module docstring)."""
    strategy = _strategy(_auto_choice() if name == "auto" else name)
    log.info(
        "training under %s with %d replica(s)",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy


@functools.cache
def _strategy(name: str) -> tf.distribute.Strategy:
    """One instance per strategy and process.

    Two MirroredStrategy instances in one process (two stages run from one notebook or test)
    reuse collective-op keys and abort each other's steps.
    """
    import tensorflow as tf

    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=_mirrored_devices())
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy((gpus[0] if gpus else _cpus()[0]).name)
    return tf.distribute.get_strategy()


def _auto_choice() -> str:
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return "multi_worker"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def _mirrored_devices() -> list[str]:
    """Every GPU; without GPUs every logical CPU (one CPU makes a one-replica mirror)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [device.name for device in (gpus or _cpus())]


def _cpus() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_logical_devices("CPU")


def scale_for_replicas(loss: Any) -> Any:
    """``loss / num_replicas``: what a custom ``train_step`` differentiates.

    Keras sums gradients over the replicas; a per-replica mean loss divided by their number
    makes that sum the gradient of the global-batch mean (built-in losses do the same).
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)


def all_replicas(value: Any, *, gather: bool = False) -> Any:
    """``value`` summed over the replicas in sync, or concatenated along axis 0 with ``gather``.

    Outside a multi-replica step it is ``value`` itself. Layers that update statistics by
    assignment (the EMA quantizer) use it so every replica sees the global batch and computes
    the same update; otherwise the replicas' copies would drift apart.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    if gather:
        return context.all_gather(value, axis=0)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def data_sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` set to be split between workers and replicas element by element.

    With the TFRecord datasets of this project (few shard files, a cardinality assertion) the
    default policy fails on a short last batch under MirroredStrategy (an AddN of a full and an
    empty replica batch), and file-based sharding needs at least one shard file per worker.
    Element-wise (``DATA``) sharding works for any number of files; under the default strategy
    the option does nothing.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
