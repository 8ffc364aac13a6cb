"""Subject labels CSVs: canonical names, checked values, kinds, the manifest's description."""

from __future__ import annotations

from pathlib import Path

import pytest

from oasis_vqvae.data.labels import canonical_name, case_key, describe, read_case_labels
from oasis_vqvae.errors import DataError


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("column", "name"),
    [("Age", "age"), ("M/F", "sex"), ("Sex", "sex"), ("Gender", "sex"), ("CDR", "cdr"),
     ("eTIV", "etiv"), ("nWBV", "nwbv"), (" MMSE ", "mmse"), ("Site name", "site_name")],
)  # fmt: skip
def test_column_names_become_canonical(column: str, name: str) -> None:
    assert canonical_name(column) == name


@pytest.mark.parametrize(
    ("cell", "case"), [("7", 7), ("007", 7), ("case_007", 7), ("OAS-case-012", 12), ("x7", None)]
)
def test_case_cells(cell: str, case: int | None) -> None:
    assert case_key(cell) == case


def test_a_user_csv_is_read_with_canonical_names_and_kinds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffCase,Age,M/F,CDR,MMSE,Site,Score\n"
        "001,74,F,0,29,north,1.5\n"
        "\n"  # blank lines are ignored
        "case_2,55.5,male,0.5,,south,2\n"
        "3,,f,,N/A,,NaN\n",
    )
    labels = read_case_labels(path, location="labels.csv")
    assert labels.rows == {
        "1": {"age": 74.0, "sex": "F", "cdr": 0.0, "mmse": 29.0, "site": "north", "score": 1.5},
        "2": {"age": 55.5, "sex": "M", "cdr": 0.5, "mmse": None, "site": "south", "score": 2.0},
        "3": {"age": None, "sex": "F", "cdr": None, "mmse": None, "site": None, "score": None},
    }
    assert labels.kinds == {
        "age": "continuous",
        "sex": "categorical",
        "cdr": "categorical",
        "mmse": "continuous",
        "site": "categorical",
        "score": "continuous",
    }
    assert labels.lines == {"1": 2, "2": 4, "3": 5}


BAD = [
    ("age,sex\n74,F\n", r"labels.csv: no 'case' column \(columns: age, sex\)"),
    ("case,age\n1,74\n2,6\n1,8\n", r"labels.csv: line 4, column case: '1' again \(first on line 2"),
    ("case,age\n001,74\n1,80\n", r"labels.csv: line 3, column case: '1' again"),
    ("case,age\n1,74\n,80\n", r"labels.csv: line 3, column case: no value"),
    ("case,age\nseven,74\n", r"labels.csv: line 2, column case: 'seven' is not a case number"),
    ("case,Age\n1,74\n2,old\n", r"labels.csv: line 3, column Age: 'old' is not a number"),
    ("case,age\n1,-3\n", r"labels.csv: line 2, column age: age '-3' is outside \[0, 130\]"),
    ("case,age\n1,inf\n", r"labels.csv: line 2, column age: 'inf' is not a number"),
    ("case,CDR\n1,0\n2,1.5\n", r"labels.csv: line 3, column CDR: unknown CDR '1.5'"),
    ("case,cdr\n1,mild\n", r"labels.csv: line 2, column cdr: 'mild' is not a number"),
    ("case,M/F\n1,F\n2,X\n", r"labels.csv: line 3, column M/F: unknown sex 'X' \(expected F or M"),
    ("case,mmse\n1,high\n", r"labels.csv: line 2, column mmse: 'high' is not a number"),
    ("case,Sex,M/F\n1,F,F\n", r"labels.csv: columns 'Sex' and 'M/F' both mean 'sex'"),
    ("case,slice_level\n1,0.5\n", r"labels.csv: column 'slice_level' is reserved"),
    ("case,age\n1,74,F\n", r"labels.csv: line 2: 3 cells, the header has 2"),
    ("", r"labels.csv: empty"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_labels_name_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_case_labels(write(tmp_path, text), location="labels.csv")


def test_a_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DataError, match="labels.csv: not a readable UTF-8 CSV"):
        read_case_labels(path, location="labels.csv")


def test_describe_lists_kinds_values_ranges_and_counts_per_split() -> None:
    metadata = {
        "a": {"age": 70.0, "sex": "F", "cdr": 0.5, "delay": None},
        "b": {"age": 20.0, "sex": "M", "cdr": 0.0, "delay": None},
        "c": {"age": None, "sex": "F", "cdr": 0.0, "delay": None},
        "unused": {"age": 99.0, "sex": "M", "cdr": 2.0, "delay": 3.0},
    }
    kinds = {"age": "continuous", "sex": "categorical", "cdr": "categorical", "delay": "continuous"}
    specs = describe(kinds, metadata, {"train": ["a", "b"], "validate": ["c"], "test": ["d"]})
    assert specs == {
        "slice_level": {"kind": "continuous", "range": [0.0, 1.0]},
        "age": {
            "kind": "continuous",
            "range": [20.0, 70.0],
            "counts": {"train": 2, "validate": 0, "test": 0},
        },
        "sex": {
            "kind": "categorical",
            "values": ["F", "M"],
            "counts": {
                "train": {"F": 1, "M": 1},
                "validate": {"F": 1, "M": 0},
                "test": {"F": 0, "M": 0},
            },
        },
        "cdr": {
            "kind": "categorical",
            "values": [0.0, 0.5],
            "counts": {
                "train": {"0.0": 1, "0.5": 1},
                "validate": {"0.0": 1, "0.5": 0},
                "test": {"0.0": 0, "0.5": 0},
            },
        },
    }  # delay: no subject of the dataset has a value, so it is no condition
