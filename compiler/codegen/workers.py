"""Codegen stage, the native thread pool's loops: workers that wait for SPMD jobs in native code.

Takes: a module and whether to spin with `pause` (x86). Gives: `emit_pool(module)`, which adds
  `void netc_pool_worker(i8* ctl, i32 k)`: worker k's whole life: wait for a job, run thread id
    k+1 of it, meet the others at the job's end, repeat; return when told to stop;
  `void netc_pool_run{A}(i8* ctl, i64 fn, i32 nt, i64 a0, ..., i64 a{A-1})` for A in
    0..MAX_ARGS: publish the job `fn(tid, nt, a0, ...)`, wake workers 0..nt-2, run thread id 0
    on the calling thread, return once every id has returned;
  `void netc_pool_stop(i8* ctl, i32 n_workers)`: tell workers 0..n_workers-1 to return.
The runtime (runtime/threads.py) starts each worker once on its own thread, so a job costs no
Python on any worker: no GIL, no interpreter wake-up, no per-call thread hand-off.

Control block `ctl` (CTL_BYTES, 64-byte aligned, zeroed by the runtime before any worker starts):
  [0, 128): the job: i64 fn (0 means stop), i32 nt, i32 argument count, i64 arguments[MAX_ARGS];
  [128, 192): the barrier state every job ends on (barrier.py);
  [192 + 64k, +64): worker k's line: i32 job generation (only the caller writes it), i32 sleepers,
  i32 the caller's CPU (+1) when it last published a job.
Waiting (idle workers, the end-of-job barrier) follows barrier.py's policy: spin with `pause`
(yielding every few checks when the thread waited for shares this CPU), then sleep on a futex, so
an idle pool burns no core; an idle worker whose caller runs elsewhere spins IDLE_SPINS checks
first, long enough to catch back-to-back calls from Python.

Invariants: the job is written before the generations that publish it (seq_cst stores) and is not
rewritten until the end-of-job barrier, which every participant passes only after reading it;
workers nt-1 and beyond are not woken for a job of nt threads; a job function is called as
`void(i32, i32, i64...)` with its argument count, so every argument must be an integer or a
pointer (the runtime checks the ctypes prototype).
"""

from __future__ import annotations

from llvmlite import ir

from .barrier import call_barrier, call_wait, call_wake, current_cpu, same_cpu
from .loops import I32, I64, for_range

MAX_ARGS = 14
MAX_WORKERS = 255
JOB_BYTES = 128
BARRIER_AT = 128
WORKERS_AT = 192
CTL_BYTES = WORKERS_AT + 64 * MAX_WORKERS
IDLE_SPINS = 8192  # checks an idle worker spins before sleeping, caller elsewhere (~0.3 ms)
RUN_PREFIX = "netc_pool_run"

I8P = ir.IntType(8).as_pointer()


def _at(b: ir.IRBuilder, ctl: ir.Value, offset: ir.Value | int, ty: ir.Type) -> ir.Value:
    if isinstance(offset, int):
        offset = ir.Constant(I64, offset)
    return b.bitcast(b.gep(ctl, [offset]), ty.as_pointer())


