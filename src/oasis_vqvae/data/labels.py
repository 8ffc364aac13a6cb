"""Subject labels from a CSV: canonical attribute names, checked values, their kinds.

Two sources use it: ``data.labels`` (a CSV keyed by case number, for the OASIS PNG slices and
the synthetic source, whose generator writes one) and the OASIS-1 demographics
(``oasis_cross-sectional.csv``, keyed by session ID). Every other column is an attribute::

    case,age,sex,cdr          # any other columns too, e.g. mmse, nwbv, site
    1,74,F,0
    2,55,M,0.5

Column names become canonical: lower case, runs of other characters than letters and digits
become ``_`` (``eTIV`` -> ``etiv``, ``M/F`` and ``Gender`` -> ``sex``). Values:

* ``age``: years, a number in [0, 130];
* ``sex``: ``F`` or ``M`` (also ``female`` / ``male``, any case);
* ``cdr``: Clinical Dementia Rating, one of 0, 0.5, 1, 2, 3 (stored as floats);
* ``mmse``, ``educ``, ``ses``, ``etiv``, ``nwbv``, ``asf``, ``delay``: numbers;
* any other column: continuous if every value is a number, else categorical (the text);
* an empty cell (or ``NA``, ``N/A``, ``NaN``, ``null``, ``None``) is a missing value (null).

A missing or duplicated key, or a value that breaks these rules, stops with a
:class:`DataError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oasis_vqvae.data.conditions import ID_COLUMNS, SLICE_LEVEL, ConditionSpec, Kind
from oasis_vqvae.errors import DataError

CASE = "case"
"""Key column of a ``data.labels`` CSV: the case number of the slices' file names."""
CDR_VALUES = (0.0, 0.5, 1.0, 2.0, 3.0)
"""The Clinical Dementia Rating scale."""
SEX_VALUES = {"f": "F", "female": "F", "m": "M", "male": "M"}
AGE_RANGE = (0.0, 130.0)
ALIASES = {"m_f": "sex", "gender": "sex"}
"""Canonical names of columns whose lower-cased name is not already the canonical one."""
NUMERIC = frozenset({"age", "cdr", "mmse", "educ", "ses", "etiv", "nwbv", "asf", "delay"})
"""Attributes that must be numbers wherever they are given."""
CATEGORICAL = frozenset({"sex", "cdr"})
"""Attributes that are categorical whatever their values look like."""
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
RESERVED = frozenset({*ID_COLUMNS, SLICE_LEVEL})
CASE_VALUE = re.compile(r"(?:case_|OAS-case-)?0*(\d+)")


@dataclass(frozen=True)
class Labels:
    """What a labels CSV says: ``rows[key][name]`` (canonical names, None if missing)."""

    rows: dict[str, dict[str, Any]]
    kinds: dict[str, Kind]
    """Kind of every attribute, in column order."""
    lines: dict[str, int]
    """Line of the file each key was read from (for messages)."""


def canonical_name(column: str) -> str:
    """``"M/F"`` -> ``"sex"``, ``"eTIV"`` -> ``"etiv"``, ``"Site name"`` -> ``"site_name"``."""
    name = re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")
    return ALIASES.get(name, name)


def case_key(value: str) -> int | None:
    """The case number of a ``case`` cell (``7``, ``007``, ``case_007``), or None."""
    match = CASE_VALUE.fullmatch(value.strip())
    return int(match[1]) if match else None


def read_case_labels(path: Path, *, location: str) -> Labels:
    """A ``data.labels`` CSV: rows keyed by case number (as a string, ``"7"``).

    Raises:
        DataError: unreadable, no ``case`` column, a bad or duplicated case, a bad value.
    """

    def key(cell: str, line: int) -> str:
        number = case_key(cell)
        if number is None:
            raise DataError(
                f"{location}: line {line}, column {CASE}: {cell!r} is not a case number"
            )
        return str(number)

    return read_labels(path, location=location, key_column=CASE, key=key)


