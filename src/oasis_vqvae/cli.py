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
Examples:
  oasis-vqvae ingest --params params.yaml --out data/dataset
  oasis-vqvae ingest --out data/dataset --set data.source=/data/keras_png_slices_data.zip
"""


def _ingest(params: Params, args: argparse.Namespace) -> None:
    from oasis_vqvae.stages.ingest import ingest

    ingest(params.data, args.out)


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

    ingest = commands.add_parser(
        "ingest",
        help="read OASIS slices (or make synthetic ones) into a sharded dataset",
        description="Read brain MRI slices from data.source and write a dataset of TFRecord "
        "shards per split plus manifest.json. data.source is 'synthetic' (built-in "
        "procedural slices), a folder or .zip of the preprocessed OASIS PNG slices "
        "(keras_png_slices_{train,validate,test}/), a folder of raw OASIS-1 discs "
        "(oasis_cross-sectional_discN.tar.gz or extracted), or any of these at a gs:// URI.",
    )
    _add_common(ingest)
    ingest.add_argument(
        "--out", required=True, metavar="DIR", help="dataset directory to write (replaced atomically)"
    )
    ingest.set_defaults(run=_ingest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
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
