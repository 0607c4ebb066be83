"""Runtime, JIT engine: LLVM module (llvmlite `ir.Module` or IR text) -> native function addresses.

Takes: a module emitted by `netc.compiler.codegen` and a `Target` (the host's best by default).
Gives: `compile_module(module, target)` -> `Compiled` (function addresses by name, kept alive with
its execution engine), `optimize(...)` (the new pass manager at O3 with loop and SLP vectorization)
and `asm_of(module, target)` (assembly text, for any target, runnable here or not).

Invariants: LLVM is initialised once; a target machine is built from the Target's cpu name and
feature string (never a guess); compiled modules are cached in memory keyed by (IR text, target),
so asking twice for the same kernel compiles once. Code for a target this host cannot run is never
put in an execution engine (`asm_of` still works for it).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field

import llvmlite.binding as llvm
from llvmlite import ir

from netc.compiler.codegen.target import Target, get_target

_init_lock = threading.Lock()
_initialised = False
_cache: dict[tuple[str, Target], Compiled] = {}
_cache_lock = threading.Lock()


def _init() -> None:
    global _initialised
    with _init_lock:
        if not _initialised:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            llvm.initialize_native_asmparser()  # module asm (export.py embeds data with it)
            _register_libc_symbols()
            _initialised = True


# libc functions generated code may call (the barrier yields the CPU on long waits).
_LIBC_SYMBOLS = ("sched_yield",)


def _register_libc_symbols() -> None:
    libc = ctypes.CDLL(None)
    for name in _LIBC_SYMBOLS:
        addr = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        if addr:
            llvm.add_symbol(name, addr)


def target_machine(target: Target, pic: bool = False) -> llvm.TargetMachine:
    """An O3 target machine for `target` on the host's triple (x86-64 here); `pic`: code for a
    shared library (export.py) instead of the JIT."""
    _init()
    tgt = llvm.Target.from_triple(llvm.get_process_triple())
    return tgt.create_target_machine(cpu=target.cpu, features=target.features, opt=3,
                                     reloc="pic" if pic else "default",
                                     codemodel="default" if pic else "jitdefault")


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    """Run the new pass manager's O3 pipeline with loop and SLP vectorization on `mod`."""
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    mpm.run(mod, pb)


def _parse(module: ir.Module | str, target: Target) -> llvm.ModuleRef:
    _init()
    text = str(module)
    mod = llvm.parse_assembly(text)
    mod.triple = llvm.get_process_triple()
    mod.verify()
    return mod


@dataclass
class Compiled:
    """A compiled module: its engine (kept alive) and the address of every defined function."""

    engine: llvm.ExecutionEngine
    addresses: dict[str, int] = field(default_factory=dict)
    asm: str | None = None

    def address(self, name: str) -> int:
        if name not in self.addresses:
            addr = self.engine.get_function_address(name)
            if not addr:
                raise KeyError(f"function {name!r} is not in the compiled module")
            self.addresses[name] = addr
        return self.addresses[name]


def compile_module(module: ir.Module | str, target: Target | None = None) -> Compiled:
    """Optimise and JIT `module` for `target`; cached by (IR text, target)."""
    target = target or get_target()
    if not target.runnable:
        raise RuntimeError(f"this host cannot run {target.name} code; use asm_of() to inspect it")
    text = str(module)
    key = (text, target)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        tm = target_machine(target)
        mod = _parse(text, target)
        mod.data_layout = str(tm.target_data)
        optimize(mod, tm)
        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.finalize_object()
        compiled = Compiled(engine)
        _cache[key] = compiled
        return compiled


def _optimized(module: ir.Module | str, target: Target | None):
    """The module parsed and run through the O3 pipeline for `target`, with its target machine."""
    target = target or get_target()
    tm = target_machine(target)
    mod = _parse(module, target)
    mod.data_layout = str(tm.target_data)
    optimize(mod, tm)
    return mod, tm


def optimized_ir(module: ir.Module | str, target: Target | None = None) -> str:
    """The textual LLVM IR after the O3 pipeline (for inspection and tests)."""
    return str(_optimized(module, target)[0])


def asm_of(module: ir.Module | str, target: Target | None = None) -> str:
    """Assembly text of `module` optimised for `target` (need not be runnable on this host)."""
    mod, tm = _optimized(module, target)
    return tm.emit_assembly(mod)
