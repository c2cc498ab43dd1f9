"""Import cycles among convcore's modules, read from the source with ``ast``.

    python scripts/import_cycles.py [--deferred] [--sizes] [SOURCE_ROOT]

Each ``.py`` file under ``convcore/`` is a module; ``import a.b`` and
``from a import b`` (relative forms included) are edges to the convcore
module they name: ``from pkg import name`` points at ``pkg.name`` when that
is a module, else at ``pkg``.  By default only the imports that run when the
module is imported count (statements at module level, including those under
``if``/``try``); ``--deferred`` adds the imports written inside functions and
classes, which break a cycle at import time but still tie two modules to each
other.  Every strongly connected component of more than one module (or a
module importing itself) is printed; the exit status is 1 when there is one.

``--sizes`` prints, for the training and model code, the line count of the
largest module and of the largest function instead.
"""
from __future__ import annotations

import ast
import os
import sys


def modules(root):
    """{dotted name: path} of every module of the ``convcore`` package under `root`."""
    out = {}
    base = os.path.join(root, "convcore")
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__pycache__")))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(d, f)
    return out


def _top_level(tree):
    """The statements that run at import time (not inside defs or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            todo.extend(getattr(node, field, []) or [])


def imports_of(name, path, known, deferred=False):
    """The convcore modules that module `name` (file `path`) imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = os.path.basename(path) == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    nodes = ast.walk(tree) if deferred else _top_level(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(name) if not deferred else None
    return found


def graph(root, deferred=False):
    known = modules(root)
    return {m: imports_of(m, p, known, deferred) for m, p in known.items()}


def cycles(g):
    """Strongly connected components with a cycle (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in g:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in g[v]:
                        out.append(sorted(comp))
    return sorted(out)


def sizes(root, prefixes=("convcore.train", "convcore.models")):
    """(lines, module) of the largest module and (lines, function) of the
    largest function under each prefix."""
    known = modules(root)
    rows = []
    for prefix in prefixes:
        mods = {m: p for m, p in known.items() if m == prefix or m.startswith(prefix + ".")}
        big_mod, big_fn = (0, ""), (0, "")
        for m, p in mods.items():
            with open(p, encoding="utf-8") as f:
                src = f.read()
            big_mod = max(big_mod, (len(src.splitlines()), m))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    big_fn = max(big_fn, (n, f"{m}.{node.name}"))
        rows.append((prefix, big_mod, big_fn))
    return rows


def main(argv):
    deferred = "--deferred" in argv
    args = [a for a in argv if not a.startswith("--")]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "--sizes" in argv:
        for prefix, (ml, m), (fl, fn) in sizes(root):
            print(f"{prefix}: largest module {m} ({ml} lines), "
                  f"largest function {fn} ({fl} lines)")
        return 0
    found = cycles(graph(root, deferred))
    kind = "module-level and deferred" if deferred else "module-level"
    for c in found:
        print(" <-> ".join(c))
    print(f"{len(found)} import cycle(s) among convcore's modules ({kind} imports)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
