"""What generate asks a conditional prior for: ``generate.conditions`` -> one row per sample.

``generate.conditions`` is ``data`` (or ``{}``), or a mapping name -> request:

- a value or a list of values: an axis of a balanced grid. The grid is the product of
  every listed axis (names in the model's order), cycled over the samples: with
  ``cdr: [0, 1]`` and ``sex: [F, M]``, samples 0..3 get (0, F), (0, M), (1, F), (1, M),
  sample 4 (0, F) again, and so on;
- ``uniform``: a categorical condition gets all the values the model saw as its axis; a
  continuous one sweeps the range the model saw: repetition ``r`` of ``R = ceil(count / G)``
  (``G`` the grid size) gets the centre of the ``r``-th of ``R`` equal bins, so every grid
  cell gets the same sweep (rows = grid cells, columns = levels in the report's grid);
- ``data`` (and every name not listed): drawn, seeded, from the training rows
  (``train_conditions.csv``), one whole row per sample, among the rows that share the
  sample's requested categorical values (all rows if none does), so the drawn values follow
  the training split's joint distribution given what was asked.

Requests are checked against what the model saw in training (``conditions.json``
``seen``: the categorical values present, the continuous [min, max]): anything else is a
one-line `ConfigError` naming ``generate.conditions.<name>``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from oasis_vqvae.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

KEY = "generate.conditions"


def resolve_requests(
    requests: str | Mapping[str, Any],
    model_conditions: Mapping[str, Any],
    names: Sequence[str],
    count: int,
    seed: int,
    train_table: pd.DataFrame | None,
) -> pd.DataFrame:
    """The requested conditions of ``count`` samples: one column per name (model order).

    ``model_conditions`` is ``conditions.json`` ``conditions`` (per name: kind, values or
    range, seen). Values are in the manifest's types (categorical: the spec's value).
    ``train_table`` (``train_conditions.csv``) is only read for data-drawn names.
    """
    import pandas as pd

    requests = {} if requests == "data" else dict(requests)
    for name in requests:
        if name not in names:
            raise ConfigError(
                f"{KEY}.{name}: the PixelCNN was not conditioned on {name!r}; "
                f"it was on {list(names)}"
            )
    axes: dict[str, list[Any]] = {}
    sweeps: list[str] = []
    drawn: list[str] = []
    for name in names:
        request = requests.get(name, "data")
        entry = model_conditions[name]
        if request == "data":
            drawn.append(name)
        elif request == "uniform":
            if entry["kind"] == "categorical":
                axes[name] = list(entry["seen"])
            else:
                sweeps.append(name)
        else:
            values = request if isinstance(request, list) else [request]
            axes[name] = [_checked(name, entry, value) for value in values]
    grid = list(itertools.product(*axes.values())) or [()]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    repeats = math.ceil(count / len(grid)) if count else 0
    for i in range(count):
        for name, value in zip(axes, grid[i % len(grid)], strict=True):
            columns[name].append(value)
        for name in sweeps:
            lo, hi = model_conditions[name]["seen"]
            columns[name].append(lo + (hi - lo) * ((i // len(grid)) + 0.5) / repeats)
    if drawn:
        fixed = {n: columns[n] for n in axes if model_conditions[n]["kind"] == "categorical"}
        rows = _draw_rows(train_table, drawn, fixed, model_conditions, count, seed)
        columns.update(rows)
    return pd.DataFrame({name: columns[name] for name in names}, index=range(count))


def _checked(name: str, entry: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the model knows it, or ConfigError if the model never saw it."""
    from oasis_vqvae.models.conditioning import value_index

    if entry["kind"] == "categorical":
        index = value_index({"values": entry["seen"]}, value)
        if index is None:
            raise ConfigError(
                f"{KEY}.{name}: {value!r} is not among the values the model saw {entry['seen']}"
            )
        return entry["seen"][index]
    lo, hi = entry["seen"]
    if isinstance(value, str) or not lo <= float(value) <= hi:
        raise ConfigError(
            f"{KEY}.{name}: {value!r} is outside the range the model saw [{lo:g}, {hi:g}]"
        )
    return float(value)


def _draw_rows(
    table: pd.DataFrame | None,
    drawn: list[str],
    fixed: dict[str, list[Any]],
    model_conditions: Mapping[str, Any],
    count: int,
    seed: int,
) -> dict[str, list[Any]]:
    """Values of the ``drawn`` names, one training row per sample (see the module docstring)."""
    from oasis_vqvae.models.conditioning import value_index

    if table is None or not len(table) or any(name not in table for name in drawn):
        raise DataError(
            f"{KEY}: drawing {drawn} from the training rows needs train_conditions.csv with "
            "those columns beside the PixelCNN; rerun train-pixelcnn"
        )
    rng = np.random.default_rng(seed)
    matches: dict[tuple, np.ndarray] = {}
    out: dict[str, list[Any]] = {name: [] for name in drawn}
    for i in range(count):
        key = tuple(fixed[name][i] for name in fixed)
        if key not in matches:
            keep = np.ones(len(table), bool)
            for name, value in zip(fixed, key, strict=True):
                if name in table:
                    encoding = {"values": [value]}
                    keep &= np.array([value_index(encoding, v) == 0 for v in table[name]])
            matches[key] = np.flatnonzero(keep) if keep.any() else np.arange(len(table))
        row = table.iloc[int(rng.choice(matches[key]))]
        for name in drawn:
            entry = model_conditions[name]
            value = row[name]
            if entry["kind"] == "categorical":
                value = entry["values"][value_index(entry, value)]
            else:
                value = float(value)
            out[name].append(value)
    return out
