"""Print spiritlens' module import graph: cycles, private cross-package imports, largest modules.

Every ``import``/``from ... import`` in a module counts, at any depth (inside functions too), except
those under ``if TYPE_CHECKING:``. A module imports the modules it names; ``from pkg import name``
counts as importing ``pkg.name`` when that is a module, else ``pkg``. Importing ``pkg.sub`` also
runs ``pkg/__init__.py``, but that edge is left out: the graph is of what each file asks for.

Usage::

    python scripts/import_graph.py [--src src] [--top 15] [--check]

``--check`` exits 1 when there is an import cycle or a private name imported from another package.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, own: str, is_package: bool, modules: set[str]):
    """Yield ``(target_module, imported_names)`` for each import in ``tree``."""

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from visit_one(sub)
                continue
            yield from visit_one(child)

    def visit_one(node):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own.split(".") if is_package else own.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    yield sub, []
                else:
                    yield target, [alias.name]
        else:
            yield from visit(node)

    yield from visit(tree)


def build_graph(src: Path, package: str = "spiritlens"):
    files = {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, names in _imports(tree, mod, path.name == "__init__.py", modules):
            if target not in modules or target == mod:
                continue
            graph[mod].add(target)
            own_pkg, target_pkg = mod.split(".")[:2], target.split(".")[:2]
            for name in names:
                if name.startswith("_") and not name.startswith("__") and own_pkg != target_pkg:
                    private.append(f"{mod} imports private {target}.{name}")
            if target.rsplit(".", 1)[-1].startswith("_") and target.split(".")[:2] != own_pkg \
                    and target != f"{package}._io":
                private.append(f"{mod} imports private module {target}")
    return files, graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--top", type=int, default=15, help="how many of the largest modules to list")
    parser.add_argument("--check", action="store_true", help="exit 1 on a cycle or a private import")
    args = parser.parse_args(argv)
    files, graph, private = build_graph(Path(args.src))
    found = cycles(graph)
    print(f"{len(files)} modules, {sum(len(v) for v in graph.values())} import edges")
    print(f"import cycles: {len(found)}")
    for comp in found:
        print(f"  {len(comp)} modules: " + " ".join(comp))
    print(f"private names imported across packages: {len(private)}")
    for line in private:
        print("  " + line)
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in files.items()), reverse=True)
    print("largest modules (lines):")
    for n, m in sizes[: args.top]:
        print(f"  {n:5d} {m}")
    return 1 if args.check and (found or private) else 0


if __name__ == "__main__":
    sys.exit(main())
