"""The stdlib's layout holds (docs/architecture.md, "Layout"): the flow API
(stdlib/rill/, stdlib/rill/connectors/) requires nothing of the engine
(stdlib/rill/engine/), no module requires itself through others (a cycle),
and no module is longer than MAX_LINES. Every `require` of a module name
written out counts, at the top of a file or inside a function (a late
require is a dependency all the same). Reads the files only: no rill runs."""
import os
import re
import tempfile

from lib.harness import ROOT, eq, main, test

STDLIB = os.path.join(ROOT, "stdlib")
MAX_LINES = 500
ENGINE = "rill.engine."
# require "x", require("x"), pcall(require, "x")
REQUIRE = re.compile(r"""\brequire\s*(?:\(\s*|,\s*)?["']([\w.]+)["']""")


def modules(root):
    """name -> path of every .lua file under root, named as the binary names it (tools/embed.c)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".lua"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, root)[:-len(".lua")].replace(os.sep, ".")
                out[name[:-len(".init")] if name.endswith(".init") else name] = path
    return out


def code_lines(path):
    """The file's lines with their comments cut (a `--` outside a string)."""
    with open(path) as f:
        for line in f:
            yield re.sub(r"--(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$).*", "", line)


def graph(root):
    """module -> the stdlib modules it requires (C modules and others left out)."""
    mods = modules(root)
    return {m: sorted({r for line in code_lines(p) for r in REQUIRE.findall(line) if r in mods and r != m})
            for m, p in mods.items()}


def cycles(g):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, []):
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
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def describe(g, comp):
    return "; ".join(f"{m} -> {', '.join(x for x in g[m] if x in comp)}" for m in comp)


@test
def the_checker_sees_late_requires_and_finds_a_cycle_through_them():
    # a stdlib of three modules, the cycle closed by a require inside a function
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "rill", "engine"))
    files = {
        "rill/a.lua": 'local b = require "rill.b" -- require "rill.c" (a comment)\nreturn {}\n',
        "rill/b.lua": 'local function f() return require("rill.engine.c").x end\nreturn { f = f }\n',
        "rill/engine/c.lua": 'local ok, a = pcall(require, "rill.a")\nlocal j = require "rill.c.os"\nreturn {}\n',
    }
    for name, text in files.items():
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    g = graph(root)
    eq(g, {"rill.a": ["rill.b"], "rill.b": ["rill.engine.c"], "rill.engine.c": ["rill.a"]}, "edges")
    eq(cycles(g), [["rill.a", "rill.b", "rill.engine.c"]], "the cycle")


@test
def the_stdlib_has_no_require_cycle():
    g = graph(STDLIB)
    assert sum(len(r) for r in g.values()) > 100, f"the parser found the stdlib's requires: {g}"
    found = cycles(g)
    eq(found, [], "require cycles: " + " | ".join(describe(g, c) for c in found))


@test
def the_flow_api_requires_nothing_of_the_engine():
    g = graph(STDLIB)
    api = [m for m in g if not m.startswith(ENGINE)]
    assert "rill.json" in api and "rill.connectors.base" in api, f"flow API modules: {api}"
    wrong = {m: [r for r in g[m] if r.startswith(ENGINE)] for m in api}
    eq({m: r for m, r in wrong.items() if r}, {}, "flow API modules that require engine modules")


@test
def no_stdlib_module_is_longer_than_the_bound():
    long = {}
    for name, path in modules(STDLIB).items():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[name] = n
    eq(long, {}, f"modules over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
