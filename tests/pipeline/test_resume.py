"""A training stage interrupted after a checkpoint and rerun ends exactly where an uninterrupted
run ends: the same history, bit for bit, and the same weights (CPU, float32).

The interruption is real: the stage function runs with one more ``checks`` callback of its
real ``fit_resumable``, which raises right after the checkpoint of epoch ``KILL_AFTER`` is
written; the rerun is the plain stage function with a fresh model. That the two end identical
checks what a resume must restore: the weights, the optimizer's state (Adam moments, step
count), the quantizer's random generator (code restarts), and the data order of every later
epoch. (tests/gcs/test_stages_gcs.py kills a CLI process with SIGKILL at the same point.)
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from oasis_vqvae import training
from oasis_vqvae.stages.common import load_model
from oasis_vqvae.stages.extract_codes import extract_codes
from oasis_vqvae.stages.train_pixelcnn import train_pixelcnn
from oasis_vqvae.stages.train_vqvae import train_vqvae
from oasis_vqvae.training import checkpoint_dir

EPOCHS = 3
KILL_AFTER = 2  # epochs done when the run is interrupted
EXACT = [
    f"vqvae.epochs={EPOCHS}",
    f"pixelcnn.epochs={EPOCHS}",
    "vqvae.precision=float32",
    "pixelcnn.precision=float32",
    "vqvae.strategy=default",
    "pixelcnn.strategy=default",
    "pixelcnn.learning_rate_schedule=cosine",  # the rate is a function of the restored step
]


# oneDNN's notice shows only on CPUs where TensorFlow turns oneDNN on by default (Intel AVX-512).
TF_STARTUP = re.compile(
    r"absl::InitializeLog|cudart_stub\.cc.*Could not find cuda drivers"
    r"|port\.cc.*oneDNN custom operations are on"
)


class Interrupted(Exception):
    """Stands for the process being killed after a checkpoint."""


@pytest.fixture(scope="module")
def params(tiny_params):
    return tiny_params(*EXACT)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dataset, params):
    """Each training stage run once without interruption, and the codes between them."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train_vqvae(params, tiny_dataset, root / "vqvae")
    extract_codes(params, tiny_dataset, root / "vqvae", root / "codes")
    train_pixelcnn(params, root / "codes", root / "pixelcnn")
    return root


def _interrupted_then_resumed(monkeypatch, caplog, stage, out) -> None:
    fit_resumable = training.fit_resumable

    class Interrupt(keras.callbacks.Callback):  # runs after the epoch's checkpoint is written
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == KILL_AFTER:
                raise Interrupted

    def interrupted_fit(*args, checks=(), **kwargs):
        return fit_resumable(*args, checks=[*checks, Interrupt()], **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(training, "fit_resumable", interrupted_fit)
        with pytest.raises(Interrupted):
            stage(out)
    assert not out.exists(), "an interrupted stage leaves no output"
    assert (checkpoint_dir(out) / "backup" / "training_metadata.json").exists()
    with caplog.at_level(logging.INFO, logger="oasis_vqvae.training"):
        stage(out)
    assert f"resuming after epoch {KILL_AFTER} of {EPOCHS}" in caplog.text
    assert not checkpoint_dir(out).exists(), "checkpoints are removed after success"


def _assert_identical(a, b, model_file):
    history_a, history_b = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert list(history_b["epoch"]) == list(range(EPOCHS))
    pd.testing.assert_frame_equal(history_a, history_b, check_exact=True)
    weights_a, weights_b = (load_model(path, model_file).get_weights() for path in (a, b))
    assert len(weights_a) == len(weights_b)
    for index, (wa, wb) in enumerate(zip(weights_a, weights_b, strict=True)):
        assert wa.dtype == wb.dtype and np.array_equal(wa, wb), f"weight {index} differs"
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()


def test_interrupted_train_vqvae_resumes_to_the_uninterrupted_result(
    uninterrupted, tiny_dataset, params, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "vqvae"
    _interrupted_then_resumed(
        monkeypatch, caplog, lambda out: train_vqvae(params, tiny_dataset, out), out
    )
    _assert_identical(uninterrupted / "vqvae", out, "vqvae.keras")


def test_interrupted_train_pixelcnn_resumes_to_the_uninterrupted_result(
    uninterrupted, params, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "pixelcnn"
    codes = uninterrupted / "codes"
    _interrupted_then_resumed(
        monkeypatch, caplog, lambda out: train_pixelcnn(params, codes, out), out
    )
    _assert_identical(uninterrupted / "pixelcnn", out, "pixelcnn.keras")


def test_logs_outside_a_terminal_are_lines_not_redraws(
    uninterrupted, repo_root, tiny_overrides, cli_env, tmp_path
):
    """With stdout and stderr to a pipe (as `dvc repro > log`): no progress-bar redraws, one
    line per epoch, and little else (TensorFlow's start-up chatter silenced)."""
    overrides = [*tiny_overrides, *EXACT, "tracking.enabled=false"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oasis_vqvae",
            "train-pixelcnn",
            "--params",
            str(repo_root / "params.yaml"),
            *[arg for item in overrides for arg in ("--set", item)],
            "--codes",
            str(uninterrupted / "codes"),
            "--out",
            str(tmp_path / "pixelcnn"),
        ],  # fmt: skip
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert "\r" not in text and "\x1b[" not in text, f"redraws: {text[-2000:]!r}"
    # What TensorFlow's C++ side prints through absl before logging is set up, whatever
    # TF_CPP_MIN_LOG_LEVEL says (twice each: two of its libraries load); nothing else of it.
    tf_startup = [line for line in text.splitlines() if TF_STARTUP.search(line)]
    assert len(tf_startup) <= 6, text
    lines = [line for line in text.splitlines() if not TF_STARTUP.search(line)]
    per_epoch = [line for line in lines if re.search(rf"epoch \d+/{EPOCHS} ", line)]
    assert len(per_epoch) == EPOCHS, text
    # The strategy, the precision, the epochs and the result: a line each.
    assert len(lines) <= 3 + EPOCHS, f"{len(lines)} lines:\n{text}"


def test_the_train_step_is_traced_once(tmp_path):
    """The optimizer's variables exist before fit: made inside the first traced step, they
    make TensorFlow trace it a second time (about 10 s of each training stage's start)."""
    import tensorflow as tf

    from oasis_vqvae.tracking import StageRun

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    x = np.zeros((8, 4), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)
    training.fit_resumable(
        model, lambda epoch: data, data, epochs=2, workdir=tmp_path / "work", key="k",
        monitor="val_loss", mode="min", run=StageRun(),
    )  # fmt: skip
    assert len(traces) == 1
