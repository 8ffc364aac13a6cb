"""A training stage killed after a checkpoint resumes from it when rerun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pandas as pd

from oasis_vqvae.training import checkpoint_dir

EPOCHS = 60


def _command(repo_root, tiny_overrides, dataset, out):
    overrides = [*tiny_overrides, "tracking.enabled=false", f"vqvae.epochs={EPOCHS}"]
    return [
        sys.executable, "-m", "oasis_vqvae", "train-vqvae",
        "--params", str(repo_root / "params.yaml"),
        *[arg for item in overrides for arg in ("--set", item)],
        "--data", str(dataset), "--out", str(out),
    ]  # fmt: skip


def test_killed_train_vqvae_resumes_from_its_checkpoint(
    tiny_dataset, tmp_path, repo_root, tiny_overrides, cli_env
):
    out = tmp_path / "vqvae"
    command = _command(repo_root, tiny_overrides, tiny_dataset, out)
    metadata = checkpoint_dir(out) / "backup" / "training_metadata.json"
    first = subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not metadata.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()
    first.wait()
    assert metadata.exists(), "no checkpoint was written before the deadline"
    killed_after = json.loads(metadata.read_text())["epoch"]
    assert 1 <= killed_after < EPOCHS
    assert not out.exists(), "a killed stage leaves no output"

    second = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = re.search(r"resuming after epoch (\d+) of", second.stderr)
    assert resumed, second.stderr[-3000:]
    assert int(resumed.group(1)) >= killed_after
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == list(range(EPOCHS))
    assert not checkpoint_dir(out).exists()
