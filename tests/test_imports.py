"""The library reads top to bottom: every module imports on its own, and the module graph has no cycle.

The graph counts every `import mariofm.x`, `from mariofm.x import ...` and `from mariofm import x`, the ones
inside functions included: a function-local import that only dodges a cycle is still a cycle for a reader.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mariofm"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def imports_of(module: str) -> set[str]:
    """The mariofm modules that `module` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mariofm.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mariofm":
                found |= {a.name for a in node.names}
            elif node.module.startswith("mariofm."):
                found.add(node.module.split(".")[1])
    return found & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of the directed graph, or None (depth-first search, three colours)."""
    state, path = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_module_graph_has_no_cycle():
    graph = {m: imports_of(m) for m in MODULES}
    assert graph["train"] >= {"checkpoint", "flow", "state"}  # the parser sees real imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_core_reads_in_order():
    # config -> flow -> unet -> sample -> checkpoint: each imports only modules before it (and video's helpers);
    # the net imports the path's maths (an x0 guess -> the velocity it implies), never the other way round
    order = ["config", "flow", "unet", "sample", "checkpoint"]
    for i, module in enumerate(order):
        later = imports_of(module) & set(order[i + 1:])
        assert not later, f"mariofm.{module} imports {sorted(later)}, which come after it"


def readme_order() -> list[list[str]]:
    """The README's module table: a list of rows, each the modules that row names (`mariofm/x.py`, `y.py`)."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme.split("| module | what it teaches |")[1].split("\n\n")[0]
    return [re.findall(r"`(?:mariofm/)?(\w+)\.py`", line.split("|")[1]) for line in table.splitlines()[2:]]


def test_the_readme_lists_every_module_in_an_order_a_reader_can_follow():
    rows = readme_order()
    listed = [m for row in rows for m in row]
    assert sorted(listed) == MODULES, f"the README's module table lists {sorted(listed)}, the package has {MODULES}"
    row_of = {m: i for i, row in enumerate(rows) for m in row}
    later = {m: sorted(d for d in imports_of(m) if row_of[d] > row_of[m]) for m in MODULES}
    assert not any(later.values()), ("modules that import one listed below them in the README: "
                                     f"{ {m: d for m, d in later.items() if d} }")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    done = subprocess.run([sys.executable, "-c", f"import mariofm.{module}"], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
