"""netc.compiler.codegen: LLVM IR emitters for the native kernels of a training step.

target (SIMD level and caches) -> loops (builder helpers) -> microkernel / packing / gemm (BLIS
GEMM) -> im2col / conv (convolutions on the GEMM) and pool; barrier (native SPMD barrier).
Every emitter adds functions to a caller's `llvmlite.ir.Module`; nothing here runs code.
"""
