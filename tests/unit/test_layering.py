"""The layers import one way (issue 16): data flows topic -> runtime -> processor -> sink -> view.

Every module's imports (module level and inside functions) are read with ``ast`` and checked:
  * each package imports only from its own layer or the layers below it (``ALLOWED``);
  * no import circle between modules.
Lower layers never import higher ones, so a processor can be tested without Kafka and the read API
without the stream runtime.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("infra", "schemas", "processors", "sinks", "streams", "api", "demo")

# layer -> the layers it may import (itself included). Order of the flow: infra and schemas at the
# bottom, pure processors, sinks (Redis/S3 writes), Kafka plumbing, the runtime, the capabilities'
# wiring (agents and their shells), ops; the read API reads views (and, for ops status, Kafka
# metadata); the CLI and the demo sit on top of everything.
BASE = {"infra", "schemas"}
ALLOWED: dict[str, set[str]] = {
    "infra": {"infra"},
    "schemas": {"schemas"},
    "processors": BASE | {"processors"},
    "sinks": BASE | {"processors", "sinks"},
    "streams.kafka": BASE | {"processors", "streams.kafka"},
    "streams.runtime": BASE | {"processors", "sinks", "streams.kafka", "streams.runtime"},
    "streams.capabilities": BASE | {"processors", "sinks", "streams.kafka", "streams.runtime", "streams.capabilities"},
    "streams.agents": BASE | {"processors", "sinks", "streams.kafka", "streams.runtime", "streams.capabilities",
                              "streams.agents"},
    "streams.ops": BASE | {"processors", "sinks", "streams.kafka", "streams.runtime", "streams.capabilities",
                           "streams.agents", "streams.ops"},
    "api": BASE | {"processors", "sinks", "streams.kafka", "streams.ops", "streams.runtime", "api"},
    # the CLI: every stream layer, never the read API (its `api` and `token` commands come in through the
    # vitrina.commands entry point, infra/commands.py)
    "streams.cli": BASE | {"processors", "sinks", "streams.kafka", "streams.runtime", "streams.capabilities",
                           "streams.agents", "streams.ops", "streams.cli", "demo"},
    "demo": None,
}


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # ``if TYPE_CHECKING:`` imports exist for annotations only, never at run time
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_import_goes_up_a_layer() -> None:
    known = modules()
    wrong = []
    for name, path in sorted(known.items()):
        layer = layer_of(name)
        allowed = ALLOWED.get(layer) if layer else None
        if layer is None or allowed is None:
            continue
        for target in sorted(imports_of(path, name, known)):
            target_layer = layer_of(target)
            if target_layer is not None and not any(target_layer == a or target_layer.startswith(a + ".")
                                                    for a in allowed):
                wrong.append(f"{name} ({layer}) imports {target} ({target_layer})")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    known = modules()
    graph = {name: imports_of(path, name, known) for name, path in known.items()}
    # a package importing its own submodules (``__init__`` re-exports) is not a circle
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles[:20])
