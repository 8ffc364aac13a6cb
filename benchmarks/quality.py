"""Quality of the whole pipeline at real scale: ingest -> train -> sample -> evaluate.

Runs the real stages, each as its own ``python -m oasis_vqvae STAGE`` process exactly as
``dvc repro`` runs them (ingest, train-vqvae, extract-codes, train-pixelcnn, generate,
evaluate), on the built-in synthetic source at ``--size`` px (default 256) with
``--subjects`` x ``--slices`` slices (default 150 x 24 = 3,600 slices: about 720 real
held-out slices, validate + test, for the evaluation), with the hyper-parameters of
``--params`` (default params/oasis.yaml, the recommended 256-px set-up) and these settings
on top: ``data.source=synthetic``, ``data.image_size``, ``data.synthetic.subjects`` /
``slices_per_subject``, ``tracking.enabled=false`` (unless ``--tracking``), then every
``--set``. The params actually used are written to ``WORKDIR/params.yaml``.

It prints the wall and CPU time of every stage (CPU of the stage's process and its
children: about wall x cores on an idle machine, less when the machine is shared) and in
total, against ``--budget-minutes`` of wall time (default 60), saying when it went over.
Then, read from the evaluate stage's ``metrics.json`` (not recomputed): test SSIM, both
classifier two-sample tests with their 95% intervals (samples vs real held-out slices, and vs
the VQ-VAE's reconstructions of them), precision / recall / density / coverage, the
total-variation distance of the predicted slice levels, each beside the issue's target, the
share of broken samples (head outlines no real slice has), the fine detail of samples and
reconstructions (radial power against real slices) and where ``broken_samples.png``,
``samples_by_level.png`` and ``report.html`` are. The last line is
``quality_<size>: c2st=<accuracy> recall=<recall>``.

The defaults are the scale the comparison is meant for and need a GPU-class machine to fit
60 minutes; ``--quick`` (64 px, 12 subjects x 12 slices, 1 epoch each, small evaluation)
only checks that the pipeline runs, in minutes, and its figures mean nothing.

    python benchmarks/quality.py [--size 256] [--subjects 150] [--slices 24]
        [--params params/oasis.yaml] [--set KEY=VALUE ...] [--workdir DIR]
        [--budget-minutes 60] [--tracking] [--quick] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from oasis_vqvae.config import Params, load_params
from oasis_vqvae.errors import OasisError

ROOT = Path(__file__).resolve().parents[1]
QUICK = (
    "vqvae.epochs=1",
    "vqvae.batch_size=16",
    "pixelcnn.filters=16",
    "pixelcnn.residual_blocks=2",
    "pixelcnn.epochs=1",
    "generate.count=64",
    # A few dozen held-out slices: too few for the default minimum; the run checks wiring only.
    "evaluate.min_images=10",
    "evaluate.bootstrap=50",
    "evaluate.c2st.steps=20",
    "evaluate.probe.steps=20",
)
"""Settings of ``--quick`` (after the scale settings, before ``--set``)."""
QUICK_SCALE = {"size": 64, "subjects": 12, "slices": 12}
TARGETS = {  # the targets for the synthetic 256-px benchmark
    "ssim_mean": (">=", 0.95),
    "c2st_accuracy": ("<=", 0.65),
    "recall": (">=", 0.8),
    "coverage": (">=", 0.8),
    "level_tv_distance": ("<=", 0.15),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--quick`` fills in the scale options not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, help="image side in px (default 256)")
    parser.add_argument("--subjects", type=int, help="synthetic subjects (default 150)")
    parser.add_argument("--slices", type=int, help="slices per subject (default 24)")
    parser.add_argument(
        "--params", type=Path, default=ROOT / "params" / "oasis.yaml",
        help="params file the settings are applied over (default params/oasis.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a param last, e.g. vqvae.epochs=5 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path,
        help="directory for the dataset, models and outputs (default: a new temporary "
        "directory, kept so the figures can be looked at; a rerun in the same one resumes "
        "interrupted training)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-minutes", type=float, default=60.0, help="wall-time budget (default 60)"
    )
    parser.add_argument("--tracking", action="store_true", help="log the stages to MLflow")
    parser.add_argument(
        "--quick", action="store_true", help="64 px, 12 x 12 slices, 1 epoch: a smoke run"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the params file and print the plan only"
    )
    args = parser.parse_args(argv)
    defaults = QUICK_SCALE if args.quick else {"size": 256, "subjects": 150, "slices": 24}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` list applied over ``args.params``, in order."""
    settings = [
        "data.source=synthetic",
        f"data.image_size={args.size}",
        f"data.synthetic.subjects={args.subjects}",
        f"data.synthetic.slices_per_subject={args.slices}",
        f"tracking.enabled={'true' if args.tracking else 'false'}",
    ]
    return [*settings, *(QUICK if args.quick else ()), *args.set]


