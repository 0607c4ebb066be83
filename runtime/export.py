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

The C text (header and glue) is written by export_c.py.

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
from dataclasses import dataclass

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir

from netc.compiler.codegen.step import build_step_module
from netc.compiler.codegen.step_input import plan_step
from netc.compiler.codegen.target import get_target
from netc.compiler.codegen.workers import emit_pool
from netc.compiler.errors import DataError, UsageError
from netc.compiler.ir import np_dtype

from .export_c import ALIGN, C_WORDS, Part, glue_text, header_text
from .jit_cache import object_code
from .saved import atomic_write
from .training import check_count

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

    @property
    def files(self) -> list[str]:
        return [self.header, self.glue, self.code, *([self.library] if self.library else [])]


def c_name(name: str) -> str:
    """`name` as a C identifier prefix (a UsageError when it cannot be one)."""
    if not _IDENT.match(name) or name in C_WORDS.split():
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
    parts: dict[str, Part] = {}
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
        parts[kind] = Part(plan, sm.fixed_bytes, sm.per_thread_bytes, sm.table_offset,
                            sm.split_calls > 0, consts, results)
    emit_pool(module, pause=target.x86)
    obj = _object_code(module, target, lib, bytes(blob))
    header = header_text(model, lib, parts, tensors, store)
    glue = glue_text(model, lib, parts, tensors, tensor_at, store)
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("h", f"{lib}.h"), ("c", f"{lib}.c"), ("o", f"{lib}_code.o"))}
    atomic_write(paths["h"], lambda f: f.write(header.encode()))
    atomic_write(paths["c"], lambda f: f.write(glue.encode()))
    atomic_write(paths["o"], lambda f: f.write(obj))
    out = Exported(paths["h"], paths["c"], paths["o"], None, trains)
    if link:
        so = os.path.join(out_dir, f"lib{lib}.so")
        out.library, out.link_note = _link(paths["c"], paths["o"], so)
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
    and parsed back would cost minutes and gigabytes for a large model. LLVM works in a child
    process, as for the JIT (jit_cache.object_code)."""
    with tempfile.TemporaryDirectory(prefix="netc-export-") as tmp:
        path = os.path.join(tmp, "blob.bin")
        with open(path, "wb") as f:
            f.write(blob or b"\0")
        sym = f"{lib}_blob"
        lines = [".section .rodata", f".balign {ALIGN}", f".globl {sym}",
                 f".type {sym},@object", f".size {sym},{max(len(blob), 1)}", f"{sym}:",
                 f".incbin {json.dumps(path)}", ".text"]
        text = str(module) + "".join(f'module asm "{_llvm_string(x)}"\n' for x in lines)
        return object_code(text, target, pic=True, edit=lambda mod: _publish(mod, lib))


def _llvm_string(text: str) -> str:
    """`text` as the inside of an LLVM IR string literal: printable ASCII as is, except quotes
    and backslashes, every other byte (UTF-8) as a backslash and two hex digits."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:02X}"
                   for b in text.encode())


def _publish(mod: llvm.ModuleRef, lib: str) -> None:
    """The entry points renamed lib_*, every other definition internal."""
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

