"""Dependencies point one way: plugins (rewards, shapers) are leaves that the task, model,
analysis and logging layers never import; shared helpers live below both (STYLE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # holds the rlvr_exp package
LOWER_LAYERS = ("tasks", "models", "analysis", "logging")
PLUGINS = ("rlvr_exp.rewards", "rlvr_exp.shapers")


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-local imports included),
    with relative imports resolved against its package; ``from a import b`` yields a and a.b."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def plugin_imports(path: Path, root: Path = ROOT) -> list[str]:
    return sorted(m for m in imported_modules(path, root) if any(m == p or m.startswith(p + ".") for p in PLUGINS))


def test_parser_sees_every_import_form(tmp_path: Path) -> None:
    probe = tmp_path / "rlvr_exp" / "analysis" / "x.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import rlvr_exp.shapers.ppl\nfrom rlvr_exp import rewards\n"
                     "def f():\n    from ..shapers import ppl\n    from .live import StepMeter\n")
    found = imported_modules(probe, tmp_path)
    assert {"rlvr_exp.shapers.ppl", "rlvr_exp.rewards", "rlvr_exp.shapers", "rlvr_exp.analysis.live"} <= found
    assert plugin_imports(probe, tmp_path) == ["rlvr_exp.rewards", "rlvr_exp.shapers", "rlvr_exp.shapers.ppl"]


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_never_import_plugins(layer: str) -> None:
    files = sorted((ROOT / "rlvr_exp" / layer).rglob("*.py"))
    assert files, f"rlvr_exp/{layer} has no modules"
    arrows = [f"{f.relative_to(ROOT)} -> {m}" for f in files for m in plugin_imports(f)]
    assert not arrows, "move the shared helper below both layers:\n" + "\n".join(arrows)


@pytest.mark.parametrize("module", ["answers.py", "algos/stats.py"])
def test_shared_helpers_import_nothing_from_the_package(module: str) -> None:
    inside = {m for m in imported_modules(ROOT / "rlvr_exp" / module) if m.startswith("rlvr_exp")}
    assert not inside, inside
