"""The one list of engine processors (streams/runtime/engine/__init__.py PROCESSORS) names every processor
the agents register: the status page and ops tools find the app's consumer groups there."""
from __future__ import annotations

import ast
from pathlib import Path

from streams.runtime.engine import PROCESSORS, app_groups, processor_group

AGENTS = Path(__file__).resolve().parents[3] / "streams" / "agents"


def registered_names() -> set[str]:
    """Names of the classes passed to register(...) in streams/agents/*.py, read from the source."""
    names: set[str] = set()
    for path in AGENTS.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        constants: dict[str, str] = {}
        for node in tree.body:
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                    constants[target.id] = node.value.value
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    constants.update({t.id: v.value for t, v in zip(target.elts, node.value.elts)
                                      if isinstance(t, ast.Name) and isinstance(v, ast.Constant)})
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args \
                    and isinstance(node.args[0], ast.Call) and getattr(node.args[0].func, "id", None) in classes:
                for item in classes[node.args[0].func.id].body:
                    if isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "name" for t in item.targets):
                        value = item.value
                        names.add(value.value if isinstance(value, ast.Constant) else constants[value.id])
    return names


def test_every_registered_processor_is_listed_once():
    found = registered_names()
    assert found == set(PROCESSORS), (sorted(found - set(PROCESSORS)), sorted(set(PROCESSORS) - found))
    assert len(PROCESSORS) == len(set(PROCESSORS))


def test_the_apps_groups_are_the_faust_group_and_one_per_processor():
    groups = app_groups("vitrina")
    assert groups[0] == "vitrina" and len(groups) == len(PROCESSORS) + 1
    assert processor_group("vitrina", "viewer-history") in groups
