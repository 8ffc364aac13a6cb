"""The benchmark scripts still run end to end (tiny sizes) and end with their ratio line.

Times are never asserted: only that each script measures both sides and prints the ratio.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_diversity_benchmark_prints_its_ratio():
    line = _last_line("benchmarks/diversity.py", "--quick")
    assert re.fullmatch(r"diversity_vs_per_pair: \d+\.\d\d", line), line


def test_startup_benchmark_prints_its_ratio():
    # A light module: the test checks that both sides are timed, not TensorFlow's import.
    line = _last_line("benchmarks/startup.py", "--module", "oasis_vqvae.config", "--rounds", "1")
    assert re.fullmatch(r"startup_vs_source: \d+\.\d\d", line), line


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
    assert "budget: 60 wall minutes" in result.stdout.splitlines()


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
    from oasis_vqvae import fidelity, metrics
    from oasis_vqvae.stages.evaluate import two_sample_metrics

    # Keys as the evaluate stage's own functions name them.
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))

    def c2st(accuracy: float) -> metrics.TwoSampleResult:
        return metrics.TwoSampleResult(
            accuracy, accuracy - 0.05, accuracy + 0.05, 200, 150, 10, (), (), 4
        )

    values = {
        **two_sample_metrics("c2st", c2st(0.7)),
        **two_sample_metrics("c2st_reconstructions", c2st(0.6)),
        **two_sample_metrics("c2st_autoencoder", c2st(0.55)),
        **fidelity.coverage_values(real, np.arange(60) // 6, fake, k=5, resamples=20, seed=0),
        **metrics.Estimate(0.1, 0.05, 0.15).as_metrics("level_tv_distance"),
        **metrics.Estimate(0.0625, 0.05, 0.08).as_metrics("broken_share"),
        **metrics.Estimate(0.0, 0.0, 0.0).as_metrics("broken_share_real"),
        **metrics.Estimate(0.85, 0.8, 0.9).as_metrics("fine_detail_samples"),
        **metrics.Estimate(0.9, 0.88, 0.92).as_metrics("fine_detail_reconstructions"),
        "ssim_mean": 0.96, "ssim_std": 0.01, "ssim_p05": 0.94,
        "test_slices": 360, "held_out_slices": 720, "samples": 1024,
    }  # fmt: skip
    readme = (REPO / "README.md").read_text()
    plain = [key for key in values if "_ci_" not in key]
    assert not [key for key in plain if f"`{key}`" not in readme]  # documented metrics.json keys
    lines = _quality_module().summary(values, tmp_path)
    text = "\n".join(lines)
    assert "C2ST vs real held-out   0.700 [0.650, 0.750]" in text
    assert "target <= 0.65: missed" in text  # the C2ST's
    assert "C2ST vs reconstructions 0.600 [0.550, 0.650]" in text
    assert "C2ST real vs own recon. 0.550 [0.500, 0.600]" in text
    recall = (values["recall"], values["recall_ci_low"], values["recall_ci_high"])
    assert "recall                  {:.3f} [{:.3f}, {:.3f}]".format(*recall) in text
    assert "level TV distance       0.100 [0.050, 0.150]  (target <= 0.15: met)" in text
    assert "test SSIM               0.960 " in text and "target >= 0.95: met" in text
    assert "broken samples          0.062 [0.050, 0.080]  (real held-out 0.000; 4.0 " in text
    assert "fine detail of samples  0.850 [0.800, 0.900]  (reconstructions 0.900; " in text
    assert lines[-2].endswith(str(tmp_path / "samples_by_level.png"))
