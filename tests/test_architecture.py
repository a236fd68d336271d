"""The package's shape: data flows one way (HTTP -> services -> stores), no import cycle, and
every module has a place in that order (docs/architecture.md draws it)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "identity"

# Lower layers never import higher ones; a module may import its own layer and those below.
LAYERS: dict[str, int] = {
    # 0 - foundation: values, rules and documents with no I/O of their own
    **dict.fromkeys(
        [
            "clock", "errors", "environment", "providers_file", "settings", "addresses", "tracing",
            "logs", "metrics", "pages", "jws", "claims", "refresh_tokens", "provider_tokens",
            "models", "discovery", "openapi",
        ],
        0,
    ),
    # 1 - stores and outside resources: the database, remote key sets, key files, mail
    **dict.fromkeys(["database", "jwks_cache", "signing_keys", "mail"], 1),
    # 2 - services over the data and the tokens
    **dict.fromkeys(
        [
            "audit", "limits", "access_tokens", "providers", "id_tokens", "sign_in", "rotation",
            "sessions", "email_verification", "users", "admin", "housekeeping",
        ],
        2,
    ),
    # 3 - the grants and client authentication
    **dict.fromkeys(["grants", "clients"], 3),
    # 4 - HTTP: reading requests, rendering answers, middleware, endpoints
    **dict.fromkeys(
        [
            "inputs", "rendering", "bearer", "middleware", "oauth_endpoints", "user_endpoints",
            "admin_endpoints", "public_endpoints",
        ],
        4,
    ),
    # 5 - composition and entry points (and the public verifier for other services)
    **dict.fromkeys(["app", "cli", "admin_commands", "verifier", "__main__", "__init__"], 5),
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("identity.")
        ):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("identity."))
    return {name for name in found if (PACKAGE / f"{name}.py").exists()}  # modules, not names


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in PACKAGE.glob("*.py")}


def test_every_module_has_a_layer() -> None:
    assert set(graph()) == set(LAYERS), "place new modules in LAYERS (and docs/architecture.md)"


def test_nothing_imports_a_module_above_it() -> None:
    upward = [
        f"{module} (layer {LAYERS[module]}) imports {target} (layer {LAYERS[target]})"
        for module, targets in graph().items()
        for target in targets
        if LAYERS[target] > LAYERS[module]
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
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


def test_long_modules_say_why() -> None:
    """Modules are nouns of 40-300 lines; a longer one says at its top why it is longer."""
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 320:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            assert "Longer than" in docstring, (
                f"{path.name}: {len(text.splitlines())} lines, no reason given"
            )
