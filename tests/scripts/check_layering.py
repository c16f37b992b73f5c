#!/usr/bin/env python3
"""check_layering.py - the core's dependencies point only down.

Reads the core's built objects with `nm` and fails, listing what it found,
when:
  - two modules of the core depend on each other, directly or through
    others (a cycle), or
  - a layer depends on a layer above it in LAYERS.

Module: one source file of core/, named by its path under core/
("engine/router_step", "gcp/http", "main"). Module A depends on module B
when A's object has an undefined symbol that B's object defines: A calls B
or uses B's data. Symbols from outside the core (libc, jansson, SQLite,
curl ...) do not count.

Layer: the folder under core/ that holds the module (a file directly in
core/, i.e. main.c, is its own layer). A layer may use the layers before
it in LAYERS and not those after it.

The objects are found under $SB_TOP_BUILDDIR/core (libtool .lo files name
the object that went into the library; plain .o files are the program's),
so this runs in any build directory, VPATH builds and `make distcheck`
included. Run by `make check`; by hand:
  SB_TOP_BUILDDIR=_build python3 tests/scripts/check_layering.py
Exit status: 0 clean, 1 a violation, 77 (skipped) when nothing is built.
"""
import os
import re
import shutil
import subprocess
import sys

# Bottom first. docs/ARCHITECTURE.md explains each; keep the two in step.
LAYERS = [
    "util",     # helpers: errors, allocation, clocks, buffers, histograms
    "log",      # logging (knows no instance: the instance module hands it a name hook)
    "events",   # the event model, JSON text, match conditions, templates
    "config",   # config values, plugin options, config files
    "ledger",   # the run ledger (SQLite)
    "engine",   # plugin loader, instances, the router
    "ops",      # admin endpoint, /metrics, systemd notify and watchdog
    "gcp",      # the Google access layer (its own library, for plugins)
    "daemon",   # the run loop and the operator commands
    "main",     # the program
]

# Objects of the core library, the Google library and the program. Tests
# that compile a core source into themselves leave objects with other
# prefixes next to it: those are not the core.
PREFIX = re.compile(r"^(libsyncbridge_la|libsyncbridge_gcp_la|syncbridge)-")


def find_objects(core_dir):
    """{module: object path} for every compiled source of core/."""
    objs = {}
    for root, dirs, files in os.walk(core_dir):
        dirs[:] = [d for d in dirs if d not in (".libs", ".deps", "include")]
        rel = os.path.relpath(root, core_dir)
        for f in files:
            path = os.path.join(root, f)
            if f.endswith(".lo"):
                text = open(path, encoding="utf-8", errors="replace").read()
                obj = None
                for key in ("pic_object", "non_pic_object"):
                    m = re.search(r"^%s='([^']*)'" % key, text, re.M)
                    if m and m.group(1) != "none":
                        obj = os.path.join(root, m.group(1))
                        break
                stem = f[:-3]
            elif f.endswith(".o"):
                obj, stem = path, f[:-2]
            else:
                continue
            if obj is None or not os.path.exists(obj):
                continue
            if not PREFIX.match(stem):
                continue
            name = PREFIX.sub("", stem)
            module = name if rel == "." else rel + "/" + name
            objs.setdefault(module, obj)
    return objs


def symbols(obj):
    """(defined, undefined) external symbols of one object."""
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        sym, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(sym)
        elif kind.isupper() and kind not in ("A", "N"):
            defined.add(sym)
    return defined, undefined


def layer_of(module):
    return module.split("/", 1)[0]


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            visit(v)
    return out


def main():
    build = os.environ.get("SB_TOP_BUILDDIR", ".")
    core_dir = os.path.join(build, "core")
    if not shutil.which("nm"):
        print("SKIP: no nm")
        return 77
    objs = find_objects(core_dir)
    if not objs:
        print("SKIP: no objects under %s (build first)" % core_dir)
        return 77
    defs, undefs = {}, {}
    for module, obj in sorted(objs.items()):
        d, u = symbols(obj)
        undefs[module] = u
        for s in d:
            defs.setdefault(s, module)
    # graph[a][b] = the symbols a uses from b
    graph = {m: {} for m in objs}
    for module, u in undefs.items():
        for s in u:
            owner = defs.get(s)
            if owner and owner != module:
                graph[module].setdefault(owner, []).append(s)

    problems = []
    unknown = sorted({layer_of(m) for m in objs} - set(LAYERS))
    for layer in unknown:
        problems.append("core/%s/ is in no layer: add it to LAYERS in %s" % (layer, os.path.basename(__file__)))
    rank = {name: i for i, name in enumerate(LAYERS)}
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a), layer_of(b)
            if la in rank and lb in rank and rank[lb] > rank[la]:
                problems.append("upward dependency: %s (layer %s) -> %s (layer %s) via %s"
                                % (a, la, b, lb, ", ".join(sorted(graph[a][b]))))
    for comp in find_cycles(graph):
        lines = ["dependency cycle between %s:" % ", ".join(comp)]
        for a in comp:
            for b in sorted(graph[a]):
                if b in comp:
                    lines.append("    %s -> %s via %s" % (a, b, ", ".join(sorted(graph[a][b]))))
        problems.append("\n".join(lines))

    edges = sum(len(v) for v in graph.values())
    print("core: %d modules, %d dependencies between them, layers %s" % (len(objs), edges, " < ".join(LAYERS)))
    if os.environ.get("SB_LAYERING_VERBOSE"):
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print("  %s -> %s" % (a, b))
    if problems:
        for p in problems:
            print("FAIL: " + p)
        return 1
    print("ok: no cycle, no upward dependency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
