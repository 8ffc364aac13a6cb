"""atomic_directory: a stage killed at any point leaves the whole old or the whole new output.

Each kill is real: a subprocess replaces an output and SIGKILLs itself at a hook point between
the steps of the replacement (the hook wraps the real rename / swap calls).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oasis_vqvae import storage
from oasis_vqvae.storage import atomic_directory

SCRIPT = """
import os, signal, sys
from pathlib import Path
from oasis_vqvae import storage

dest, where = Path(sys.argv[1]), sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_rename, real_exchange = Path.rename, getattr(storage, "_exchange", None)
renames = []

def rename(self, target):
    result = real_rename(self, target)
    renames.append(target)
    if where == "after-first-rename" and len(renames) == 1:
        die()
    return result

def exchange(a, b):
    if where == "before-swap":
        die()
    if where.startswith("after-first-rename"):
        return False  # as on a file system without renameat2's RENAME_EXCHANGE
    swapped = real_exchange(a, b)
    if where == "after-swap":
        die()
    return swapped

Path.rename, storage._exchange = rename, exchange
with storage.atomic_directory(dest) as tmp:
    for i in range(3):
        (tmp / f"part{i}.txt").write_text("new")
"""


def _write_old(dest: Path) -> None:
    with atomic_directory(dest) as tmp:
        for i in range(3):
            (tmp / f"part{i}.txt").write_text("old")


def _contents(dest: Path) -> set[str]:
    return {path.read_text() for path in dest.iterdir()}


@pytest.mark.parametrize(
    ("where", "expected"),
    [("before-swap", "old"), ("after-swap", "new"), ("after-first-rename", "old")],
)
def test_a_kill_between_the_steps_never_loses_the_output(tmp_path, where, expected):
    dest = tmp_path / "out"
    _write_old(dest)
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(dest), where], capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    if where != "after-first-rename":  # the atomic swap: dest is always complete
        assert _contents(dest) == {expected}
    # The next run (or the next stage's writer) finds the previous output whole again.
    with atomic_directory(dest) as tmp:
        assert _contents(dest) == {expected}
        (tmp / "part0.txt").write_text("third")
    assert _contents(dest) == {"third"}
    assert [path.name for path in tmp_path.iterdir()] == ["out"], "no leftovers"


def test_replacement_swaps_in_one_step(tmp_path):
    dest = tmp_path / "out"
    _write_old(dest)
    with atomic_directory(dest) as tmp:
        (tmp / "part0.txt").write_text("new")
    assert _contents(dest) == {"new"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert storage._exchange(a, b), "renameat2(RENAME_EXCHANGE) is available on Linux"
    assert (b / "x").read_text() == "a" and not (a / "x").exists()


def test_a_failed_block_keeps_the_old_output(tmp_path):
    dest = tmp_path / "out"
    _write_old(dest)
    with pytest.raises(RuntimeError), atomic_directory(dest) as tmp:
        (tmp / "part0.txt").write_text("half")
        raise RuntimeError("stage failed")
    assert _contents(dest) == {"old"}
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
