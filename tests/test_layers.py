"""hvac_push's layers, as every module's imports (docs/architecture.md): who may import whom, and no import
circle.

Every import counts, type-only ones (under C{TYPE_CHECKING}) and those inside
functions included, so a circle cannot hide from this test the way it can
from Python at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hvac_push"

#: Layer -> the layers of hvac_push it may import (itself included).
ALLOWED = {
    "core": {"core"},
    "sources": {"core", "sources"},
    "analytics": {"core", "analytics"},
    "store": {"core", "analytics", "store"},
    "transport": {"core", "analytics", "store", "transport"},
    "ops": {"core", "sources", "analytics", "store", "transport", "ops", "client"},
    "client": {"client"},
}
#: Outside hvac_push, the core uses only the standard library and Twisted's logger.
CORE_THIRD_PARTY = {"twisted.logger"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every module C{path} imports, with relative imports resolved."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def internal_imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    return {m for m in imports_of(path, module) if m in known and m != module}


def test_every_module_lives_in_a_layer_or_is_the_public_top():
    top = {m for m in modules() if layer_of(m) is None}
    assert top <= {"hvac_push", "hvac_push.testing", "hvac_push.__main__"}, sorted(top)


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer_of(m) is not None))
def test_a_layer_imports_only_the_layers_below_it(module):
    known = modules()
    layer = layer_of(module)
    assert layer is not None
    wrong = sorted(
        m for m in internal_imports(module, known[module], known)
        if m != "hvac_push" and layer_of(m) not in ALLOWED[layer]
    )
    assert not wrong, f"{module} ({layer}) imports {wrong}"
    assert "hvac_push" not in imports_of(known[module], module), f"{module} imports the package top"


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer_of(m) == "core"))
def test_the_core_needs_nothing_but_the_standard_library_and_the_twisted_logger(module):
    import sys

    outside = {
        m for m in imports_of(modules()[module], module)
        if not m.startswith("hvac_push") and m.split(".")[0] not in sys.stdlib_module_names
        and m not in CORE_THIRD_PARTY and m.rpartition(".")[0] not in CORE_THIRD_PARTY
    }
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer_of(m) == "sources"))
def test_sources_never_see_the_hub(module):
    assert not {"hvac_push.core.hub", "hvac_push.core.follow"} & imports_of(modules()[module], module)


def test_there_is_no_import_circle():
    known = modules()
    graph = {m: internal_imports(m, p, known) - {"hvac_push"} for m, p in known.items()}
    # Parent packages are imported implicitly; they hold only docstrings or re-exports.
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, trail + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_checker_sees_a_type_only_import_from_above(tmp_path):
    """The test itself can fail: a type-only upward import is caught."""
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hvac_push.ops.service import PushService\n"
    )
    assert "hvac_push.ops.service" in imports_of(source, "hvac_push.core.x")
    assert layer_of("hvac_push.ops.service") not in ALLOWED["core"]


def test_the_client_and_the_value_types_load_without_twisted_or_autobahn():
    import subprocess
    import sys

    probe = (
        "import sys, hvac_push, hvac_push.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'autobahn', 'txaio'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=PACKAGE.parent, check=True).stdout
    assert out.strip() == "[]"
