"""One self-contained HTML page per evaluation: metrics and figures, images embedded.

The page has no external references (images are base64 data URIs), so it can be opened
from an MLflow artifact, a KFP HTML artifact or an e-mail attachment alike.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { padding: 2px 12px; text-align: left; }
td.value { font-family: ui-monospace, monospace; text-align: right; }
img { max-width: 100%; border: 1px solid #eee; } p.note { color: #555; }
"""


def embedded_image(path: Path, alt: str) -> str:
    """An ``<img>`` tag holding the PNG at ``path`` as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def figure(path: Path, caption: str) -> str:
    """An embedded image with its caption (if any) below it."""
    note = paragraph(caption) if caption else ""
    return embedded_image(path, caption or Path(path).stem.replace("_", " ")) + note


def paragraph(text: str) -> str:
    """A paragraph of escaped text."""
    return f'<p class="note">{html.escape(text)}</p>'


def metrics_table(metrics: Mapping[str, float | int]) -> str:
    """A two-column table of metric names and values."""
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td class=value>{_format(value)}</td></tr>"
        for name, value in metrics.items()
    )
    return f"<table>{rows}</table>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table with a header row; cells are escaped text."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    path: Path, title: str, sections: Sequence[tuple[str, str]], notes: str = ""
) -> Path:
    """Write ``sections`` (heading, HTML body) as one standalone page at ``path``."""
    body = "".join(f"<h2>{html.escape(heading)}</h2>\n{content}\n" for heading, content in sections)
    note = f'<p class="note">{html.escape(notes)}</p>' if notes else ""
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{note}\n{body}</body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


def _format(value: float | int) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
