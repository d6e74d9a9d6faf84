"""Every dvc.yaml stage depends on each module of src/llmops/ its code imports (directly or through another
module), and on no other, so editing a shared module (config.py, artifacts.py, a loader) reruns exactly the stages
that run it. Static: reads dvc.yaml and the modules' import statements, no DVC or model needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "llmops"
# cli.py only parses arguments and is left out of deps on purpose (dvc.yaml says so)
ENTRY = {
    "base": "base",
    "prepare": "prepare",
    "train": "launcher",  # `llmops train-launch`, which runs llmops.train under accelerate
    "eval_base": "evaluate",
    "eval_tuned": "evaluate",
    "judge": "judge",
    "gate": "gate",
    "report": "report",
}


def module_path(name: str) -> Path:
    return PKG / name if (PKG / name).is_dir() else PKG / f"{name}.py"


def imports(name: str) -> set[str]:
    """llmops modules `name` imports (top-level names under llmops), at any depth of the function bodies."""
    files = sorted(module_path(name).rglob("*.py")) if (PKG / name).is_dir() else [module_path(name)]
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] != "llmops":
                    continue
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level and node.module:
                found.add(node.module.split(".")[0])  # relative import inside a package
    return {m for m in found if m != name and module_path(m).exists() and m != "cli"}


# modules that run another as a process (`python -m llmops.<x>`): it runs for the stage as surely as an import
SPAWNS = {"serve_client": {"serve"}}


def closure(name: str) -> set[str]:
    seen, todo = {name}, [name]
    while todo:
        current = todo.pop()
        for dep in (imports(current) | SPAWNS.get(current, set())) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_stage_depends_on_every_module_it_imports(stage):
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"])
    wanted = set()
    for module in closure(ENTRY[stage]):
        path = module_path(module)
        # a package is listed file by file: a folder dep would hash __pycache__ and look changed
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        wanted |= {f.relative_to(ROOT).as_posix() for f in files}
    missing = sorted(wanted - deps)
    assert not missing, f"dvc.yaml stage {stage} imports but does not depend on {missing}"
    stale = sorted(d for d in deps - wanted if d.startswith("src/"))  # a module it no longer runs reruns it for nothing
    assert not stale, f"dvc.yaml stage {stage} depends on {stale} but never imports them"


def test_no_module_imports_itself_back():
    """Issue #27: the modules stay layered. No import cycle through any chain of llmops modules (function-level
    imports included), so every module can be read and tested from the bottom up."""
    modules = [p.stem for p in PKG.glob("*.py") if p.stem != "__init__"] + [p.name for p in PKG.iterdir() if p.is_dir()]
    graph = {m: imports(m) for m in modules if module_path(m).exists()}
    cycles = []
    for start in graph:
        todo = [(start, [start])]
        while todo:
            node, path = todo.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    cycles.append(" -> ".join([*path, dep]))
                elif dep not in path:
                    todo.append((dep, [*path, dep]))
    assert not cycles, cycles[:5]
