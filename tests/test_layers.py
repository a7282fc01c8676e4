"""The package's layers: a module imports only from its own layer or those below it (imports for
type checking only do not count), so the layout shows the stages and no cycle can form."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pseudolabel"
LAYERS = [
    {"core"},
    {"datasets", "models"},
    {"labelers", "refiners", "export", "corrections", "evaluate"},
    {"runner"},
    {"report", "train"},
    {"settings", "registry"},
    {"api", "cli", "__init__", "__main__"},
]
"""Bottom first: the first part of a module's name below ``pseudolabel`` picks its layer."""


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(index for index, names in enumerate(LAYERS) if top in names)


def _runtime_imports(path: Path) -> set[str]:
    """The pseudolabel modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pseudolabel."):
            found.add(node.module.removeprefix("pseudolabel."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("pseudolabel.") for a in node.names if a.name.startswith("pseudolabel."))
    return found


def test_every_module_belongs_to_a_layer_and_imports_none_above_it() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for imported in _runtime_imports(path):
            if _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_top_level_holds_only_the_entry_points_and_run_building() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == {"__init__", "__main__", "api", "registry", "settings"}
