"""The package's dependencies point one way (ARCHITECTURE.md): a test, so an arrow the wrong way fails.

Every ``import`` of an attrfit module counts, at module level or inside a function: an
import inside a function is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "attrfit"

# Lowest first. A module may import from its own layer and the layers before it, never after.
LAYERS = ["core", "data", "model", "recipe", "evaluation", "training", "serving", "cli"]
# Inference (scoring, the report, prediction, export) never needs the training machinery.
FORBIDDEN = {"evaluation": {"training"}, "serving": {"training"}}
TOP_LEVEL = {"__init__", "__main__"}  # the Python API and `python -m attrfit`: above everything


def module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> set[str]:
    """The attrfit modules ``path`` imports, resolved to module names (``attrfit.data.table``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path, src)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attrfit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if not base.startswith("attrfit"):
                continue
            for a in node.names:
                candidate = f"{base}.{a.name}"
                found.add(candidate if _is_module(candidate, src) else base)
    return {m for m in found if m != here}


def _is_module(name: str, src: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in TOP_LEVEL else "top"


def graph(src: Path = SRC) -> dict[str, set[str]]:
    return {module_name(p, src): imports_of(p, src) for p in sorted(src.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    stray = [m for m in graph() if layer_of(m) not in LAYERS and m not in ("attrfit", "attrfit.__main__")]
    assert stray == [], f"modules outside the layers {LAYERS}: {stray}"


def wrong_arrows(g: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, deps in g.items():
        mine = layer_of(module)
        if mine == "top" or module in ("attrfit", "attrfit.__main__"):
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs == "top" and mine == "cli":  # the command line calls the Python API (attrfit.train, ...)
                continue
            if theirs == "top" or LAYERS.index(theirs) > LAYERS.index(mine) or theirs in FORBIDDEN.get(mine, ()):
                wrong.append(f"{module} -> {dep}")
    return sorted(wrong)


def test_dependencies_point_down_the_layers():
    wrong = wrong_arrows(graph())
    assert wrong == [], "imports against the layer order (ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_command_line_uses_argparse():
    users = [module_name(p) for p in SRC.rglob("*.py") if "argparse" in {
        a.name for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(n, ast.Import) for a in n.names}]
    assert all(layer_of(m) == "cli" for m in users), users


@pytest.mark.parametrize("bad,found", [
    ("import attrfit.training.loop", "attrfit.evaluation.scoring -> attrfit.training.loop"),
    ("from attrfit.cli import app", "attrfit.evaluation.scoring -> attrfit.cli.app"),
    ("from ..training import loop", "attrfit.evaluation.scoring -> attrfit.training.loop"),
])
def test_the_check_sees_a_wrong_arrow(tmp_path, bad, found):
    """The contract itself works: in a copy of the package, a planted upward import is reported."""
    import shutil

    src = tmp_path / "attrfit"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    scoring = src / "evaluation" / "scoring.py"
    scoring.write_text(scoring.read_text(encoding="utf-8") + f"\n\ndef planted():\n    {bad}\n", encoding="utf-8")
    assert wrong_arrows(graph(src)) == [found]