def read_labels(
    path: Path,
    *,
    location: str,
    key_column: str,
    key: Callable[[str, int], str | None],
) -> Labels:
    """Rows of a labels CSV keyed by ``key(cell, line)`` of ``key_column`` (None: row ignored).

    ``key_column`` is matched after :func:`canonical_name`; ``location`` names the file in
    messages. Lines are counted from 1, the header being line 1.

    Raises:
        DataError: see the module docstring.
    """
    header, body = _read_csv(path, location)
    names = [canonical_name(column) for column in header]
    wanted = canonical_name(key_column)
    if wanted not in names:
        raise DataError(f"{location}: no {key_column!r} column (columns: {', '.join(header)})")
    _check_columns(header, names, wanted, location)
    position = names.index(wanted)
    rows: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for line, cells in body:
        cells = cells + [""] * (len(header) - len(cells))
        if len(cells) > len(header):
            raise DataError(
                f"{location}: line {line}: {len(cells)} cells, the header has {len(header)}"
            )
        cell = cells[position].strip()
        if cell.lower() in MISSING:
            raise DataError(f"{location}: line {line}, column {header[position]}: no value")
        name = key(cell, line)
        if name is None:
            continue
        if name in rows:
            raise DataError(
                f"{location}: line {line}, column {header[position]}: {cell!r} again "
                f"(first on line {lines[name]})"
            )
        lines[name] = line
        rows[name] = {attr: cells[i].strip() for i, attr in enumerate(names) if i != position}
    attributes = [attr for attr in names if attr != wanted]
    columns = {attr: header[names.index(attr)] for attr in attributes}
    kinds = {attr: _kind(attr, (row[attr] for row in rows.values())) for attr in attributes}
    for name, row in rows.items():
        for attr in attributes:
            row[attr] = _value(
                attr,
                kinds[attr],
                row[attr],
                f"{location}: line {lines[name]}, column {columns[attr]}",
            )
    return Labels(rows, kinds, lines)


def _read_csv(path: Path, location: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line, cells) of the non-blank data lines."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{location}: not a readable UTF-8 CSV file ({err})") from None
    try:
        table = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise DataError(f"{location}: not a valid CSV file ({err})") from None
    if not table or not any(cell.strip() for cell in table[0]):
        raise DataError(f"{location}: empty; expected a header line such as case,age,sex,cdr")
    body = [(i + 1, row) for i, row in enumerate(table) if i > 0 and any(c.strip() for c in row)]
    return [cell.strip() for cell in table[0]], body


def _check_columns(header: list[str], names: list[str], key: str, location: str) -> None:
    seen: dict[str, str] = {}
    for column, name in zip(header, names, strict=True):
        if not name:
            raise DataError(f"{location}: a column without a name in the header")
        if name in seen:
            raise DataError(f"{location}: columns {seen[name]!r} and {column!r} both mean {name!r}")
        if name in RESERVED and name != key:
            raise DataError(
                f"{location}: column {column!r} is reserved (one of {sorted(RESERVED)})"
            )
        seen[name] = column


def _kind(attr: str, cells: Iterable[str]) -> Kind:
    if attr in CATEGORICAL:
        return "categorical"
    if attr in NUMERIC:
        return "continuous"
    known = [cell for cell in cells if cell.lower() not in MISSING]
    return (
        "continuous"
        if known and all(_number(cell) is not None for cell in known)
        else ("categorical")
    )


def _value(attr: str, kind: Kind, cell: str, where: str) -> Any:
    """The checked value of one cell: float, str or None (missing)."""
    if cell.lower() in MISSING:
        return None
    if attr == "sex":
        if cell.lower() not in SEX_VALUES:
            raise DataError(f"{where}: unknown sex {cell!r} (expected F or M)")
        return SEX_VALUES[cell.lower()]
    if kind == "categorical" and attr not in NUMERIC:
        return cell
    number = _number(cell)
    if number is None or not math.isfinite(number):
        raise DataError(f"{where}: {cell!r} is not a number")
    if attr == "cdr" and number not in CDR_VALUES:
        raise DataError(f"{where}: unknown CDR {cell!r} (expected one of 0, 0.5, 1, 2, 3)")
    if attr == "age" and not AGE_RANGE[0] <= number <= AGE_RANGE[1]:
        raise DataError(f"{where}: age {cell!r} is outside [0, 130] years")
    return number


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


# --- the manifest's description -----------------------------------------------------------------


def describe(
    kinds: Mapping[str, Kind],
    metadata: Mapping[str, Mapping[str, Any]],
    subjects: Mapping[str, Sequence[str]],
) -> dict[str, ConditionSpec]:
    """The manifest's ``conditions``: ``slice_level``, then each attribute a subject has.

    ``subjects`` is split -> subject ids of the dataset; attributes no subject of the dataset
    has a value for are left out. ``counts[split]`` is, per categorical value (its ``str``),
    the number of subjects with it, or for a continuous attribute the number with a value.
    """
    specs: dict[str, ConditionSpec] = {SLICE_LEVEL: {"kind": "continuous", "range": [0.0, 1.0]}}
    for name, kind in kinds.items():
        values = {
            split: [metadata.get(s, {}).get(name) for s in ids] for split, ids in subjects.items()
        }
        known = [v for split_values in values.values() for v in split_values if v is not None]
        if not known:
            continue
        if kind == "categorical":
            levels = sorted(set(known))
            counts = {
                split: {str(level): split_values.count(level) for level in levels}
                for split, split_values in values.items()
            }
            specs[name] = {"kind": kind, "values": levels, "counts": counts}
        else:
            counts = {
                split: sum(v is not None for v in split_values)
                for split, split_values in values.items()
            }
            specs[name] = {"kind": kind, "range": [min(known), max(known)], "counts": counts}
    return specs