def _worker_line(b: ir.IRBuilder, ctl: ir.Value, k: ir.Value
                 ) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(generation word, sleepers word, caller's CPU word) of worker k (an i32 value)."""
    off = b.add(ir.Constant(I64, WORKERS_AT), b.mul(b.sext(k, I64), ir.Constant(I64, 64)))
    gen = _at(b, ctl, off, I32)
    return gen, b.gep(gen, [ir.Constant(I32, 1)]), b.gep(gen, [ir.Constant(I32, 2)])


def _emit_call(module: ir.Module) -> ir.Function:
    """`netc_pool_call(ctl, tid)`: call the job's function for thread id `tid`, passing as many
    i64 arguments as the job has (a switch on the count; each case a direct-arity call)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I32]), name="netc_pool_call")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    ctl, tid = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    target = b.load(_at(b, ctl, 0, I64), align=8)
    nt = b.load(_at(b, ctl, 8, I32), align=4)
    nargs = b.load(_at(b, ctl, 12, I32), align=4)
    done = fn.append_basic_block("done")
    sw = b.switch(nargs, done)
    for n in range(MAX_ARGS + 1):
        case = fn.append_basic_block(f"args{n}")
        sw.add_case(ir.Constant(I32, n), case)
        b.position_at_end(case)
        args = [b.load(_at(b, ctl, 16 + 8 * i, I64), align=8) for i in range(n)]
        fnty = ir.FunctionType(ir.VoidType(), [I32, I32] + [I64] * n)
        b.call(b.inttoptr(target, fnty.as_pointer()), [tid, nt, *args])
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn


def _emit_worker(module: ir.Module, call: ir.Function, pause: bool) -> None:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I32]), name="netc_pool_worker")
    fn.attributes.add("nounwind")
    ctl, k = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    work = fn.append_basic_block("work")
    stop = fn.append_basic_block("stop")
    b = ir.IRBuilder(entry)
    gen_p, sleepers_p, caller_cpu_p = _worker_line(b, ctl, k)
    b.branch(loop)
    b.position_at_end(loop)
    last = b.phi(I32, name="last")
    last.add_incoming(ir.Constant(I32, 0), entry)  # the runtime zeroes ctl before starting us
    # Yield while waiting only when the caller (at its last job) ran on this CPU.
    shared = same_cpu(b, current_cpu(b), b.load_atomic(caller_cpu_p, "monotonic", 4))
    now = call_wait(b, gen_p, last, sleepers_p, shared, IDLE_SPINS, pause)
    target = b.load(_at(b, ctl, 0, I64), align=8)
    b.cbranch(b.icmp_unsigned("==", target, ir.Constant(I64, 0)), stop, work)
    b.position_at_end(work)
    nt = b.load(_at(b, ctl, 8, I32), align=4)
    tid = b.add(k, ir.Constant(I32, 1))
    b.call(call, [ctl, tid])
    call_barrier(b, _at(b, ctl, BARRIER_AT, I32), nt, pause, tid=tid)
    last.add_incoming(now, b.block)
    b.branch(loop)
    b.position_at_end(stop)
    b.ret_void()


def _publish(b: ir.IRBuilder, ctl: ir.Value, n_workers: ir.Value) -> None:
    """Bump the generation of workers 0..n_workers-1 (seq_cst) and wake those asleep."""
    cpu = current_cpu(b)
    with for_range(b, ir.Constant(I64, 0), b.sext(n_workers, I64), name="w", unroll=False) as w:
        gen_p, sleepers_p, caller_cpu_p = _worker_line(b, ctl, b.trunc(w, I32))
        b.store_atomic(cpu, caller_cpu_p, "monotonic", 4)
        g = b.load_atomic(gen_p, "monotonic", 4)
        b.store_atomic(b.add(g, ir.Constant(I32, 1)), gen_p, "seq_cst", 4)
        call_wake(b, gen_p, sleepers_p)


def _emit_run(module: ir.Module, call: ir.Function, n_args: int, pause: bool) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [I8P, I64, I32] + [I64] * n_args)
    fn = ir.Function(module, fnty, name=f"{RUN_PREFIX}{n_args}")
    fn.attributes.add("nounwind")
    ctl, target, nt, *args = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store(target, _at(b, ctl, 0, I64), align=8)
    b.store(nt, _at(b, ctl, 8, I32), align=4)
    b.store(ir.Constant(I32, n_args), _at(b, ctl, 12, I32), align=4)
    for i, a in enumerate(args):
        b.store(a, _at(b, ctl, 16 + 8 * i, I64), align=8)
    _publish(b, ctl, b.sub(nt, ir.Constant(I32, 1)))
    b.call(call, [ctl, ir.Constant(I32, 0)])
    call_barrier(b, _at(b, ctl, BARRIER_AT, I32), nt, pause, tid=ir.Constant(I32, 0))
    b.ret_void()


def _emit_stop(module: ir.Module) -> None:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8P, I32]), name="netc_pool_stop")
    fn.attributes.add("nounwind")
    ctl, n_workers = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store(ir.Constant(I64, 0), _at(b, ctl, 0, I64), align=8)
    _publish(b, ctl, n_workers)
    b.ret_void()


def emit_pool(module: ir.Module, pause: bool = True) -> None:
    """Add the pool's entry points (see the module docstring) to `module`."""
    call = _emit_call(module)
    _emit_worker(module, call, pause)
    for n in range(MAX_ARGS + 1):
        _emit_run(module, call, n, pause)
    _emit_stop(module)
