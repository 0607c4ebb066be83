"""Runtime, export: a compiled model's training and inference as a standalone C library.

Takes: a float32 `Model` (from a `.net` file or a saved model; its tensors as they are now:
initialised, or trained) and an output folder. Gives: `export_library(model, out_dir, name=None,
link=True)` -> `Exported`, having written into `out_dir`:
  NAME.h        the C API: shapes as macros; create/destroy; `NAME_train_step` (one optimizer
                step on one batch), `NAME_train_steps` (many steps over rows picked by an index
                array, batches gathered natively), `NAME_predict`; every tensor (parameters, model
                state, optimizer state) by index or name, live and writable between calls
  NAME.c        the glue: allocation, initial tensors, the native thread pool on pthreads
  NAME_code.o   the generated code (the training step, its multi-step loop, inference, the pool)
                and the initial tensors, position-independent, for this machine's CPU
  libNAME.so    NAME.c and NAME_code.o linked, when a C compiler (`cc`, or $CC) is found
The code is the code `netc.compile` runs (same plans, kernels and target), so a library trained
for k steps with T threads holds bitwise the tensors the Python model holds after the same k
steps with T threads, dropout included.

Invariants: the library needs only libc, libm and pthreads (no Python, no netc); every symbol it
defines starts with NAME_ (the generated kernels are internal), so several exported models link
into one program; feeds are copied, never kept; index inputs (labels, token ids) are range-checked
before a step runs, so bad data returns an error code instead of reading out of bounds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir

from netc.compiler.codegen.step import KEY_OFFSET, LOSS_OFFSET, build_step_module
from netc.compiler.codegen.step_input import plan_step
from netc.compiler.codegen.target import get_target
from netc.compiler.codegen.workers import CTL_BYTES, emit_pool
from netc.compiler.errors import DataError, UsageError
from netc.compiler.ir import np_dtype

from . import __version__
from .feeds import index_ranges
from .jit import _parse, optimize, target_machine
from .saved import atomic_write
from .threads import MAX_THREADS
from .training import check_count

ALIGN = 64
_C_TYPES = {"f32": "float", "i32": "int32_t", "bool": "uint8_t"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# generated entry point -> its exported name (after NAME_)
_ENTRIES = {"train_netc_step": "step_train", "train_netc_train_steps": "step_train_loop",
            "predict_netc_step": "step_predict", "netc_pool_worker": "pool_worker",
            "netc_pool_run1": "pool_run1", "netc_pool_run4": "pool_run4",
            "netc_pool_stop": "pool_stop"}


@dataclass
class Exported:
    """What `export_library` wrote (paths) and whether it linked the shared library."""

    header: str
    glue: str
    code: str
    library: str | None
    trains: bool
    link_note: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class _Part:
    """One entry's plan as the glue needs it: arena layout, constants, feeds and results."""

    plan: object
    scratch_offset: int
    per_thread: int
    table_offset: int
    split: bool
    consts: list[tuple[int, int, int]]  # (blob offset, arena offset, bytes)
    fed: dict[str, int]  # input name -> arena offset (inputs the entry reads)
    loop_fed: list[str]  # the loop's data order
    results: list[tuple[str, str, int]]  # (name, "arena" | "tensor", offset or tensor index)


def c_name(name: str) -> str:
    """`name` as a C identifier prefix (a UsageError when it cannot be one)."""
    if not _IDENT.match(name) or name in _C_WORDS.split():
        raise UsageError(f"export: the library name must be a C identifier (letters, digits, "
                         f"_; not starting with a digit; not a C keyword), got {name!r}")
    return name


