"""The ``oasis-vqvae`` command: one subcommand per pipeline stage, thin over ``oasis_vqvae.stages``.

Every subcommand reads ``--params`` (default params.yaml), applies ``--set dotted.key=value``
overrides, validates everything before work starts, and on a user error prints one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from oasis_vqvae import __version__
from oasis_vqvae.config import Params, load_params
from oasis_vqvae.errors import OasisError

log = logging.getLogger("oasis_vqvae")

EPILOG = """\
Stages run in this order (dvc repro runs them all):
  ingest -> train-vqvae -> extract-codes -> train-pixelcnn -> generate -> evaluate
                                                                     \\-> utility
Examples:
  oasis-vqvae ingest --params params.yaml --out data/dataset
  oasis-vqvae ingest --out data/dataset --set data.source=/data/keras_png_slices_data.zip
"""


# Each stage: (help, description, {flag: help of the input it reads}, help of --out).
STAGES: dict[str, tuple[str, str, dict[str, str], str]] = {
    "ingest": (
        "read OASIS slices (or make synthetic ones) into a sharded dataset",
        "Read brain MRI slices from data.source and write a dataset of TFRecord shards per "
        "split plus manifest.json. data.source is 'synthetic' (built-in procedural slices), a "
        "folder or .zip of the preprocessed OASIS PNG slices (keras_png_slices_{train,validate,"
        "test}/), a folder of raw OASIS-1 discs (oasis_cross-sectional_discN.tar.gz or "
        "extracted), or any of these at a gs:// URI.",
        {},
        "dataset directory to write",
    ),
    "train-vqvae": (
        "train the VQ-VAE on the dataset's train split",
        "Train the VQ-VAE (params block vqvae) on the train split, validating each epoch, and "
        "keep the best weights. Checkpoints every epoch; rerun after an interruption to resume.",
        {"--data": "dataset directory written by ingest"},
        "model directory to write (vqvae.keras, history.csv, plots, metrics.json)",
    ),
    "extract-codes": (
        "encode every slice into its grid of discrete codes",
        "Encode every slice of every split with the VQ-VAE's encoder and quantizer and store "
        "the integer code grids, one array per split, with a codebook-usage histogram.",
        {"--data": "dataset directory written by ingest", "--vqvae": "VQ-VAE model directory"},
        "codes directory to write (train.npy, validate.npy, test.npy, codes.json, usage.png)",
    ),
    "train-pixelcnn": (
        "train the PixelCNN prior on the code grids",
        "Train the PixelCNN (params block pixelcnn) on train codes, validating on validate "
        "codes (NLL in bits per code). Checkpoints every epoch; rerun to resume.",
        {"--codes": "codes directory written by extract-codes"},
        "model directory to write (pixelcnn.keras, history.csv, plots, metrics.json)",
    ),
    "generate": (
        "sample new slices from the PixelCNN and decode them",
        "Sample generate.count code grids from the PixelCNN at generate.temperature with "
        "generate.seed (a conditional PixelCNN asked for generate.conditions: data, values, "
        "balanced grids), decode them with the VQ-VAE and write PNGs, a grid image, the "
        "requested conditions (labels.csv) and the samples as a dataset (dataset/).",
        {"--vqvae": "VQ-VAE model directory", "--pixelcnn": "PixelCNN model directory"},
        "samples directory to write (sample_NNNN.png, grid.png, codes.npy, labels.csv, dataset/)",
    ),
    "evaluate": (
        "measure reconstructions (SSIM, PSNR, MSE) and samples",
        "Reconstruct the whole test split and score it (SSIM, PSNR, MSE, codebook perplexity); "
        "score the samples against real held-out slices (nearest SSIM, two classifier "
        "two-sample tests, coverage, slice-level distribution, fidelity to the conditions in "
        "labels.csv); write metrics.json, figures and report.html; end the MLflow pipeline run "
        "with these metrics.",
        {
            "--data": "dataset directory written by ingest",
            "--vqvae": "VQ-VAE model directory",
            "--pixelcnn": "PixelCNN model directory (its training history goes into the report)",
            "--samples": "samples directory written by generate",
        },
        "evaluation directory to write (metrics.json, figures, report.html)",
    ),
    "utility": (
        "does synthetic data help a classifier? real, TSTR, real + synthetic, augmentation",
        "Train one small CNN to classify utility.target (e.g. CDR > 0) on real training slices, "
        "on synthetic slices only (TSTR), on real + synthetic, and on real with classic "
        "augmentation, each over utility.seeds, also with fewer real subjects "
        "(utility.real_fractions); score it on the real test split (AUC, balanced accuracy, "
        "bootstrap intervals over subjects). First checks that no test subject reached the "
        "VQ-VAE or the PixelCNN.",
        {
            "--data": "dataset directory written by ingest (the real slices)",
            "--codes": "codes directory written by extract-codes (leakage guards)",
            "--pixelcnn": "PixelCNN model directory (its train_conditions.csv: leakage guards)",
            "--samples": "samples directory written by generate (its labelled dataset/)",
        },
        "utility directory to write (metrics.json, curve.csv, utility_curve.png, report.html)",
    ),
}


def _run_stage(params: Params, args: argparse.Namespace) -> None:
    from oasis_vqvae.stages import stage_function

    inputs = {
        flag.removeprefix("--"): getattr(args, flag.removeprefix("--"))
        for flag in STAGES[args.command][2]
    }
    stage_function(args.command)(params, **inputs, out=args.out)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        default="params.yaml",
        metavar="FILE",
        help="YAML file of parameters, one block per stage (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter by its dotted key, e.g. --set data.image_size=128; "
        "the value is read as YAML; repeatable; validated like params.yaml",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``oasis-vqvae`` command."""
    parser = argparse.ArgumentParser(
        prog="oasis-vqvae",
        description="Generative model of brain MRI slices: VQ-VAE + PixelCNN on OASIS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    for name, (summary, description, inputs, out_help) in STAGES.items():
        stage = commands.add_parser(name, help=summary, description=description)
        _add_common(stage)
        for flag, help_text in inputs.items():
            stage.add_argument(flag, required=True, metavar="DIR", help=help_text)
        stage.add_argument(
            "--out", required=True, metavar="DIR", help=f"{out_help}; replaced atomically"
        )
        stage.set_defaults(run=_run_stage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        # Start-up notices that say nothing about this run: MLflow's SQLite store announcing
        # its table set-up, TensorFlow's absl logger. Their warnings and errors still show.
        for noisy in ("alembic", "mlflow.store.db.utils", "absl"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    run: Callable[[Params, argparse.Namespace], None] = args.run
    try:
        params = load_params(args.params, args.overrides)
        run(params, args)
    except OasisError as err:
        print(f"oasis-vqvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oasis-vqvae {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
