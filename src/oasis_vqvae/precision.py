"""Which floating-point precision the models train in: the one home of that choice.

``vqvae.precision`` and ``pixelcnn.precision`` in params.yaml name a Keras dtype policy:

- ``float32``: everything in float32;
- ``mixed_bfloat16``: layers compute in bfloat16, variables stay float32 (Keras mixed
  precision). Fast where the hardware has bfloat16 arithmetic: GPUs of compute capability
  8.0 or more (A100, L4, H100), and CPUs with AVX512_BF16 or AMX (Intel Cooper Lake,
  Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere it is emulated and slower;
- ``mixed_float16``: layers compute in float16 with dynamic loss scaling, for GPUs of
  compute capability 7.x (V100, T4), whose tensor cores have float16 but not bfloat16;
- ``auto``: ``mixed_bfloat16`` or ``mixed_float16`` where the hardware runs it natively
  (every visible GPU, or the CPU when there is no GPU), else ``float32``.

Whatever the choice, the layers where rounding would hurt compute in float32 (the VQ-VAE's
quantizer, the projection into it and its output image layer; the PixelCNN's embedding and
logits), and the training stages save float32 models: the precision speeds up training and
changes nothing downstream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # TensorFlow is imported lazily: the CLI's --help must stay fast
    import keras

log = logging.getLogger(__name__)

PrecisionName = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
Policy = Literal["float32", "mixed_bfloat16", "mixed_float16"]

_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_precision(name: PrecisionName) -> Policy:
    """The Keras dtype policy for ``name``; ``auto`` looks at the hardware (module docstring)."""
    policy: Policy = _auto_choice() if name == "auto" else name
    log.info("training in %s%s", policy, " (auto)" if name == "auto" else "")
    return policy


def with_loss_scaling(optimizer: keras.Optimizer, policy: Policy) -> keras.Optimizer:
    """``optimizer``, wrapped in dynamic loss scaling under mixed_float16 (float16 underflows)."""
    import keras

    if policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def as_float32(
    model: keras.Model, policy: Policy, build: Callable[[Policy], keras.Model]
) -> keras.Model:
    """``model``, trained in ``policy``, as a model that computes in float32 (to save).

    Under float32 that is ``model`` itself; else ``build("float32")`` given its weights,
    which mixed policies keep in float32.
    """
    if policy == "float32":
        return model
    copy = build("float32")
    copy.set_weights(model.get_weights())
    return copy


@functools.cache
def _auto_choice() -> Policy:
    import tensorflow as tf

    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    return native_policy(capabilities, cpu_flags())


def native_policy(gpu_capabilities: list[tuple[int, int]], cpu_flags: frozenset[str]) -> Policy:
    """The fastest policy the hardware runs natively: every GPU's, else the CPU's."""
    if gpu_capabilities:
        oldest = min(gpu_capabilities)
        if oldest >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if oldest >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_flags & _BF16_CPU_FLAGS else "float32"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file is missing."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()
