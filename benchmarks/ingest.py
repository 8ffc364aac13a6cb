"""Speed of the ingest stage against a naive loop and this machine's PNG decode rate.

Makes COUNT 256x256 brain-like slices in the OASIS PNG layout (512 synthetic images with
realistic anatomy, noise and PNG sizes, each written into many files made distinct by a
comment chunk), then times in one run:

  (a) the ingest stage function on them (image_size 256: stored as is, no resize);
  (b) a naive one-process loop: open each PNG with Pillow, convert('L'), np.asarray, append;
  (c) the pure single-process PNG decode rate (Pillow decode of files read into memory first).

The three are timed in interleaved rounds and the best time of each counts, which keeps other
load on a shared machine from favouring one of them. TensorFlow is imported before (a) is
timed: its one-off import is not ingest work.
The last line is ``ingest_vs_naive: <ratio>``. Only the standard library is imported at the
top: the ingest workers (spawned) re-import this script, as they would not in a CLI run.

    python benchmarks/ingest.py [--count 10000] [--workers 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import multiprocessing
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

SIZE = 256
SLICES_PER_CASE = 32
BASE_SUBJECTS = 8
BASE_SLICES = 16
SPLIT_FOLDERS = ("keras_png_slices_train", "keras_png_slices_validate", "keras_png_slices_test")


def render_subject(subject: int) -> list[bytes]:
    """PNGs (Pillow defaults) of BASE_SLICES slices of one subject, 4 variants of each."""
    import numpy as np
    from PIL import Image

    from oasis_vqvae.data.synthetic import generate_subject_slices

    pngs = []
    for pixels in generate_subject_slices(7, subject, BASE_SLICES, SIZE):
        mirrored = pixels[:, ::-1]
        for variant in (pixels, mirrored, np.roll(pixels, 3, axis=1), np.roll(mirrored, -3, 0)):
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(variant)).save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
    return pngs


def with_comment(png: bytes, text: str) -> bytes:
    """The PNG with a tEXt chunk after its header: a distinct file with the same pixels.

    Encoding 10,000 PNGs would take minutes; this keeps every file unique for a few microseconds.
    """
    data = b"Comment\0" + text.encode()
    crc = zlib.crc32(b"tEXt" + data)
    return (
        png[:33] + struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", crc) + png[33:]
    )


def make_dataset(root: Path, count: int, processes: int) -> list[Path]:
    """Write ``count`` slices in the OASIS layout (cases split 80/10/10); return their paths."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        rendered = pool.map(render_subject, range(1, BASE_SUBJECTS + 1))
    pngs = [png for subject in rendered for png in subject]
    cases = math.ceil(count / SLICES_PER_CASE)
    validate = test = max(1, cases // 10)
    for folder in SPLIT_FOLDERS:
        (root / folder).mkdir(parents=True)
    paths = []
    for index in range(count):
        case = index // SLICES_PER_CASE + 1
        split = 0 if case <= cases - validate - test else 1 if case <= cases - test else 2
        name = f"case_{case:03d}_slice_{index % SLICES_PER_CASE}.nii.png"
        path = root / SPLIT_FOLDERS[split] / name
        path.write_bytes(with_comment(pngs[index % len(pngs)], f"slice {index}"))
        paths.append(path)
    size = sum(path.stat().st_size for path in paths) / count
    print(f"slices: {count} x {SIZE}x{SIZE} PNG of {len(pngs)} images, mean {size / 1e3:.1f} kB")
    return paths


Timing = tuple[float, float]
"""Wall seconds and CPU seconds (of this process and its finished children)."""


def measured(run: Callable[[], object]) -> Timing:
    started, cpu = time.perf_counter(), cpu_seconds()
    run()
    return time.perf_counter() - started, cpu_seconds() - cpu


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the ingest workers, once done)."""
    import resource

    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def time_ingest(root: Path, out: Path, workers: int) -> Timing:
    from oasis_vqvae.config import DataConfig
    from oasis_vqvae.stages.ingest import write_dataset

    cfg = DataConfig.model_validate_json(
        f'{{"source": "{root}", "image_size": {SIZE}, "png_size": {SIZE}, "workers": {workers}}}'
    )
    return measured(lambda: write_dataset(cfg, out))


def time_naive(paths: list[Path]) -> Timing:
    import numpy as np
    from PIL import Image

    def run() -> None:
        arrays = []
        for path in paths:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("L")))

    return measured(run)


def time_decode_only(paths: list[Path]) -> Timing:
    from PIL import Image

    blobs = [path.read_bytes() for path in paths]

    def run() -> None:
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as image:
                image.load()

    return measured(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="slices (default %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="data.workers (0: one per core)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of (a) (b) (c); the best of each counts"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import tensorflow  # noqa: F401  (one-off import cost kept out of the timing)

    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        root = Path(tmp) / "slices"
        started = time.perf_counter()
        paths = make_dataset(root, args.count, os.cpu_count() or 1)
        print(f"generated in {time.perf_counter() - started:.1f} s")
        timings: dict[str, list[Timing]] = {"ingest": [], "naive": [], "decode": []}
        for _ in range(args.rounds):  # interleaved, so a busy spell hits every method alike
            timings["ingest"].append(time_ingest(root, Path(tmp) / "out", args.workers))
            timings["naive"].append(time_naive(paths))
            timings["decode"].append(time_decode_only(paths))
    best = {name: min(runs) for name, runs in timings.items()}  # by wall time
    rate = {name: args.count / wall for name, (wall, _) in best.items()}
    cpu_ms = {name: 1000 * cpu / args.count for name, (_, cpu) in best.items()}
    workers = args.workers or os.cpu_count()
    load = os.getloadavg()[0]
    print(f"best of {args.rounds} rounds; load average {load:.1f} on {os.cpu_count()} cores")
    for key, label in (
        ("ingest", f"(a) ingest stage function, {workers} workers"),
        ("naive", "(b) naive loop, 1 process"),
        ("decode", "(c) PNG decode only, 1 process, in memory"),
    ):
        print(f"{label:43s} {rate[key]:6.0f} images/s  {cpu_ms[key]:.2f} CPU-ms/image")
    print(f"ingest_vs_decode: {rate['ingest'] / rate['decode']:.2f}")
    print(f"ingest_vs_naive: {rate['ingest'] / rate['naive']:.2f}")


if __name__ == "__main__":
    main()
