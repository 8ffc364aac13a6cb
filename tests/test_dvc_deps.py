"""dvc.yaml's deps of each stage cover the project code its stage function runs.

An edit to any module a stage imports (directly, lazily inside a function, or through a
parent package's ``__init__``) may change its outputs, so DVC must see it, or ``dvc repro``
calls stale results up to date. The stages come from the one list,
``oasis_vqvae.stages.STAGES``, and stage ``x-y`` runs ``oasis_vqvae.stages.x_y.x_y``, so
stages and modules added later are checked too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import oasis_vqvae
from oasis_vqvae.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "oasis_vqvae"
ROOT = Path(oasis_vqvae.__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The source of project module ``name``, found without importing it (no TensorFlow)."""
    base = ROOT.joinpath(*name.split(".")[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _is_module(name: str) -> bool:
    return name.split(".")[0] == PACKAGE and _module_file(name) is not None


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run: anywhere (functions too) but not under ``if TYPE_CHECKING``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _imported(module: str, path: Path) -> set[str]:
    """Project modules ``module`` (whose source is ``path``) imports when run."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if _is_module(name)}


def import_closure(module: str) -> set[str]:
    """Every project module importing ``module`` runs, parent packages included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            parent = ".".join(parts[:depth])
            if parent in seen:
                continue
            seen.add(parent)
            todo.extend(_imported(parent, _module_file(parent)))
    return seen


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def test_the_closure_sees_lazy_imports_and_skips_type_checking_ones():
    closure = import_closure("oasis_vqvae.stages.train_vqvae")
    # Imported inside train_vqvae() only; and a parent package's __init__ runs too.
    assert {"oasis_vqvae.models", "oasis_vqvae.models.quantizer", "oasis_vqvae"} <= closure
    assert "oasis_vqvae.cli" not in closure


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_cover_the_code_each_stage_runs(stage):
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stage in dvc, f"dvc.yaml has no stage {stage!r}"
    deps = [str(dep) for dep in dvc[stage].get("deps", [])]
    module = f"{PACKAGE}.stages.{stage.replace('-', '_')}"
    missing = sorted(
        str(_module_file(name).relative_to(REPO))
        for name in import_closure(module)
        if not _covered(_module_file(name), deps)
    )
    assert not missing, f"dvc.yaml stage {stage} misses deps on {missing}"
