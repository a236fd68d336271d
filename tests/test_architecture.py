"""The package's shape: the layers are folders, import-linter holds them (pyproject.toml), every
module has a place in that order, there is no import cycle, and no module outgrows a reader
(docs/architecture.md draws it)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "identity"
VERIFIER = ROOT / "verifier" / "identity_verifier"
MAX_LINES = 400


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = (c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [name.strip() for layer in contract["layers"] for name in layer.split("|")]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (`identity.tokens.jws`)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def test_import_linter_keeps_the_layers() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    # The layers, and the verifier distribution standing alone (verifier/).
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_has_a_layer() -> None:
    """A module outside every layer would escape the contract: each top-level module and
    subpackage must be named in it."""
    layers = set(contract_layers())
    top = {f"identity.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    top |= {
        f"identity.{path.name}" for path in PACKAGE.iterdir() if (path / "__init__.py").exists()
    }
    assert top - layers == set(), "name new modules in pyproject.toml's layers contract"


def test_the_tree_shows_the_layers() -> None:
    subpackages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    top_modules = list(PACKAGE.glob("*.py"))
    assert len(subpackages) >= 4
    assert len(top_modules) <= 15


def imports_of(path: Path, name: str) -> set[str]:
    """The package modules `path` (module `name`) imports."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    found.add(f"{source}.{alias.name}")
                elif source in known:
                    found.add(source)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
    return found - {name}


def test_the_import_graph_has_no_cycle() -> None:
    edges = {name: imports_of(path, name) for name, path in modules().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_outgrows_a_reader() -> None:
    """Modules are nouns of 40-300 lines; none passes 400 (the verifier's included)."""
    paths = [*modules().values(), *VERIFIER.glob("*.py")]
    long = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in paths
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert long == {}