def write_params(args: argparse.Namespace, workdir: Path) -> tuple[Params, Path]:
    """Validate the params of this run and write them, complete, to ``workdir/params.yaml``."""
    params = load_params(args.params, overrides(args))
    path = workdir / "params.yaml"
    header = (
        f"# benchmarks/quality.py: {args.params.name} with "
        f"{' '.join('--set ' + s for s in overrides(args))}\n"
    )
    document = params.model_dump(mode="json", by_alias=True)
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return params, path


def stages(workdir: Path, params_file: Path) -> list[tuple[str, list[str]]]:
    """Each stage's name and command line, the paths dvc.yaml uses, under ``workdir``."""
    data, codes = workdir / "data" / "dataset", workdir / "data" / "codes"
    vqvae, pixelcnn = workdir / "models" / "vqvae", workdir / "models" / "pixelcnn"
    samples = workdir / "outputs" / "samples"
    plan = [  # (stage, its inputs, its output)
        ("ingest", {}, data),
        ("train-vqvae", {"data": data}, vqvae),
        ("extract-codes", {"data": data, "vqvae": vqvae}, codes),
        ("train-pixelcnn", {"codes": codes}, pixelcnn),
        ("generate", {"vqvae": vqvae, "pixelcnn": pixelcnn}, samples),
        ("evaluate", {"data": data, "vqvae": vqvae, "pixelcnn": pixelcnn, "samples": samples},
         workdir / "outputs" / "eval"),
    ]  # fmt: skip
    commands = []
    for name, inputs, out in plan:
        command = [sys.executable, "-m", "oasis_vqvae", name, "--params", str(params_file)]
        for flag, path in inputs.items():
            command += [f"--{flag}", str(path)]
        commands.append((name, [*command, "--out", str(out)]))
    return commands


def children_cpu() -> float:
    """CPU seconds (user + system) of all finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stage(name: str, command: list[str], log: Path) -> tuple[float, float]:
    """Run one stage, its output to ``log``; returns (wall, CPU) seconds. Exits on failure."""
    wall, cpu = time.perf_counter(), children_cpu()
    with log.open("w") as out:  # cwd: the repository, where params' relative paths point
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    spent = time.perf_counter() - wall, children_cpu() - cpu
    if result.returncode:
        tail = log.read_text().strip().splitlines()[-15:]
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr)
        raise SystemExit(f"quality: stage {name} failed (exit {result.returncode}); log: {log}")
    return spent


def run_pipeline(commands: list[tuple[str, list[str]]], logs: Path, budget: float) -> float:
    """Run every stage in order, printing its cost as it finishes; returns the total wall."""
    print(f"{'stage':16s} {'wall':>9s} {'CPU':>9s}  (CPU / wall)")
    total_wall = total_cpu = 0.0
    for name, command in commands:
        wall, cpu = run_stage(name, command, logs / f"{name}.log")
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        over = "  <- over the budget" if total_wall > budget * 60 >= total_wall - wall else ""
        print(f"{name:16s} {_minutes(wall)} {_minutes(cpu)}  ({cpu / wall:.1f}){over}", flush=True)
    share = total_cpu / total_wall
    print(f"{'total':16s} {_minutes(total_wall)} {_minutes(total_cpu)}  ({share:.1f})")
    return total_wall


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:7.1f} m" if seconds >= 600 else f"{seconds:7.1f} s"


def budget_line(total_wall: float, budget_minutes: float) -> str:
    """Whether the run stayed within its wall-time budget."""
    spent = total_wall / 60
    if spent <= budget_minutes:
        return f"budget: {spent:.1f} of {budget_minutes:g} wall minutes: within the budget"
    return (
        f"budget: {spent:.1f} wall minutes, OVER the {budget_minutes:g}-minute budget by "
        f"{spent - budget_minutes:.1f} (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores)"
    )


def _interval(metrics: dict[str, Any], key: str, interval: str | None = None) -> str:
    """``value [low, high]``; the interval's keys are ``<interval or key>_ci_low`` / ``_high``."""
    prefix = interval or key
    low, high = metrics[f"{prefix}_ci_low"], metrics[f"{prefix}_ci_high"]
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]"


def _target(metrics: dict[str, Any], key: str) -> str:
    sign, bound = TARGETS[key]
    met = metrics[key] >= bound if sign == ">=" else metrics[key] <= bound
    return f"target {sign} {bound:g}: {'met' if met else 'missed'}"


