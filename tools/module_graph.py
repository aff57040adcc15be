#!/usr/bin/env python3
"""Which module of `src/` uses which, and whether any two use each other.

usage: tools/module_graph.py [--list]

Reads every `crate::...` and `super::...` path in src/ (use lines and inline paths,
comments excluded) and reduces it to the modules one level below the crate root, and one
level below `inference` and `household` (the two with rooms of their own). A cycle at
that level (a module that uses one that uses it back, directly or around a loop) fails
with exit status 1, the loop printed. CI runs it; `--list` prints every edge.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
DEEP = {"inference", "household"}


def module_of(path):
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return []
    return parts


def unit(parts):
    """The graph's node for a module path."""
    if not parts:
        return None
    if parts[0] in DEEP and len(parts) > 1:
        return f"{parts[0]}::{parts[1]}"
    return parts[0]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def strip_tests(text):
    """Drop `#[cfg(test)]` items: what a module's own tests use is not its dependency."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if k < 0 or (0 <= semi < k):  # `#[cfg(test)] use ...;` or `mod tests;`
            i = semi + 1
            continue
        depth = 0
        for pos in range(k, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    break
        i = pos + 1


def is_module(parts):
    """A path names a module of src/ (not a function of the crate root like error_chain)."""
    return (SRC.joinpath(*parts).with_suffix(".rs").exists()
            or SRC.joinpath(*parts, "mod.rs").exists())


def uses(path, mod):
    text = strip_tests(strip_comments(path.read_text()))
    found = set()
    # use crate::{a::X, b};  ->  a, b
    for m in re.finditer(r"crate::\{([^}]*)\}", text):
        for item in m.group(1).split(","):
            item = item.strip()
            if item:
                found.add(tuple(p for p in item.split("::") if p and p[0].islower() and p != "self"))
    for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        found.add(tuple(m.group(1).split("::")))
    for m in re.finditer(r"\b((?:super::)+)((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)?", text):
        up = m.group(1).count("super::")
        # a file's `super` is its parent module (mod.rs: the module itself is the file's dir)
        base = mod[: len(mod) - up] if len(mod) >= up else []
        rest = (m.group(2) or "").split("::") if m.group(2) else []
        found.add(tuple(base + [p for p in rest if p]))
    found = {f for f in found if f and is_module(list(f[:1]))}
    return {u for u in (unit(list(f)) for f in found) if u}


def main():
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        mod = module_of(path)
        me = unit(mod)
        # A file of tests only (`#[cfg(test)] mod tests;`) is no module's dependency.
        if me is None or (mod and (mod[-1] == "tests" or mod[-1].endswith("_tests"))):
            continue
        for other in uses(path, mod):
            if other != me and not (me.startswith(other + "::") or other.startswith(me + "::")):
                edges.setdefault(me, set()).add(other)
    if "--list" in sys.argv:
        for a in sorted(edges):
            print(f"{a} -> {', '.join(sorted(edges[a]))}")
    # Find cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    if sccs:
        for comp in sccs:
            inner = [f"{a} -> {b}" for a in comp for b in sorted(edges.get(a, ())) if b in comp]
            print("FAIL modules that use each other: " + "; ".join(inner))
        sys.exit(1)
    n = sum(len(v) for v in edges.values())
    print(f"ok   no module uses one that uses it back ({len(edges)} modules, {n} edges)")


main()
