"""No import cycles anywhere in the packages, between folders or between the modules of one folder.

Import-linter's layers keep the folders in order; this finds any loop at the level of single modules
(including imports made only for type checking), which layers cannot express inside one folder.

    python -m pytest tests/test_import_cycles.py
"""

from __future__ import annotations

import grimp

PACKAGES = ("starchat_cli", "converters")


def import_cycles(*packages: str) -> list[list[str]]:
    """The strongly connected groups of modules (more than one module) in the import graph."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    # Tarjan's algorithm, iterative: the graph is small but recursion depth is not ours to pick.
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_no_import_cycles():
    assert import_cycles(*PACKAGES) == []


def test_a_cycle_is_found(tmp_path, monkeypatch):
    """The check can fail: two modules that import each other are one group."""
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loopy import b\n")
    (pkg / "b.py").write_text("from loopy import a\n")
    (pkg / "c.py").write_text("from loopy import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("loopy") == [["loopy.a", "loopy.b"]]