def export_library(model, out_dir: str, name: str | None = None, link: bool = True,
                   steps_per_epoch: int | None = None) -> Exported:
    """Write the C library of `model` into `out_dir` (see the module docstring).
    `steps_per_epoch`: what the learning-rate schedule counts as an epoch (default: the model's,
    which `fit` sets from its data, else 1)."""
    if steps_per_epoch is not None:
        model.steps_per_epoch = check_count(steps_per_epoch, "steps per epoch", 1)
    base = model._base
    if base.float_dtype != "f32":
        raise UsageError("export: only float32 models compile to native code (this one is "
                         f"{base.float_dtype}); build it with dtype='float32'")
    lib = c_name(name or re.sub(r"\W", "_", model.name or "model"))
    target = get_target()
    if not target.runnable:
        raise UsageError(f"export: this machine cannot run {target.name} code")
    _check_out_dir(out_dir)

    trains = bool(base.losses) and model.config is not None
    engines = {}
    if trains:
        engines["train"] = model._engine("train", None)[0]
    engines["predict"] = model._engine("eval", None)[0]
    store = model.store
    tensors = list(store.arrays)
    blob = bytearray()

    def put(data: bytes) -> int:
        blob.extend(b"\0" * (-len(blob) % ALIGN))
        at = len(blob)
        blob.extend(data)
        return at

    tensor_at = [put(np.ascontiguousarray(store.arrays[t]).tobytes()) for t in tensors]

    module = ir.Module(name=lib)
    parts: dict[str, _Part] = {}
    for kind, engine in engines.items():
        request = "train_step" if kind == "train" else "predict"
        wanted, updates = engine._request(request)
        plan = plan_step(engine.g, wanted, updates)
        losses = list(plan.wanted.values()) if kind == "train" else []
        sm = build_step_module(plan, target, loop=kind == "train", losses=losses,
                               module=module, prefix=f"{kind}_")
        consts = []
        for i, value in plan.consts.items():
            node = plan.graph.node(i)
            data = np.ascontiguousarray(value, dtype=np_dtype(node.type.dtype)).tobytes()
            consts.append((put(data), plan.offset[i], len(data)))
        results = []
        for out, i in plan.wanted.items():
            if i in plan.persistent:
                results.append((out, "tensor", tensors.index(plan.persistent[i])))
            else:
                results.append((out, "arena", plan.offset[i]))
        parts[kind] = _Part(plan, sm.scratch_offset, sm.scratch_per_thread, sm.table_offset,
                            sm.split_calls > 0, consts,
                            {n: plan.offset[i] for n, i in plan.fed.items()}, list(plan.fed),
                            results)
    emit_pool(module, pause=target.x86)
    obj = _object_code(module, target, lib, bytes(blob))
    header = _header(model, lib, parts, tensors, store)
    glue = _glue(model, lib, parts, tensors, tensor_at, store)
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("h", f"{lib}.h"), ("c", f"{lib}.c"), ("o", f"{lib}_code.o"))}
    atomic_write(paths["h"], lambda f: f.write(header.encode()))
    atomic_write(paths["c"], lambda f: f.write(glue.encode()))
    atomic_write(paths["o"], lambda f: f.write(obj))
    out = Exported(paths["h"], paths["c"], paths["o"], None, trains,
                   files=[paths["h"], paths["c"], paths["o"]])
    if link:
        so = os.path.join(out_dir, f"lib{lib}.so")
        out.library, out.link_note = _link(paths["c"], paths["o"], so)
        if out.library:
            out.files.append(so)
    return out


