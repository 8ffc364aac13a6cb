"""The benchmark scripts still run end to end (tiny sizes) and end with their ratio line.

Times are never asserted: only that each script measures both sides and prints the ratio.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