def summary(metrics: dict[str, Any], evaluation: Path) -> list[str]:
    """The report's lines from the evaluate stage's ``metrics.json`` values."""
    lines = [
        f"test SSIM               {metrics['ssim_mean']:.3f} (std {metrics['ssim_std']:.3f}, "
        f"5th percentile {metrics['ssim_p05']:.3f}; {metrics['test_slices']} test slices; "
        f"{_target(metrics, 'ssim_mean')})",
        f"C2ST vs real held-out   {_interval(metrics, 'c2st_accuracy', 'c2st')}  "
        f"({metrics['held_out_slices']} held-out slices, {metrics['samples']} samples; "
        f"{_target(metrics, 'c2st_accuracy')}; 0.5 = indistinguishable)",
        "C2ST vs reconstructions "
        f"{_interval(metrics, 'c2st_reconstructions_accuracy', 'c2st_reconstructions')}  "
        "(the prior alone: the autoencoder's blur on both sides)",
        "C2ST real vs own recon. "
        f"{_interval(metrics, 'c2st_autoencoder_accuracy', 'c2st_autoencoder')}  "
        "(the autoencoder alone: the lowest C2ST vs real any prior can reach)",
    ]
    for key in ("precision", "recall", "density", "coverage"):
        target = f"  ({_target(metrics, key)})" if key in TARGETS else ""
        lines.append(f"{key:23s} {_interval(metrics, key)}{target}")
    if "level_tv_distance" in metrics:
        lines.append(
            f"level TV distance       {_interval(metrics, 'level_tv_distance')}  "
            f"({_target(metrics, 'level_tv_distance')})"
        )
        if "slice_level_mae_real" in metrics:
            lines.append(
                f"level probe MAE (real)  {_interval(metrics, 'slice_level_mae_real')}  "
                "(how far the probe's level readings can be trusted)"
            )
    else:
        lines.append("level TV distance       not measured (see report.html)")
    if "broken_share" in metrics:  # evaluations before the outline check have none
        share, in_montage = metrics["broken_share"], 64 * metrics["broken_share"]
        lines.append(
            f"broken samples          {_interval(metrics, 'broken_share')}  (real held-out "
            f"{metrics['broken_share_real']:.3f}; {in_montage:.1f} expected in a 64-sample "
            f"montage, all whole with probability {(1 - share) ** 64:.2f}; target: none)"
        )
    if "fine_detail_samples" in metrics:  # evaluations before the spectra have none
        lines.append(
            f"fine detail of samples  {_interval(metrics, 'fine_detail_samples')}  "
            f"(reconstructions {metrics['fine_detail_reconstructions']:.3f}; 1 = real slices' "
            "fine texture, below 1 smoother)"
        )
    lines += [
        f"broken samples figure   {evaluation / 'broken_samples.png'}",
        f"samples by level        {evaluation / 'samples_by_level.png'}",
        f"report                  {evaluation / 'report.html'}",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oasis-quality-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    try:
        params, params_file = write_params(args, workdir)
    except OasisError as err:
        raise SystemExit(f"quality: {err}") from None
    grid = params.data.image_size >> len(params.vqvae.filters)
    print(
        f"quality: {args.subjects} synthetic subjects x {args.slices} slices at "
        f"{args.size}x{args.size} px, {args.params.name}: a {grid}x{grid} code grid, "
        f"{params.vqvae.num_embeddings} codes, VQ-VAE {params.vqvae.epochs} epochs, PixelCNN "
        f"{params.pixelcnn.epochs} epochs, {params.generate.count} samples"
    )
    print(f"work directory {workdir} (params.yaml, logs/, data/, models/, outputs/)")
    print(f"budget: {args.budget_minutes:g} wall minutes")
    commands = stages(workdir, params_file)
    if args.dry_run:
        for name, command in commands:
            print(f"{name}: {' '.join(command[1:])}")
        print("dry run: nothing was run")
        return
    total = run_pipeline(commands, workdir / "logs", args.budget_minutes)
    print(budget_line(total, args.budget_minutes))
    evaluation = workdir / "outputs" / "eval"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    prior = json.loads((workdir / "models" / "pixelcnn" / "metrics.json").read_text())
    print(f"PixelCNN validation     {prior['best_val_bits_per_code']:.3f} bits per code")
    print("\n".join(summary(metrics, evaluation)))
    c2st, recall = metrics["c2st_accuracy"], metrics["recall"]
    print(f"quality_{args.size}: c2st={c2st:.3f} recall={recall:.3f}")


if __name__ == "__main__":
    main()
