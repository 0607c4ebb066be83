"""Codegen stage, target selection: which SIMD level the generated kernels are written for.

Takes: the host CPU as LLVM sees it (`llvmlite.binding.get_host_cpu_name/features`), the sysfs cache
description, and an optional forced choice (`NETC_TARGET=avx512|avx2|portable` or a name argument).
Gives: a frozen `Target` with the vector width in f32 lanes, the number of vector registers, the
cache sizes (best effort, sane defaults), and the LLVM cpu name + feature string that the JIT's
target machine must use so the emitted vector code matches.

Invariants: a forced target never depends on the host (so its assembly can be produced anywhere,
e.g. AVX-512 code on an AVX2 machine); `Target.runnable` says whether this host can execute it.
Only llvmlite.binding is used (no JIT state), so the compiler can import this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import llvmlite.binding as llvm

TARGET_NAMES = ("avx512", "avx2", "portable")


@dataclass(frozen=True)
class Target:
    """A SIMD level plus the machine facts the GEMM blocking is computed from."""

    name: str  # "avx512" | "avx2" | "portable"
    lanes: int  # f32 lanes per vector register
    n_vregs: int  # architectural vector registers
    has_fma: bool  # fused multiply-add in hardware (else llvm.fmuladd lowers to mul+add)
    l1d: int  # bytes per core
    l2: int  # bytes per core
    l3: int  # bytes, shared
    cpu: str  # LLVM cpu name for the target machine
    features: str  # LLVM feature string for the target machine
    runnable: bool  # can this host execute code built for this target?
    x86: bool = True  # x86 instruction set (spin loops use `pause`)

    @property
    def vector_bits(self) -> int:
        return self.lanes * 32


def _parse_size(text: str) -> int | None:
    text = text.strip().upper()
    mult = 1
    if text.endswith("K"):
        mult, text = 1024, text[:-1]
    elif text.endswith("M"):
        mult, text = 1024 * 1024, text[:-1]
    try:
        return int(text) * mult
    except ValueError:
        return None


@lru_cache(maxsize=1)
def host_caches() -> tuple[int, int, int]:
    """(L1d, L2, L3) in bytes from sysfs; defaults 32 KiB / 512 KiB / 8 MiB when unreadable."""
    l1, l2, l3 = 32 * 1024, 512 * 1024, 8 * 1024 * 1024
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for idx in sorted(root.glob("index*")):
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = _parse_size((idx / "size").read_text())
            if size is None:
                continue
            if level == "1" and kind in ("Data", "Unified"):
                l1 = size
            elif level == "2":
                l2 = size
            elif level == "3":
                l3 = size
    except OSError:
        pass
    return l1, l2, l3


@lru_cache(maxsize=1)
def _host() -> tuple[str, str, frozenset[str]]:
    name = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    enabled = frozenset(k for k, v in feats.items() if v)
    return name, feats.flatten(), enabled


def host_level() -> str:
    """The widest level this host can run: avx512 needs avx512f; avx2 needs avx2 and fma."""
    _, _, enabled = _host()
    if "avx512f" in enabled:
        return "avx512"
    if "avx2" in enabled and "fma" in enabled:
        return "avx2"
    return "portable"


_RANK = {"portable": 0, "avx2": 1, "avx512": 2}


def get_target(name: str | None = None) -> Target:
    """The target for `name`, else `$NETC_TARGET`, else the host's best level.

    When the chosen level is what the host offers, the host's own cpu name and features are used
    (best scheduling model); a forced level uses a representative CPU of that level instead.
    """
    name = name or os.environ.get("NETC_TARGET") or None
    level = host_level()
    if name is None:
        name = level
    if name not in TARGET_NAMES:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGET_NAMES)}")
    l1, l2, l3 = host_caches()
    host_cpu, host_feats, _ = _host()
    runnable = _RANK[name] <= _RANK[level]
    if name == level and name != "portable":
        cpu, features = host_cpu, host_feats
    elif name == "avx512":
        cpu, features = "skylake-avx512", ""
    elif name == "avx2":
        cpu, features = "haswell", ""
    elif _is_x86():
        # Baseline x86-64 (SSE2): every 64-bit x86 can run it.
        cpu, features = "x86-64", ""
    else:
        # Another architecture: only the portable level exists there; keep the host's CPU.
        cpu, features = host_cpu, host_feats
    if name == "avx512":
        return Target(name, 16, 32, True, l1, l2, l3, cpu, features, runnable)
    if name == "avx2":
        return Target(name, 8, 16, True, l1, l2, l3, cpu, features, runnable)
    return Target(name, 4, 16, False, l1, l2, l3, cpu, features, runnable, _is_x86())


def _is_x86() -> bool:
    triple = llvm.get_process_triple()
    return triple.startswith(("x86_64", "i386", "i486", "i586", "i686"))
