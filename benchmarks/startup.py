"""Start-up of a stage process: the installed bytecode against compiling the sources.

Every stage runs in a process of its own (a `dvc repro` stage, a Kubeflow task, a test's
subprocess), and before any work it imports TensorFlow, Keras and MLflow: thousands of
modules. `make install` compiles them to bytecode (`uv pip install --compile-bytecode`; uv
does not by default, pip does), and so does the image. Without it, and where bytecode cannot be
written (`PYTHONDONTWRITEBYTECODE`, a read-only root), every process compiles every module
again. Times, in one run, a fresh interpreter importing ``--module`` (by default the
train-vqvae stage, which imports what every stage does):

  source    without bytecode: ``PYTHONPYCACHEPREFIX`` at an empty folder and
            ``PYTHONDONTWRITEBYTECODE=1``, so Python reads no ``.pyc`` and writes none;
  ours      the environment as installed (its ``__pycache__`` folders).

Rounds alternate (source, ours, ours, source, ...) so both see about the same load of a shared
machine; each side's median wall time counts, and the CPU time (load hardly changes it) is shown.
Modules of this environment that have no bytecode are counted: none after `make install`.
The last line is ``startup_vs_source: <ratio>``, source time / ours (> 1: bytecode helps).

    python benchmarks/startup.py [--module oasis_vqvae.stages.train_vqvae] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

DEFAULT_MODULE = "oasis_vqvae.stages.train_vqvae"


def time_import(module: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh interpreter that imports ``module`` and exits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"import {module} failed:\n{done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def uncompiled_modules() -> tuple[int, int]:
    """(modules without an up-to-date-looking .pyc, all modules) in this site-packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    sources = list(site.rglob("*.py"))
    missing = sum(not Path(importlib.util.cache_from_source(str(p))).is_file() for p in sources)
    return missing, len(sources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", default=DEFAULT_MODULE, help="module a stage process imports")
    parser.add_argument("--rounds", type=int, default=3, help="timed imports of each side")
    args = parser.parse_args()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    missing, total = uncompiled_modules()
    print(f"installed bytecode: {total - missing} of {total} modules ({missing} without)")
    times: dict[str, list[tuple[float, float]]] = {"source": [], "ours": []}
    with tempfile.TemporaryDirectory() as empty:
        envs = {
            "source": {**env, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"},
            "ours": env,
        }
        for round_ in range(args.rounds):
            order = ("source", "ours") if round_ % 2 == 0 else ("ours", "source")
            for side in order:
                times[side].append(time_import(args.module, envs[side]))
    for side, runs in times.items():
        wall = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        print(f"{side:>6}: import {args.module} in {wall:.2f} s (CPU {cpu:.2f} s)")
    ratio = statistics.median(r[0] for r in times["source"]) / statistics.median(
        r[0] for r in times["ours"]
    )
    print(f"startup_vs_source: {ratio:.2f}")


if __name__ == "__main__":
    main()
