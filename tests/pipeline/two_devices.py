"""Run in a fresh process: split the CPU into two logical devices, then train tiny models.

``tf.config.set_logical_device_configuration`` must run before TensorFlow initialises its
devices, which is why tests run this file with ``python two_devices.py`` instead of in-process.

Usage: ``python two_devices.py PARAMS_YAML DATASET WORKDIR OVERRIDES_JSON``. Trains the
VQ-VAE, extracts codes and trains the PixelCNN with each of ``default`` and ``mirrored``
through the stage functions, then trains the VQ-VAE one epoch under ``mirrored``, "kills" it
and resumes it, runs a bare EMA quantizer under both strategies, and prints one JSON object
with what the test compares.
"""

import json
import logging
import sys
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import pandas as pd  # noqa: E402

from oasis_vqvae import tracking, training  # noqa: E402
from oasis_vqvae.config import load_params  # noqa: E402
from oasis_vqvae.distribute import make_strategy  # noqa: E402
from oasis_vqvae.stages.extract_codes import extract_codes  # noqa: E402
from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn  # noqa: E402
from oasis_vqvae.stages.train_vqvae import train_vqvae  # noqa: E402


def losses(model_dir: Path) -> dict[str, list[float]]:
    history = pd.read_csv(model_dir / "history.csv")
    return {"loss": history["loss"].tolist(), "val_loss": history["val_loss"].tolist()}


def train_both(params_file: str, dataset: Path, work: Path, overrides: list[str], name: str):
    strategy = [f"vqvae.strategy={name}", f"pixelcnn.strategy={name}"]
    params = load_params(params_file, [*overrides, *strategy])
    vqvae = train_vqvae(params, dataset, work / name / "vqvae")
    # The same codes for both strategies, so that the PixelCNNs see the same data.
    codes = work / "codes"
    if not codes.exists():
        extract_codes(params, dataset, vqvae, codes)
    pixelcnn = train_pixelcnn(params, codes, work / name / "pixelcnn")
    return {"vqvae": losses(vqvae), "pixelcnn": losses(pixelcnn)}


def resume_vqvae(params_file: str, dataset: Path, work: Path, overrides: list[str]):
    """One epoch under mirrored, then a fresh model under mirrored resumes to two epochs."""
    import keras

    from oasis_vqvae.data.shards import load_split
    from oasis_vqvae.models import VQVAETrainer
    from oasis_vqvae.stages.train_vqvae import build_model

    params = load_params(params_file, [*overrides, "vqvae.strategy=mirrored"])
    cfg = params.vqvae
    workdir = work / "resume"
    histories = []
    for epochs in (1, 2):
        strategy = make_strategy(cfg.strategy)
        with strategy.scope():
            trainer = VQVAETrainer(build_model(cfg, 32))
            trainer.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate))
            trainer.build((None, 32, 32, 1))

        def train(epoch: int):
            seed = training.epoch_seed(0, epoch)
            return load_split(dataset, "train", batch_size=cfg.batch_size, shuffle=True, seed=seed)

        validation = load_split(dataset, "validate", batch_size=cfg.batch_size)
        with tracking.stage_run("train-vqvae", params) as run:
            history = training.fit_resumable(
                trainer, train, validation, epochs=epochs, workdir=workdir,
                key="resume-test", monitor="val_loss", mode="min", run=run,
            )  # fmt: skip
        histories.append(history["epoch"].tolist())
    return {"replicas": strategy.num_replicas_in_sync, "epochs": histories}


def quantizer_updates(name: str) -> dict[str, list]:
    """Three EMA training calls of a quantizer (data init, restarts on) under ``name``.

    Returns the codebook and EMA cluster sizes of every replica's copy of the variables.
    """
    import numpy as np

    from oasis_vqvae.models.quantizer import VectorQuantizer

    strategy = make_strategy(name)
    latents = np.random.default_rng(0).normal(size=(48, 4, 4, 8)).astype("float32")
    with strategy.scope():
        quantizer = VectorQuantizer(
            16, 8, ema=True, ema_decay=0.9, dead_code_threshold=0.9, data_init=True, seed=0
        )
        quantizer.build((None, 4, 4, 8))
    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(latents).batch(16)
    )

    @tf.function
    def step(batch):
        strategy.run(lambda z: quantizer(z, training=True), args=(batch,))

    for batch in batches:
        step(batch)
    return {
        variable: [
            np.asarray(copy).tolist()
            for copy in strategy.experimental_local_results(getattr(quantizer, variable).value)
        ]
        for variable in ("embeddings", "ema_cluster_size")
    }


def main() -> None:
    params_file, dataset, work, overrides = sys.argv[1:5]
    dataset, work, overrides = Path(dataset), Path(work), json.loads(overrides)
    logging.basicConfig(level=logging.INFO)
    result = {
        "devices": [d.name for d in tf.config.list_logical_devices("CPU")],
        "default": train_both(params_file, dataset, work, overrides, "default"),
        "mirrored": train_both(params_file, dataset, work, overrides, "mirrored"),
        "resume": resume_vqvae(params_file, dataset, work, overrides),
        "quantizer": {name: quantizer_updates(name) for name in ("default", "mirrored")},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
