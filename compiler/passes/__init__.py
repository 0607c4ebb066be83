"""Optimizer passes (one per file) and the analyses after them; see `compiler/pipeline.py`.

Graph passes rewrite in place and return the graph: `simplify`, `eliminate_common`,
`eliminate_dead`. Analyses return data: `fuse_kernels` -> `KernelGraph`, `plan_memory` ->
`ArenaPlan` (proven safe by `check_plan`, executable with NumPy by `execute_plan`).
"""

from .check_plan import check_plan
from .eliminate_common import eliminate_common
from .eliminate_dead import eliminate_dead
from .fuse_kernels import fuse_kernels
from .kernel_graph import Kernel, KernelGraph
from .plan_memory import ArenaPlan, Buffer, plan_memory
from .simplify import simplify

__all__ = ["ArenaPlan", "Buffer", "Kernel", "KernelGraph", "check_plan", "eliminate_common",
           "eliminate_dead", "fuse_kernels", "plan_memory", "simplify"]
