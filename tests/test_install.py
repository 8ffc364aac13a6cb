"""The installed environment starts stage processes fast: its dependencies are bytecode.

`uv pip install` (unlike pip) compiles nothing by default; where Python may not write
bytecode either (``PYTHONDONTWRITEBYTECODE``, a read-only root), every stage process and every
test's subprocess then compiles TensorFlow, Keras and MLflow again: 21 s instead of 8.5 s per
process start on the 2-core development CPU (benchmarks/startup.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["tensorflow", "keras", "mlflow", "sklearn", "pandas"])
def test_what_every_stage_imports_is_compiled_to_bytecode(package):
    root = Path(importlib.util.find_spec(package).origin).parent
    sources = list(root.rglob("*.py"))
    missing = [p for p in sources if not Path(importlib.util.cache_from_source(str(p))).is_file()]
    assert sources and not missing, (
        f"{len(missing)} of {len(sources)} modules of {package} have no bytecode, e.g. "
        f"{missing[:1]}: reinstall with `make install` (uv --compile-bytecode) or run "
        f"`python -m compileall -q {root.parent}`"
    )
