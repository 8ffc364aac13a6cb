"""Vector quantizer: the discrete bottleneck of the VQ-VAE.

`VectorQuantizer` owns the codebook, assigns each latent vector to its nearest
code, applies the straight-through estimator and adds its own losses. It knows
nothing about the encoder or decoder around it (as in DeepMind Sonnet's
`VectorQuantizer` / `VectorQuantizerEMA`); both variants share one layer and one
call contract:

- plain (``ema=False``): the codebook is a trainable weight moved by the codebook
  loss ``||sg(z) - q||^2``; the layer adds ``codebook + beta * commitment``.
- EMA (``ema=True``): the codebook is not trainable; while training it is set to
  exponential moving averages of the encoder outputs assigned to each code
  (Laplace-smoothed cluster sizes, van den Oord et al. 2017, appendix A.1); the
  layer adds only ``beta * commitment``.

Optionally, codes that fall out of use are restarted from encoder outputs of the
current batch (``dead_code_threshold > 0``), a guard against codebook collapse, and
the codebook is initialised from encoder outputs of the first training batch
(``data_init=True``), so training does not start with a collapsed codebook.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from oasis_vqvae.distribute import all_replicas

__all__ = ["VectorQuantizer"]


@keras.saving.register_keras_serializable(package="oasis_vqvae")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-neighbour vector quantization with a straight-through gradient.

    Input ``z`` of shape ``(..., embedding_dim)``, typically ``(B, H, W, D)``,
    e.g. ``(32, 32, 32, 16)`` for 128x128 images after two stride-2 convolutions.
    Each of the ``N = B*H*W`` vectors is replaced by its nearest code (squared L2,
    computed as ``||z||^2 - 2 z.e + ||e||^2`` with one ``(N, D) @ (D, K)`` matmul).
    The output ``z + stop_gradient(q - z)`` has the input's shape and passes the
    decoder's gradient straight through to the encoder.

    Losses (means over all elements, added with ``add_loss``):
        codebook_loss   = mean((stop_gradient(z) - q)^2)  (plain variant only)
        commitment_loss = mean((z - stop_gradient(q))^2)
        loss            = codebook_loss + beta * commitment_loss
    In the EMA variant ``codebook_loss`` is reported as 0 (the codebook is moved by
    the moving averages, not by gradients).

    Dead-code restart (``dead_code_threshold > 0``): the layer keeps ``usage``, an
    EMA (decay ``ema_decay``) of the fraction of latent vectors assigned to each
    code (starts at the uniform share ``1/K``). While training, a code whose usage
    falls below ``dead_code_threshold / K`` is re-initialised to a randomly chosen
    latent vector of the current batch and its usage reset to ``1/K``. E.g. with
    ``K=128``, threshold ``0.03`` restarts codes receiving under 0.023% of the
    vectors. Draws come from a seeded ``keras.random.SeedGenerator`` and are
    XLA-safe.

    Under a multi-replica ``tf.distribute`` strategy (``MirroredStrategy``...), the code
    statistics and every codebook update use the whole global batch, gathered from all
    replicas: each replica makes the update one device would make, so the copies of the
    codebook stay identical (averaging per-replica half-batch statistics would not).

    Args:
        num_embeddings: Codebook size ``K`` (>= 2).
        embedding_dim: Code vector size ``D``; the input's last dimension.
        beta: Commitment-loss weight (0.25 in the paper).
        ema: Update the codebook by exponential moving averages instead of
            gradients.
        ema_decay: Decay of the EMA updates and of the usage statistics, in [0, 1).
        epsilon: Laplace smoothing of the EMA cluster sizes.
        dead_code_threshold: Usage threshold, relative to the uniform share, below
            which codes are restarted; 0 disables restarts. In [0, 1).
        data_init: On the first training call, replace the codebook (and the EMA
            statistics) by randomly chosen latent vectors of that batch, as many
            VQ-VAE implementations do; an ``initialized`` flag (saved with the
            weights) makes it happen once. Seeded and XLA-safe like the restarts.
        seed: Seed of the codebook initializer and of the restart draws.
        **kwargs: Base `keras.layers.Layer` arguments (``name``, ``dtype``...).

    Call arguments:
        inputs: float tensor ``(..., D)``.
        training: EMA and restart updates happen only when True.
        return_dict: Return a dict instead of the quantized tensor, with keys
            ``quantized`` ``(..., D)``, ``indices`` int32 ``(...)``, and scalars
            ``loss``, ``codebook_loss``, ``commitment_loss``, ``perplexity`` (exp of
            the entropy of the batch's code histogram, between 1 and K) and
            ``codes_in_use`` (fraction of the K codes used in the batch).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        beta: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        seed: int | None = None,
        data_init: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_embeddings) < 2:
            raise ValueError(f"num_embeddings must be >= 2, got {num_embeddings}.")
        if int(embedding_dim) < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        if not 0.0 <= dead_code_threshold < 1.0:
            raise ValueError(f"dead_code_threshold must be in [0, 1), got {dead_code_threshold}.")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.beta = float(beta)
        self.ema = bool(ema)
        self.ema_decay = float(ema_decay)
        self.epsilon = float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        self.seed = seed
        self.data_init = bool(data_init)
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.restarts_enabled or self.data_init else None
        )

    @property
    def restarts_enabled(self) -> bool:
        """Whether dead codes are restarted (``dead_code_threshold > 0``)."""
        return self.dead_code_threshold > 0

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create the codebook (and the EMA / usage statistics) for ``(..., D)`` inputs."""
        self._check_last_dim(input_shape[-1])
        k, d = self.num_embeddings, self.embedding_dim
        state = dict(autocast=False, aggregation="mean")
        # Codebook (K, D), uniform in +-sqrt(3 / D) as in Sonnet.
        self.embeddings = self.add_weight(
            shape=(k, d),
            initializer=keras.initializers.VarianceScaling(
                1.0, mode="fan_out", distribution="uniform", seed=self.seed
            ),
            trainable=not self.ema,
            autocast=False,
            aggregation="mean",  # updated by assignment too; replicas assign equal values
            name="embeddings",
        )
        if self.ema:
            # Each code starts as if one vector equal to itself had been assigned.
            self.ema_cluster_size = self.add_weight(
                shape=(k,),
                initializer="ones",
                trainable=False,
                name="ema_cluster_size",
                **state,
            )
            self.ema_dw = self.add_weight(
                shape=(k, d),
                initializer="zeros",
                trainable=False,
                name="ema_dw",
                **state,
            )
            self.ema_dw.assign(self.embeddings.value)
        if self.data_init:
            # 0 until the first training batch has initialised the codebook, then 1.
            self.initialized = self.add_weight(
                shape=(),
                initializer="zeros",
                trainable=False,
                name="initialized",
                **state,
            )
        if self.restarts_enabled:
            self.usage = self.add_weight(
                shape=(k,),
                initializer=keras.initializers.Constant(1.0 / k),
                trainable=False,
                name="usage",
                **state,
            )

    def _check_last_dim(self, dim: int | None) -> None:
        if dim is not None and dim != self.embedding_dim:
            raise ValueError(
                f"VectorQuantizer '{self.name}' expects inputs whose last dimension "
                f"is embedding_dim={self.embedding_dim}, got {dim}."
            )

    def _nearest(self, flat: Any) -> Any:
        """Indices (N,) int32 of the nearest codes for flat inputs (N, D)."""
        codebook = self.embeddings.value
        distances = (
            ops.sum(ops.square(flat), axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(codebook))
            + ops.sum(ops.square(codebook), axis=1)[None, :]
        )
        return ops.cast(ops.argmin(distances, axis=1), "int32")

    def call(self, inputs: Any, training: bool | None = None, return_dict: bool = False) -> Any:
        """Quantize ``(..., D)`` inputs; see the class docstring for the arguments."""
        self._check_last_dim(inputs.shape[-1])
        z = ops.cast(inputs, "float32")
        flat = ops.reshape(z, (-1, self.embedding_dim))
        # Under a multi-replica tf.distribute strategy each replica holds a slice of the batch;
        # codebook updates and statistics use the whole batch, gathered from every replica, so
        # all replicas make the same assignments (as one device would) and stay in sync.
        batch_flat = all_replicas(ops.stop_gradient(flat), gather=True) if training else flat
        if training and self.data_init:
            self._init_from_data(batch_flat)

        # Quantization.
        indices = self._nearest(flat)
        quantized = ops.reshape(ops.take(self.embeddings.value, indices, axis=0), ops.shape(z))

        # Losses.
        commitment_loss = _safe_mean_square(z - ops.stop_gradient(quantized))
        if self.ema:
            codebook_loss = ops.zeros((), "float32")
        else:
            codebook_loss = _safe_mean_square(ops.stop_gradient(z) - quantized)
        loss = codebook_loss + self.beta * commitment_loss
        self.add_loss(loss)

        # Codebook statistics (of the whole batch).
        batch_indices = all_replicas(indices, gather=True)
        encodings = ops.one_hot(batch_indices, self.num_embeddings, dtype="float32")
        counts = ops.sum(encodings, axis=0)
        probs = counts / ops.maximum(ops.sum(counts), 1.0)
        perplexity = ops.exp(-ops.sum(probs * ops.log(probs + 1e-10)))
        codes_in_use = ops.mean(ops.cast(counts > 0, "float32"))

        # Codebook updates (training only).
        if training:
            if self.ema:
                self._update_ema(batch_flat, encodings, counts)
            if self.restarts_enabled:
                self._restart_dead_codes(batch_flat, counts)

        # Straight-through estimator.
        outputs = ops.cast(z + ops.stop_gradient(quantized - z), inputs.dtype)
        if not return_dict:
            return outputs
        return {
            "quantized": outputs,
            "indices": ops.reshape(indices, ops.shape(z)[:-1]),
            "loss": loss,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "perplexity": perplexity,
            "codes_in_use": codes_in_use,
        }

    def _update_ema(self, flat: Any, encodings: Any, counts: Any) -> None:
        """EMA of cluster sizes (K,) and sums (K, D); codebook = smoothed means."""
        decay = self.ema_decay
        cluster_size = decay * self.ema_cluster_size.value + (1 - decay) * counts
        dw = decay * self.ema_dw.value + (1 - decay) * ops.matmul(ops.transpose(encodings), flat)
        # Laplace smoothing keeps unused codes from dividing by zero.
        n = ops.sum(cluster_size)
        smoothed = (cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.ema_cluster_size.assign(cluster_size)
        self.ema_dw.assign(dw)
        self.embeddings.assign(dw / smoothed[:, None])

    def _random_rows(self, flat: Any) -> Any:
        """``K`` latent vectors ``(K, D)`` drawn from ``flat`` (zeros if it is empty)."""
        n = ops.shape(flat)[0]
        u = keras.random.uniform((self.num_embeddings,), seed=self.seed_generator)
        rows = ops.minimum(
            ops.cast(ops.floor(u * ops.cast(n, "float32")), "int32"), ops.maximum(n - 1, 0)
        )
        padded = ops.concatenate([flat, ops.zeros((1, self.embedding_dim))], axis=0)
        return ops.stop_gradient(ops.take(padded, rows, axis=0))

    def _init_from_data(self, flat: Any) -> None:
        """Set the codebook to random vectors of the first non-empty training batch."""
        todo = ops.logical_and(
            self.initialized.value < 0.5, ops.cast(ops.shape(flat)[0], "float32") > 0
        )
        candidates = self._random_rows(flat)
        self.embeddings.assign(ops.where(todo, candidates, self.embeddings.value))
        if self.ema:
            self.ema_dw.assign(ops.where(todo, candidates, self.ema_dw.value))
            self.ema_cluster_size.assign(
                ops.where(
                    todo, ops.ones_like(self.ema_cluster_size.value), self.ema_cluster_size.value
                )
            )
        self.initialized.assign(ops.where(todo, 1.0, self.initialized.value))

    def _restart_dead_codes(self, flat: Any, counts: Any) -> None:
        """Re-initialise rarely used codes from random latent vectors of the batch."""
        k = self.num_embeddings
        n = ops.shape(flat)[0]
        n_float = ops.cast(n, "float32")
        has_data = n_float > 0
        # Usage statistics (an empty batch leaves them unchanged).
        fraction = counts / ops.maximum(n_float, 1.0)
        usage = self.usage.value
        usage = ops.where(has_data, self.ema_decay * usage + (1 - self.ema_decay) * fraction, usage)
        dead = ops.logical_and(usage < self.dead_code_threshold / k, has_data)
        # One random batch vector per code; a zero row stands in for an empty batch.
        u = keras.random.uniform((k,), seed=self.seed_generator)
        rows = ops.minimum(ops.cast(ops.floor(u * n_float), "int32"), ops.maximum(n - 1, 0))
        padded = ops.concatenate([flat, ops.zeros((1, self.embedding_dim))], axis=0)
        candidates = ops.take(padded, rows, axis=0)
        dead_rows = dead[:, None]
        self.embeddings.assign(ops.where(dead_rows, candidates, self.embeddings.value))
        self.usage.assign(ops.where(dead, 1.0 / k, usage))
        if self.ema:
            self.ema_dw.assign(ops.where(dead_rows, candidates, self.ema_dw.value))
            self.ema_cluster_size.assign(ops.where(dead, 1.0, self.ema_cluster_size.value))

    def get_code_indices(self, inputs: Any) -> Any:
        """Nearest-code indices: ``(B, H, W, D)`` float -> ``(B, H, W)`` int32."""
        self._check_last_dim(inputs.shape[-1])
        if not self.built:
            self.build(inputs.shape)
        z = ops.cast(inputs, "float32")
        indices = self._nearest(ops.reshape(z, (-1, self.embedding_dim)))
        return ops.reshape(indices, ops.shape(z)[:-1])

    def quantize_indices(self, indices: Any) -> Any:
        """Code vectors of indices: ``(B, H, W)`` int -> ``(B, H, W, D)`` float32.

        Sonnet's ``quantize(indices)``; renamed because `keras.layers.Layer`
        reserves ``quantize`` for weight quantization (int8 etc.).
        """
        if not self.built:
            raise ValueError(
                f"VectorQuantizer '{self.name}' has no codebook yet; call it on "
                "inputs (or build it) first."
            )
        return ops.take(self.embeddings.value, ops.cast(indices, "int32"), axis=0)

    def get_config(self) -> dict[str, Any]:
        """Layer config plus every constructor argument."""
        config = super().get_config()
        config.update(
            num_embeddings=self.num_embeddings,
            embedding_dim=self.embedding_dim,
            beta=self.beta,
            ema=self.ema,
            ema_decay=self.ema_decay,
            epsilon=self.epsilon,
            dead_code_threshold=self.dead_code_threshold,
            seed=self.seed,
            data_init=self.data_init,
        )
        return config


def _safe_mean_square(x: Any) -> Any:
    """Mean of squares; 0 (not NaN) for an empty tensor."""
    size = ops.cast(ops.size(x), "float32")
    return ops.sum(ops.square(x)) / ops.maximum(size, 1.0)
