"""Progress outside a terminal: whole lines, no redraws; in a terminal: tqdm's bars."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from oasis_vqvae import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _count(stream: io.StringIO, total: int = 1000, **options) -> str:
    with progress.tqdm(total=total, desc="ingest", unit="slice", file=stream, **options) as bar:
        for _ in range(total):
            bar.update(1)
    return stream.getvalue()


def test_outside_a_terminal_a_bar_is_a_few_whole_lines(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    text = _count(io.StringIO())
    assert "\r" not in text and "\x1b[" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 2, lines  # at most one per LOG_INTERVAL_S, and the final count
    assert lines[-1].startswith("ingest: 100%") and "1000/1000" in lines[-1]


def test_every_interval_one_line(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    stream = io.StringIO()
    bar = progress.tqdm(total=3, desc="d", file=stream, mininterval=0, miniters=1)
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split("|")[0] for line in lines] == ["d:  33%", "d:  67%", "d: 100%"]


def test_in_a_terminal_the_bar_redraws(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    assert "\r" in _count(Terminal(), mininterval=0)


@pytest.mark.parametrize(("mode", "expected"), [("lines", False), ("bars", True)])
def test_the_environment_overrides_the_choice(monkeypatch, mode, expected):
    monkeypatch.setenv(progress.MODE_ENV, mode)
    assert progress.interactive(Terminal()) is expected
    assert progress.interactive(io.StringIO()) is expected


def test_wrapattr_and_disable_still_work(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    stream, sink = io.StringIO(), io.BytesIO()
    with progress.tqdm.wrapattr(sink, "write", total=4, desc="dl", file=stream) as counted:
        counted.write(b"abcd")
    assert sink.getvalue() == b"abcd" and "\r" not in stream.getvalue()
    assert _count(io.StringIO(), disable=True) == ""


def test_every_progress_bar_is_the_projects():
    """A module that imports tqdm itself would redraw bars into log files (1,000s of lines)."""
    package = Path(progress.__file__).parent
    direct = re.compile(r"^\s*(from tqdm\b|import tqdm\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "progress.py" and direct.search(path.read_text())
    ]
    assert not offenders, f"import tqdm from oasis_vqvae.progress in {offenders}"
