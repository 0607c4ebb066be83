"""Runtime, parallel code generation: one whole-step module split into parts that LLVM optimizes
and compiles at the same time, one process per part, then links in one engine.

Takes: an llvmlite `ir.Module` (codegen/step.py's: entry points that call kernels, kernels that
call helpers: GEMM micro-kernels, packing loops, the barrier) and a number of parts.
Gives: `split_module(module, parts)` -> IR texts, each a module of its own, that together define
every function of `module` once (helpers may be defined in several, privately).

How: the entry points (functions no other function refers to) go to part 0. Every function
LLVM may not inline (`noinline`: the kernels a step calls, GEMM micro-kernels, packing loops) is
a unit: it has one home part, where it is defined with external linkage, and the other parts
that call it declare it. Everything else is a helper of the units that reach it (without passing
through another unit), and is defined, internal, in every part that holds such a unit, so each
function is optimized with the helpers it may inline exactly as in the whole module. Units are
placed largest first on the part with the least estimated LLVM time after adding it (IR text
and branches, counting only the helpers that part does not hold yet), so kernels sharing
helpers tend to share a part. The split depends on the
module only: the same module always gives the same parts. No fast-math flags are emitted
anywhere (mathfn.py), so where a function is compiled never changes a result.
"""

from __future__ import annotations

import re

from llvmlite import ir

# LLVM's time on a function, in bytes of its IR text: loop nests (many branches: GEMM drivers)
# cost more per byte than straight-line vector code (micro-kernels, row kernels); measured on
# the benchmark MLP's kernels, each compiled alone, about 1 s per MB plus 1.5 ms per branch
BRANCH_BYTES = 1500
_REF = re.compile(r'@"((?:[^"\\]|\\.)*)"|@([-a-zA-Z$._][-a-zA-Z$._0-9]*)')


def _text_with(fn: ir.Function, linkage: str | None = None, declare: bool = False) -> str:
    """`fn` printed with another linkage, or as a declaration; `fn` itself is left as it was."""
    blocks, old = fn.blocks, fn.linkage
    try:
        if declare:
            fn.blocks, fn.linkage = [], ""
        elif linkage is not None:
            fn.linkage = linkage
        return str(fn)
    finally:
        fn.blocks, fn.linkage = blocks, old


def split_module(module: ir.Module, parts: int, min_part_bytes: int = 0) -> list[str]:
    """`parts` IR texts defining together what `module` defines (fewer when it has fewer
    units than parts, or when a part would hold less than `min_part_bytes` of function text;
    one text, the module's own, when it is not split)."""
    defined = {f.name: f for f in module.functions if f.blocks}
    if parts < 2 or not defined:
        return [str(module)]
    text = {name: str(f) for name, f in defined.items()}
    head = [f'; ModuleID = "{module.name}"', f'target triple = "{module.triple}"',
            f'target datalayout = "{module.data_layout}"', ""]
    head += [t.get_declaration() for t in module.get_identified_types().values()]
    tail = "".join("\n" + line for line in _metadata_lines(module))
    whole = [text.get(name) or str(g) for name, g in module.globals.items()]
    parts = min(parts, sum(map(len, text.values())) // max(min_part_bytes, 1))
    refs: dict[str, set[str]] = {}
    for name, t in text.items():
        body = t.split("\n", 1)[1]  # after the prototype line, which names the function
        found = {a or b for a, b in _REF.findall(body)}
        refs[name] = {r for r in found if r in defined and r != name}
    referenced = set().union(*refs.values())
    roots = [n for n in defined if n not in referenced]
    units = sorted(n for n, f in defined.items()
                   if n in referenced and "noinline" in f.attributes)
    parts = min(parts, len(units))
    if parts < 2:  # the module's own text, from the functions printed above
        return ["\n".join(head + whole) + tail]
    anchored = set(roots) | set(units)

    def closure(start: str) -> set[str]:
        """`start` and the helpers it reaches without entering another unit or entry."""
        seen, todo = {start}, [start]
        while todo:
            for r in refs[todo.pop()]:
                if r not in seen and r not in anchored:
                    seen.add(r)
                    todo.append(r)
        return seen

    reach = {u: closure(u) for u in [*roots, *units]}
    size = {n: len(t) + BRANCH_BYTES * t.count("  br ") for n, t in text.items()}
    held: list[set[str]] = [set() for _ in range(parts)]
    home: dict[str, int] = {}
    for r in roots:
        held[0] |= reach[r]
        home[r] = 0
    load = [sum(size[n] for n in h) for h in held]
    for u in sorted(units, key=lambda u: (-sum(size[n] for n in reach[u]), u)):
        added = [sum(size[n] for n in reach[u] - h) for h in held]
        p = min(range(parts), key=lambda k: (load[k] + added[k], k))
        held[p] |= reach[u]
        load[p] += added[p]
        home[u] = p
    shared = {n for n in defined if sum(n in h for h in held) > 1}

    texts = []
    for p in range(parts):
        lines = list(head)
        for name, g in module.globals.items():
            if name in defined and name in held[p]:
                if name in home:  # a unit or an entry: callable from the other parts
                    lines.append(text[name] if g.linkage in ("", "external")
                                 else _text_with(g, ""))
                elif name in shared and g.linkage in ("", "external"):
                    lines.append(_text_with(g, "internal"))  # a private copy per part
                else:
                    lines.append(text[name])
            elif name in defined:
                lines.append(_text_with(g, declare=True))
            else:
                lines.append(str(g))
        texts.append("\n".join(lines) + tail)
    return texts


def _metadata_lines(module: ir.Module) -> list[str]:
    """The module's metadata as its own printer writes it (loop hints), for every part."""
    lines = [f"!{name} = !{{ {', '.join(op.get_reference() for op in md.operands)} }}"
             for name, md in module.namedmetadata.items()]
    return lines + [str(md) for md in module.metadata]