def _check_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"export: {out_dir} exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"export: cannot create the folder {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise DataError(f"export: cannot write into {out_dir}: permission denied")


def _object_code(module: ir.Module, target, lib: str, blob: bytes) -> bytes:
    """The module optimised for `target`, position-independent, entry points renamed to lib_*
    and everything else internal, with `blob` as the read-only symbol lib_blob. The blob goes in
    through the assembler's .incbin, not as an IR constant: a model's tensors printed as IR text
    and parsed back would cost minutes and gigabytes for a large model."""
    tm = target_machine(target, pic=True)
    with tempfile.TemporaryDirectory(prefix="netc-export-") as tmp:
        path = os.path.join(tmp, "blob.bin")
        with open(path, "wb") as f:
            f.write(blob or b"\0")
        sym = f"{lib}_blob"
        lines = [".section .rodata", f".balign {ALIGN}", f".globl {sym}",
                 f".type {sym},@object", f".size {sym},{max(len(blob), 1)}", f"{sym}:",
                 f".incbin {json.dumps(path)}", ".text"]
        text = str(module) + "".join(f'module asm "{_llvm_string(x)}"\n' for x in lines)
        return _optimised_object(text, target, tm, lib)


def _llvm_string(text: str) -> str:
    """`text` as the inside of an LLVM IR string literal: printable ASCII as is, except quotes
    and backslashes, every other byte (UTF-8) as a backslash and two hex digits."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:02X}"
                   for b in text.encode())


def _optimised_object(text: str, target, tm, lib: str) -> bytes:
    mod = _parse(text, target)
    mod.data_layout = str(tm.target_data)
    for fn in mod.functions:
        if fn.is_declaration:
            continue
        public = _ENTRIES.get(fn.name)
        if public is not None:
            fn.name = f"{lib}_{public}"
        else:
            fn.linkage = llvm.Linkage.internal
    for gv in mod.global_variables:
        if not gv.is_declaration:
            gv.linkage = llvm.Linkage.internal
    optimize(mod, tm)
    return tm.emit_object(mod)


def _link(glue: str, obj: str, so: str) -> tuple[str | None, str]:
    """Link the shared library with the C compiler; (path or None, a note saying how/why not)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    cmd = [*(shlex.split(cc) if cc else ["cc"]), "-O2", "-fPIC", "-shared", "-o", so + ".tmp",
           glue, obj, "-lpthread", "-lm"]
    shown = " ".join(shlex.quote(c) for c in cmd).replace(".so.tmp", ".so")
    if not cc:
        return None, f"no C compiler found; link it yourself: {shown}"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"the C compiler could not run ({e}); link it yourself: {shown}"
    if r.returncode != 0:
        raise DataError(f"export: linking the library failed ({shown}):\n{r.stderr.strip()}")
    os.replace(so + ".tmp", so)
    return so, shown


# ---------------------------------------------------------------------------------------- C text

_C_WORDS = ("auto break case char const continue default do double else enum extern float for "
            "goto if inline int long register restrict return short signed sizeof static struct "
            "switch typedef union unsigned void volatile while bool true false NULL")
# C's keywords and the names the glue's functions use for their own arguments and variables
_RESERVED = frozenset(_C_WORDS.split()) | {"m", "loss", "rows", "index", "n_index", "mean_loss",
                                           "data", "n_steps", "i", "j", "r", "s"}


def c_idents(model) -> dict[tuple[str, str], str]:
    """("in", input or target name) -> its C parameter name; ("out", output name) -> out_<name>.
    A name C or the glue already uses gets a trailing _ (until every identifier is distinct)."""
    out: dict[tuple[str, str], str] = {}
    taken = set(_RESERVED)
    keys = [*(("in", n) for n in [*model.inputs, *model.targets]),
            *(("out", n) for n in model.outputs)]
    for role, n in keys:
        c = n if role == "in" else f"out_{n}"
        while c in taken:
            c += "_"
        taken.add(c)
        out[role, n] = c
    return out


def _feeds(model, kind: str) -> list[tuple[str, tuple[int, ...], str]]:
    """The entry's arguments in the model's declaration order: inputs (then targets: train), as
    (C identifier, shape, dtype)."""
    leaves = dict(model.inputs)
    if kind == "train":
        leaves.update(model.targets)
    ids = c_idents(model)
    return [(ids["in", n], tuple(s), d) for n, (s, d) in leaves.items()]


def _outs(model) -> list[tuple[str, tuple[int, ...], str]]:
    ids = c_idents(model)
    return [(ids["out", n], tuple(s), d) for n, (s, d) in model.outputs.items()]


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _header(model, lib: str, parts: dict[str, _Part], tensors: list[str], store) -> str:
    up = lib.upper()
    lines = [f"/* {lib}.h: the C API of the netc model '{model.name}', exported by netc "
             f"{__version__}.",
             " *",
             f" * Link with lib{lib}.so (or compile {lib}.c with {lib}_code.o: cc ... -lpthread "
             "-lm).",
             " * The code is specialised for the CPU of the machine that exported it.",
             " * Arrays are row-major and contiguous; float is float32. Calls on one model must",
             " * not overlap (use one model per thread of yours); a model runs its own threads.",
             " * Index inputs (labels, token ids) are range-checked; float inputs are not checked",
             " * for NaN or infinity (netc's Python API refuses them).",
             f" * Training: {_training_line(model)}",
             " */",
             f"#ifndef {up}_H", f"#define {up}_H", "", "#include <stdint.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    for kind in ("train", "predict"):
        if kind not in parts:
            continue
        for n, shape, dt in _feeds(model, kind):
            line = f"#define {up}_{n}_SIZE {_size(shape)}  /* {n}: {dt}{list(shape)} */"
            if line not in lines:
                lines.append(line)
    for n, shape, dt in _outs(model):
        lines.append(f"#define {up}_{n}_SIZE {_size(shape)}  /* {dt}{list(shape)} */")
    batch = next((s[0] for _, s, _ in _feeds(model, "predict") if s), 1)
    lines += [f"#define {up}_BATCH {batch}  /* rows per call */",
              f"#define {up}_TENSORS {len(tensors)}", "",
              f"#define {up}_OK 0",
              f"#define {up}_EINDEX (-1)  /* an index input (labels, token ids) is out of its "
              "range */",
              f"#define {up}_EARG (-2)  /* a NULL pointer, or an index array that is not whole "
              "batches */", "",
              f"typedef struct {lib} {lib};", "",
              f"/* A model holding the exported tensors, running on `threads` threads (1 to "
              f"{MAX_THREADS}; ",
              " * results depend on the thread count only, never on timing). NULL: a bad thread "
              "count,",
              " * out of memory or no threads. */",
              f"{lib} *{lib}_create(int threads);",
              f"void {lib}_destroy({lib} *m);", ""]
    if "train" in parts:
        args = ", ".join(f"const {_C_TYPES[d]} *{n}" for n, _, d in _feeds(model, "train"))
        lines += ["/* One optimizer step on one batch; *loss (may be NULL) gets the reported loss "
                  "(the sum",
                  " * when there are several). */",
                  f"int {lib}_train_step({_params(f'{lib} *m', args, 'double *loss')});",
                  "/* n_index / BATCH steps, step s on rows index[s*BATCH .. (s+1)*BATCH) of the "
                  "full",
                  " * arrays (each `rows` rows); *mean_loss (may be NULL) gets the loss averaged "
                  "over the steps.",
                  " * Bitwise the same as that many train_step calls. */",
                  f"int {lib}_train_steps({_params(f'{lib} *m', args)}, int64_t rows, "
                  "const int64_t *index, int64_t n_index, double *mean_loss);",
                  f"int64_t {lib}_step(const {lib} *m);  /* optimizer steps taken so far */", ""]
    args = ", ".join(f"const {_C_TYPES[d]} *{n}" for n, _, d in _feeds(model, "predict"))
    outs = ", ".join(f"{_C_TYPES[d]} *{n}" for n, _, d in _outs(model))
    lines += ["/* Inference (eval mode: no dropout, running statistics) on one batch. */",
              f"int {lib}_predict({_params(f'{lib} *m', args, outs)});", "",
              "/* Every tensor the model keeps: parameters (\"param\"), model state (\"state\") "
              "and optimizer",
              " * state (\"opt\"). The pointer is the live tensor: read or write it between "
              "calls. */",
              f"int {lib}_tensor_index(const char *name);  /* -1: no such tensor */",
              f"const char *{lib}_tensor_name(int i);",
              f"const char *{lib}_tensor_kind(int i);",
              f"const char *{lib}_tensor_dtype(int i);  /* \"f32\" or \"i32\" */",
              f"int {lib}_tensor_rank(int i);",
              f"const int64_t *{lib}_tensor_shape(int i);",
              f"int64_t {lib}_tensor_size(int i);  /* elements */",
              f"void *{lib}_tensor({lib} *m, int i);", "",
              "#ifdef __cplusplus", "}", "#endif", f"#endif  /* {up}_H */", ""]
    return "\n".join(lines)


def _training_line(model) -> str:
    cfg = model.config
    if cfg is None or not model._base.losses:
        return "none (the model has no loss)."
    opt = f"{cfg.optimizer.name}({', '.join(f'{k}={v}' for k, v in cfg.optimizer.args.items())})"
    sched = cfg.schedule.name if cfg.schedule is not None else "constant"
    return (f"{opt}, schedule {sched} over {cfg.epochs} epochs of {model.steps_per_epoch} "
            "step(s)\n *   (netc export --steps-per-epoch N sets the epoch).")


def _c_array(ctype: str, name: str, items: list[str]) -> str:
    body = ",\n    ".join(items) if items else "0"
    return f"static const {ctype} {name}[] = {{\n    {body}\n}};"


def _glue(model, lib: str, parts: dict[str, _Part], tensors: list[str], tensor_at: list[int],
          store) -> str:
    up = lib.upper()
    shapes, infos = [], []
    for j, t in enumerate(tensors):
        a = store.arrays[t]
        shape = list(a.shape) or [1]
        dt = {"float32": "f32", "int32": "i32", "bool": "bool"}.get(a.dtype.name, a.dtype.name)
        shapes.append(f"static const int64_t shape_{j}[] = {{{', '.join(map(str, shape))}}};")
        infos.append(f'{{"{t}", "{store.kind.get(t, "state")}", "{dt}", {a.ndim}, shape_{j}, '
                     f"{tensor_at[j]}, {a.nbytes}, {a.size}}}")
    out = [f"/* {lib}.c: glue of the netc model '{model.name}' (netc {__version__}): memory, "
           "initial tensors,",
           " * the thread pool and the calls into the generated code. */",
           "#define _GNU_SOURCE",
           f'#include "{lib}.h"', "#include <pthread.h>", "#include <stdlib.h>",
           "#include <string.h>", "",
           f"extern const unsigned char {lib}_blob[];",
           f"extern void {lib}_pool_worker(void *ctl, int32_t k);",
           f"extern void {lib}_pool_run1(void *ctl, int64_t fn, int32_t nt, int64_t a0);",
           f"extern void {lib}_pool_run4(void *ctl, int64_t fn, int32_t nt, int64_t a0, "
           "int64_t a1, int64_t a2, int64_t a3);",
           f"extern void {lib}_pool_stop(void *ctl, int32_t n);",
           f"extern void {lib}_step_predict(int32_t tid, int32_t nt, void *arena);"]
    if "train" in parts:
        out += [f"extern void {lib}_step_train(int32_t tid, int32_t nt, void *arena);",
                f"extern void {lib}_step_train_loop(int32_t tid, int32_t nt, void *arena, "
                "void **data, const int64_t *index, int64_t n_steps);"]
    out += ["", "typedef struct { const char *name, *kind, *dtype; int rank; const int64_t *shape;"
            " int64_t blob, bytes, size; } tensor_info;",
            "typedef struct { int64_t blob, arena, bytes; } const_init;", "",
            *shapes, _c_array("tensor_info", "TENSORS", infos), ""]
    step_tensor = tensors.index("opt.step") if "opt.step" in tensors else -1
    limits = index_ranges(model._base)
    for kind, p in parts.items():
        out.append(_c_array("const_init", f"{kind}_consts",
                            [f"{{{b}, {a}, {n}}}" for b, a, n in p.consts]))
        out.append(_c_array("int", f"{kind}_table",
                            [str(tensors.index(t)) for t in p.plan.names]))
        out.append(f"#define {kind.upper()}_N_CONSTS {len(p.consts)}")
        out.append(f"#define {kind.upper()}_N_TABLE {len(p.plan.names)}")
        out.append("")
    out += [f"struct {lib} {{",
            "    int threads, workers;",
            "    unsigned char *ctl;",
            "    pthread_t *pool;",
            "    unsigned char *train, *predict;",
            f"    void *tensor[{max(len(tensors), 1)}];",
            "};", "",
            "static void *alloc(size_t n) {",
            "    void *p = NULL;",
            f"    if (posix_memalign(&p, {ALIGN}, n ? n : {ALIGN})) return NULL;",
            "    memset(p, 0, n);",
            "    return p;",
            "}", "",
            "typedef struct { unsigned char *ctl; int k; } worker_arg;",
            "static void *worker_main(void *p) {",
            "    worker_arg a = *(worker_arg *)p;",
            "    free(p);",
            f"    {lib}_pool_worker(a.ctl, a.k);",
            "    return NULL;",
            "}", ""]
    seed = store.seed
    out += [f"static unsigned char *arena(const {lib} *m, int64_t scratch_at, int64_t per_thread,"
            " int64_t table_at,",
            "                            const const_init *consts, int n_consts, const int *table,"
            " int n_table) {",
            f"    unsigned char *a = alloc((size_t)(scratch_at + per_thread * m->threads + "
            f"{ALIGN}));",
            "    if (!a) return NULL;",
            "    for (int i = 0; i < n_consts; i++)",
            f"        memcpy(a + consts[i].arena, {lib}_blob + consts[i].blob, "
            "(size_t)consts[i].bytes);",
            f"    uint32_t seed[2] = {{{seed & 0xFFFFFFFF}u, {(seed >> 32) & 0xFFFFFFFF}u}};",
            f"    memcpy(a + {KEY_OFFSET}, seed, sizeof seed);",
            "    for (int i = 0; i < n_table; i++)",
            "        memcpy(a + table_at + 8 * i, &m->tensor[table[i]], sizeof(void *));",
            "    return a;",
            "}", "",
            f"void {lib}_destroy({lib} *m) {{",
            "    if (!m) return;",
            "    if (m->workers) {",
            f"        {lib}_pool_stop(m->ctl, m->workers);",
            "        for (int k = 0; k < m->workers; k++) pthread_join(m->pool[k], NULL);",
            "    }",
            "    free(m->pool); free(m->ctl); free(m->train); free(m->predict);",
            f"    for (int i = 0; i < {up}_TENSORS; i++) free(m->tensor[i]);",
            "    free(m);",
            "}", "",
            f"{lib} *{lib}_create(int threads) {{",
            f"    if (threads < 1 || threads > {MAX_THREADS}) return NULL;",
            f"    {lib} *m = calloc(1, sizeof *m);",
            "    if (!m) return NULL;",
            "    m->threads = threads;",
            f"    for (int i = 0; i < {up}_TENSORS; i++) {{",
            "        m->tensor[i] = alloc((size_t)TENSORS[i].bytes);",
            "        if (!m->tensor[i]) goto fail;",
            f"        memcpy(m->tensor[i], {lib}_blob + TENSORS[i].blob, "
            "(size_t)TENSORS[i].bytes);",
            "    }"]
    for kind, p in parts.items():
        out += [f"    m->{kind} = arena(m, {p.scratch_offset}, {p.per_thread}, {p.table_offset}, "
                f"{kind}_consts, {kind.upper()}_N_CONSTS, {kind}_table, "
                f"{kind.upper()}_N_TABLE);",
                f"    if (!m->{kind}) goto fail;"]
    out += ["    if (threads > 1) {",
            f"        m->ctl = alloc({CTL_BYTES});",
            "        m->pool = calloc((size_t)threads, sizeof(pthread_t));",
            "        if (!m->ctl || !m->pool) goto fail;",
            "        for (int k = 0; k < threads - 1; k++) {",
            "            worker_arg *a = malloc(sizeof *a);",
            "            if (!a) goto fail;",
            "            a->ctl = m->ctl; a->k = k;",
            "            if (pthread_create(&m->pool[k], NULL, worker_main, a)) { free(a); "
            "goto fail; }",
            "            m->workers = k + 1;",
            "        }",
            "    }",
            "    return m;",
            "fail:",
            f"    {lib}_destroy(m);",
            "    return NULL;",
            "}", "",
            f"static void run1(const {lib} *m, void (*fn)(int32_t, int32_t, void *), "
            "unsigned char *a, int split) {",
            "    if (m->threads == 1 || !split) fn(0, 1, a);",
            f"    else {lib}_pool_run1(m->ctl, (int64_t)(intptr_t)fn, m->threads, "
            "(int64_t)(intptr_t)a);",
            "}", ""]
    if "train" in parts:
        p = parts["train"]
        feeds = _feeds(model, "train")
        ids = c_idents(model)
        limit = {ids["in", n]: v[0] for n, v in limits.items()}
        fed_at = {ids["in", n]: at for n, at in p.fed.items()}
        args = ", ".join(f"const {_C_TYPES[d]} *{n}" for n, _, d in feeds)
        checks = [f"    if (!{n}) return {up}_EARG;" for n, _, _ in feeds]
        for n, shape, d in feeds:
            if n in limit and d == "i32":
                checks.append(f"    for (int64_t i = 0; i < {_size(shape)}; i++)")
                checks.append(f"        if ((uint32_t){n}[i] >= {limit[n]}u) return {up}_EINDEX;")
        copies = [f"    memcpy(m->train + {fed_at[n]}, {n}, {_size(s) * _nbytes(d)});"
                  for n, s, d in feeds if n in fed_at]
        step_set = _step_word(step_tensor, "m->train")
        loss_sum = " + ".join(_result(p, r, "m->train") for r in p.results) or "0.0"
        out += [f"int {lib}_train_step({_params(f'{lib} *m', args, 'double *loss')}) {{",
                f"    if (!m) return {up}_EARG;", *checks, *copies, step_set,
                f"    run1(m, {lib}_step_train, m->train, {int(p.split)});",
                f"    if (loss) *loss = {loss_sum};",
                f"    return {up}_OK;", "}", ""]
        batch = next((s[0] for _n, s, _d in feeds if s), 1)
        loop_checks = [f"    if (!m || rows < 0 || !index || n_index <= 0 || n_index % {batch})"
                       f" return {up}_EARG;"]
        loop_checks += [f"    if (!{n}) return {up}_EARG;" for n, _, _ in feeds]
        loop_checks += ["    for (int64_t i = 0; i < n_index; i++)",
                        f"        if (index[i] < 0 || index[i] >= rows) return {up}_EINDEX;"]
        loop_fed = [ids["in", n] for n in p.loop_fed]
        for n, shape, d in feeds:
            if n in limit and d == "i32" and n in loop_fed:
                row = _size(shape[1:])
                loop_checks += ["    for (int64_t i = 0; i < n_index; i++) {",
                                f"        const int32_t *r = {n} + index[i] * {row};",
                                f"        for (int64_t j = 0; j < {row}; j++)",
                                f"            if ((uint32_t)r[j] >= {limit[n]}u) "
                                f"return {up}_EINDEX;",
                                "    }"]
        data = ", ".join(f"(void *){n}" for n in loop_fed) or "NULL"
        n_losses = len(p.results)
        acc = f"((const double *)(m->train + {LOSS_OFFSET}))"
        mean = " + ".join(f"{acc}[{j}]" for j in range(n_losses)) or "0.0"
        out += [f"int {lib}_train_steps({_params(f'{lib} *m', args)}, int64_t rows, "
                "const int64_t *index, int64_t n_index, double *mean_loss) {",
                *loop_checks,
                f"    void *data[] = {{{data}}};",
                f"    int64_t n_steps = n_index / {batch};",
                f"    memset(m->train + {LOSS_OFFSET}, 0, {8 * max(n_losses, 1)});",
                step_set,
                f"    if (m->threads == 1 || !{int(p.split)}) "
                f"{lib}_step_train_loop(0, 1, m->train, data, index, n_steps);",
                f"    else {lib}_pool_run4(m->ctl, (int64_t)(intptr_t){lib}_step_train_loop, "
                "m->threads, (int64_t)(intptr_t)m->train, (int64_t)(intptr_t)data, "
                "(int64_t)(intptr_t)index, n_steps);",
                f"    if (mean_loss) *mean_loss = ({mean}) / (double)n_steps;",
                f"    return {up}_OK;", "}", "",
                f"int64_t {lib}_step(const {lib} *m) {{",
                (f"    return m ? *(const int32_t *)m->tensor[{step_tensor}] : 0;"
                 if step_tensor >= 0 else "    (void)m; return 0;"), "}", ""]
    p = parts["predict"]
    feeds = _feeds(model, "predict")
    ids = c_idents(model)
    limit = {ids["in", n]: v[0] for n, v in limits.items()}
    fed_at = {ids["in", n]: at for n, at in p.fed.items()}
    args = ", ".join(f"const {_C_TYPES[d]} *{n}" for n, _, d in feeds)
    outs = ", ".join(f"{_C_TYPES[d]} *{n}" for n, _, d in _outs(model))
    checks = [f"    if (!{n}) return {up}_EARG;" for n, _, _ in feeds]
    checks += [f"    if (!{n}) return {up}_EARG;" for n, _, _ in _outs(model)]
    for n, shape, d in feeds:
        if n in limit and d == "i32":
            checks += [f"    for (int64_t i = 0; i < {_size(shape)}; i++)",
                       f"        if ((uint32_t){n}[i] >= {limit[n]}u) return {up}_EINDEX;"]
    copies = [f"    memcpy(m->predict + {fed_at[n]}, {n}, {_size(s) * _nbytes(d)});"
              for n, s, d in feeds if n in fed_at]
    results = []
    for n, kind, where in p.results:
        shape, d = model.outputs[n]
        src = (f"m->predict + {where}" if kind == "arena" else f"m->tensor[{where}]")
        results.append(f"    memcpy({ids['out', n]}, {src}, {_size(shape) * _nbytes(d)});")
    out += [f"int {lib}_predict({_params(f'{lib} *m', args, outs)}) {{",
            f"    if (!m) return {up}_EARG;", *checks, *copies,
            _step_word(step_tensor, "m->predict"),
            f"    run1(m, {lib}_step_predict, m->predict, {int(p.split)});",
            *results, f"    return {up}_OK;", "}", ""]
    out += [f"int {lib}_tensor_index(const char *name) {{",
            f"    for (int i = 0; name && i < {up}_TENSORS; i++)",
            "        if (!strcmp(TENSORS[i].name, name)) return i;",
            "    return -1;", "}",
            f"#define VALID(i) ((i) >= 0 && (i) < {up}_TENSORS)",
            f"const char *{lib}_tensor_name(int i) {{ return VALID(i) ? TENSORS[i].name : NULL; }}",
            f"const char *{lib}_tensor_kind(int i) {{ return VALID(i) ? TENSORS[i].kind : NULL; }}",
            f"const char *{lib}_tensor_dtype(int i) {{ return VALID(i) ? TENSORS[i].dtype : NULL; "
            "}",
            f"int {lib}_tensor_rank(int i) {{ return VALID(i) ? TENSORS[i].rank : -1; }}",
            f"const int64_t *{lib}_tensor_shape(int i) {{ return VALID(i) ? TENSORS[i].shape : "
            "NULL; }",
            f"int64_t {lib}_tensor_size(int i) {{ return VALID(i) ? TENSORS[i].size : -1; }}",
            f"void *{lib}_tensor({lib} *m, int i) {{ return m && VALID(i) ? m->tensor[i] : NULL; "
            "}", ""]
    return "\n".join(line for line in out if line is not None)


def _params(*parts: str) -> str:
    """A C parameter list of the non-empty parts (a model may have no inputs or outputs)."""
    return ", ".join(p for p in parts if p)


def _step_word(step_tensor: int, arena: str) -> str:
    """C setting the arena header's RNG step from the step counter (JitEngine._set_step)."""
    if step_tensor < 0:
        return ""
    return (f"    {{ uint32_t s = (uint32_t)*(int32_t *)m->tensor[{step_tensor}]; "
            f"memcpy({arena} + {KEY_OFFSET + 8}, &s, 4); }}")


def _nbytes(dtype: str) -> int:
    return np.dtype(np_dtype(dtype)).itemsize


def _result(p: _Part, r: tuple[str, str, int], arena: str) -> str:
    _name, kind, where = r
    if kind == "arena":
        return f"(double)*(const float *)({arena} + {where})"
    return f"(double)*(const float *)m->tensor[{where}]"


def describe(e: Exported) -> str:
    """What a CLI user is told after an export."""
    lines = [f"wrote {', '.join(e.files)}"]
    if e.library:
        lines.append(f"linked: {e.link_note}")
    elif e.link_note:
        lines.append(e.link_note)
    if not e.trains:
        lines.append("the model has no loss: the library does inference only")
    return "\n".join(lines)

