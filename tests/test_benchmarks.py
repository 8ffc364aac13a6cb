"""The benchmark scripts still run end to end (tiny sizes) and end with their ratio line.

Times are never asserted: only that each script measures both sides and prints the ratio.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oasis_vqvae.config import load_params

REPO = Path(__file__).resolve().parents[1]


def _last_line(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_ingest_benchmark_prints_its_ratio():
    line = _last_line("benchmarks/ingest.py", "--count", "120", "--rounds", "1")
    assert re.fullmatch(r"ingest_vs_naive: \d+\.\d\d", line), line


def test_sampling_benchmark_prints_its_ratio():
    line = _last_line("benchmarks/sampling.py", "--quick", "--grids", "8", "64", "--batch", "2")
    assert re.fullmatch(r"speedup_64x64: \d+\.\d", line), line


@pytest.mark.slow
def test_train_throughput_benchmark_prints_its_ratio():
    line = _last_line(
        "benchmarks/train_throughput.py", "--sizes", "32", "--steps", "2", "--warmup", "1"
    )
    assert re.fullmatch(r"train_vs_baseline: \d+\.\d\d", line), line


def test_nearest_neighbours_benchmark_prints_its_ratio():
    line = _last_line("benchmarks/nearest_neighbours.py", "--quick")
    assert re.fullmatch(r"nearest_vs_naive: \d+\.\d\d", line), line


def test_prior_throughput_benchmark_prints_its_ratio():
    line = _last_line(
        "benchmarks/prior_throughput.py", "--quick", "--grid", "8", "--batch", "2", "--steps", "2"
    )
    assert re.fullmatch(r"prior_vs_keras: \d+\.\d\d", line), line


# benchmarks/quality.py trains the whole pipeline: hours at its default scale on this CPU and
# several minutes even with --quick (six stage processes, each importing TensorFlow), so the
# tests check what it runs (params, commands), not a run.


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_benchmark_writes_the_preset_with_its_scale(tmp_path):
    result = subprocess.run(
        [
            sys.executable, "benchmarks/quality.py", "--dry-run", "--workdir", str(tmp_path),
            "--size", "128", "--subjects", "60", "--set", "vqvae.epochs=3",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    params = load_params(tmp_path / "params.yaml")
    assert params.data.source == "synthetic"
    assert (params.data.image_size, params.data.synthetic.subjects) == (128, 60)
    assert params.data.synthetic.slices_per_subject == 24  # the default scale
    assert not params.tracking.enabled
    assert params.vqvae.epochs == 3  # --set comes last
    preset = load_params(REPO / "params" / "oasis.yaml")
    assert params.vqvae.filters == preset.vqvae.filters
    for block in ("pixelcnn", "generate", "evaluate"):
        assert getattr(params, block) == getattr(preset, block)
    assert result.stdout.strip().splitlines()[-1].startswith("budget: 60 wall minutes")


def test_quality_benchmark_runs_the_dvc_stages(tmp_path):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = _quality_module().stages(tmp_path, tmp_path / "params.yaml")
    assert [name for name, _ in commands] == [name for name in stages if name != "utility"]
    for name, command in commands:
        assert command[:3] == [sys.executable, "-m", "oasis_vqvae"]
        # The same command line as dvc.yaml's, paths under the work directory.
        ours = " ".join(command[3:]).replace(f"{tmp_path}/", "")
        assert ours == stages[name]["cmd"].removeprefix("oasis-vqvae ")


def test_quality_benchmark_bad_setting_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--dry-run", "--workdir", str(tmp_path),
         "--set", "vqvae.epoch=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"quality: {REPO / 'params' / 'oasis.yaml'}: vqvae.epoch: unknown key (check the "
        "spelling against params.yaml)"
    )


def test_quality_summary_reads_the_evaluate_metrics(tmp_path):
    module = _quality_module()
    metrics = {"test_slices": 360, "held_out_slices": 720, "samples": 1024}
    for key, value in (
        ("ssim_mean", 0.96), ("c2st_accuracy", 0.7), ("c2st_reconstructions_accuracy", 0.6),
        ("precision", 0.9), ("recall", 0.85), ("density", 1.0), ("coverage", 0.75),
        ("level_tv_distance", 0.1),
    ):  # fmt: skip
        metrics |= {key: value, f"{key}_ci_low": value - 0.05, f"{key}_ci_high": value + 0.05}
    readme = (REPO / "README.md").read_text()
    undocumented = [key for key in metrics if "_ci_" not in key and f"`{key}`" not in readme]
    assert not undocumented, f"not keys of evaluate's metrics.json (README): {undocumented}"
    lines = module.summary(metrics, tmp_path)
    text = "\n".join(lines)
    assert "C2ST vs real held-out   0.700 [0.650, 0.750]" in text
    assert "target <= 0.65: missed" in text  # the C2ST
    assert "recall                  0.850 [0.800, 0.900]  (target >= 0.8: met)" in text
    assert "coverage                0.750 [0.700, 0.800]  (target >= 0.8: missed)" in text
    assert lines[-2].endswith(str(tmp_path / "samples_by_level.png"))
