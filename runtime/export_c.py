"""Runtime, export (C side): the text of an exported library's header and glue.

Takes: the model, the library name, each entry's layout (`Part`: arena offsets, constants, feeds,
results, from export.py) and the model's tensors. Gives: `header_text(...)` (NAME.h: the C API)
and `glue_text(...)` (NAME.c: allocation, initial tensors from the embedded blob, the thread pool
on pthreads, the calls into the generated entry points with the arena header set as the JIT sets
it), and `c_idents` (the C names of the model's inputs, targets and outputs).

Invariants: identifiers the glue declares never collide with the model's names (`c_idents`); a
call checks every pointer and every index input before it writes anything, so a bad argument
leaves the model as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netc.compiler.codegen.step import KEY_OFFSET, LOSS_OFFSET
from netc.compiler.codegen.workers import CTL_BYTES
from netc.compiler.ir import np_dtype

from . import __version__
from .feeds import index_ranges
from .threads import MAX_THREADS

ALIGN = 64
C_TYPES = {"f32": "float", "i32": "int32_t", "bool": "uint8_t"}
C_WORDS = ("auto break case char const continue default do double else enum extern float for "
           "goto if inline int long register restrict return short signed sizeof static struct "
           "switch typedef union unsigned void volatile while bool true false NULL")


@dataclass
class Part:
    """One entry's plan as the glue needs it: arena layout, constants, feeds and results."""

    plan: object
    fixed_bytes: int  # the arena: fixed_bytes + per_thread * threads (StepModule.arena_bytes)
    per_thread: int
    table_offset: int
    split: bool
    consts: list[tuple[int, int, int]]  # (blob offset, arena offset, bytes)
    results: list[tuple[str, str, int]]  # (name, "arena" | "tensor", offset or tensor index)

    @property
    def fed(self) -> dict[str, int]:
        """Input name -> arena offset, for the inputs the entry reads, in the order the native
        loop takes its data arrays."""
        return {n: self.plan.offset[i] for n, i in self.plan.fed.items()}



# C's keywords and the names the glue's functions use for their own arguments and variables
_RESERVED = frozenset(C_WORDS.split()) | {"m", "loss", "rows", "index", "n_index", "mean_loss",
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


def header_text(model, lib: str, parts: dict[str, Part], tensors: list[str], store) -> str:
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
        args = _args(_feeds(model, "train"))
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
    args = _args(_feeds(model, "predict"))
    outs = ", ".join(f"{C_TYPES[d]} *{n}" for n, _, d in _outs(model))
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


def glue_text(model, lib: str, parts: dict[str, Part], tensors: list[str], tensor_at: list[int],
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
    out += [f"static unsigned char *arena(const {lib} *m, int64_t fixed, int64_t per_thread,"
            " int64_t table_at,",
            "                            const const_init *consts, int n_consts, const int *table,"
            " int n_table) {",
            f"    unsigned char *a = alloc((size_t)(fixed + per_thread * m->threads + "
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
        out += [f"    m->{kind} = arena(m, {p.fixed_bytes}, {p.per_thread}, {p.table_offset}, "
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
        args = _args(feeds)
        checks, copies = _one_batch(feeds, limit, ids, p, "m->train", up)
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
        loop_fed = [ids["in", n] for n in p.fed]
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
    args = _args(feeds)
    outs = ", ".join(f"{C_TYPES[d]} *{n}" for n, _, d in _outs(model))
    checks, copies = _one_batch(feeds, limit, ids, p, "m->predict", up)
    checks[len(feeds):len(feeds)] = [f"    if (!{n}) return {up}_EARG;" for n, _, _ in _outs(model)]
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


def _args(feeds: list[tuple[str, tuple[int, ...], str]]) -> str:
    """The C parameters of one batch's feeds (`_feeds`)."""
    return ", ".join(f"const {C_TYPES[d]} *{n}" for n, _, d in feeds)


def _one_batch(feeds, limit: dict[str, int], ids: dict, p: Part, arena: str, up: str
               ) -> tuple[list[str], list[str]]:
    """C for a call on one batch: (checks: every pointer, then every index input's range;
    copies of the feeds the entry reads into their arena slots). `feeds` and `limit` by C name,
    `ids` from `c_idents`."""
    fed_at = {ids["in", n]: at for n, at in p.fed.items()}
    checks = [f"    if (!{n}) return {up}_EARG;" for n, _, _ in feeds]
    for n, shape, d in feeds:
        if n in limit and d == "i32":
            checks += [f"    for (int64_t i = 0; i < {_size(shape)}; i++)",
                       f"        if ((uint32_t){n}[i] >= {limit[n]}u) return {up}_EINDEX;"]
    copies = [f"    memcpy({arena} + {fed_at[n]}, {n}, {_size(s) * _nbytes(d)});"
              for n, s, d in feeds if n in fed_at]
    return checks, copies


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


def _result(p: Part, r: tuple[str, str, int], arena: str) -> str:
    _name, kind, where = r
    if kind == "arena":
        return f"(double)*(const float *)({arena} + {where})"
    return f"(double)*(const float *)m->tensor[{where}]"
