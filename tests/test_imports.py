"""The package's import graph has no cycle, and its layers import downwards only.

Every ``import`` in every module counts -- module level or inside a function -- with the
``package-dir`` mapping of pyproject.toml resolved (``signatures/`` is
``judgealign.signatures`` ...), and importing ``a.b.c`` counting as importing ``a`` and ``a.b``
too (Python runs their ``__init__`` first).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {"judgealign": ROOT / "judgealign"}
    mapping.update({pkg: ROOT / folder for pkg, folder in config["package-dir"].items()})
    return mapping


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the installed package."""
    out: dict[str, Path] = {}
    dirs = package_dirs()
    for pkg, folder in dirs.items():
        for file in folder.rglob("*.py"):
            rel = file.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(part.endswith("_build") for part in parts):
                continue  # developer tools beside the data, not installed modules
            name = ".".join([pkg, *parts])
            # A sub-folder that is its own mapped package is listed under that name.
            if not any(name.startswith(other + ".") or name == other
                       for other in dirs if other != pkg and other.startswith(pkg + ".")):
                out[name] = file
    return out


def imports_of(name: str, file: Path, known: set[str]) -> set[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    is_package = file.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # parents run first
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name:
                    found.add(prefix)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, file, known) for name, file in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walker_sees_the_mapped_packages():
    mods = modules()
    assert "judgealign.signatures.rubric" in mods
    assert "judgealign.optimizers.memalign" in mods
    assert "judgealign.datasets" in mods
    assert "judgealign.program" in graph()["judgealign.optimizers.memalign"]


def test_the_walker_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_layers_import_downwards_only():
    edges = graph()
    # Rubrics are data; memory is storage: neither knows the program, the settings or the CLI.
    for name, targets in edges.items():
        if name.startswith("judgealign.signatures"):
            assert not {t for t in targets if t in ("judgealign.program", "judgealign.config",
                                                    "judgealign.build")}, name
        if name.startswith("judgealign.memory"):
            assert "judgealign.config" not in targets and "judgealign.program" not in targets, \
                name
        assert "judgealign.cli" not in targets or name == "judgealign.cli", name
    # The package face re-exports and holds no logic: it imports only its version.
    assert edges["judgealign"] <= {"judgealign._version"}
    assert "judgealign.program" not in edges["judgealign.artifacts"]
    assert "judgealign.memory.episodic" not in edges["judgealign.labels"]
